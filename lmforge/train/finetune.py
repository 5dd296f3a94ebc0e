"""`lmforge finetune MODEL_DIR --task T --data ... --out ...`: continue training a model
directory on new data. The task (a key of `lmforge.tasks.TASKS`) says what to train for: clm
(more text), mlm (more masked-LM pretraining), rtd (more replaced-token detection), classify (a labelled table: adds a
classification head, from an encoder or a decoder), seq2seq (a pairs table), sft (chat
conversations). Every task runs through the same `train()` with `init_from` set, so resume,
DDP, metrics and checkpoints work the same way as pretraining; the task's own options
(columns, splits, ...) travel in `TrainConfig.task_options`. `--lora-rank R` trains LoRA
adapters instead of every weight (see `lmforge.adapt`); `--merge-to DIR` then also
writes the merged model."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..options import option
from ..tasks import TASKS
from .config import FINETUNE_MAX_STEPS, TrainConfig
from .observers import RunObserver
from .run import train

# fine-tuning needs gentler rates than pretraining from scratch; Muon (the default optimizer, here at a quarter of
# its pretraining rate) beat AdamW at every rate tried for fine-tuning pretrained encoders into classifiers
# (docs/finetuning.md, "Defaults"). LoRA adapters always take AdamW steps (see `muon.make_muon`).
FINETUNE_DEFAULTS: dict[str, Any] = {"muon_lr": 0.005, "lr": 3e-4, "warmup_steps": 50,
                                     "eval_interval": 100, "weight_decay": 0.0,
                                     "out": "runs/finetuned"}


@dataclass
class FinetuneConfig:
    model_dir: str = option(None, "model directory to start from", positional=True)
    task: str = option("clm", "what to train for: clm (continue language modelling on prepared text), mlm (more "
                              "masked-LM pretraining), classify (a labelled CSV / TSV / JSONL table), seq2seq (a pairs "
                              "table), sft (instruction tuning on a chat .jsonl file: loss on the assistant's turns)")
    merge_to: str | None = option(None, "after LoRA training, also write base + merged adapters to this model "
                                        "directory (for export or quantization)")


def finetune(args: FinetuneConfig, cfg: TrainConfig | None = None, options: Any = None, *,
             lora=None, observers: list[RunObserver] = ()) -> dict[str, Any]:
    """Train `cfg` (data, out, steps, ...) starting from `args.model_dir` with `args.task`;
    `options` are the task's (e.g. `ClassifyConfig(text_column="review", label_column="stars")`);
    `lora` (a `LoRAConfig` with lora_rank > 0) trains adapters instead of all weights; `observers`
    see the run (`lmforge.train.observers`)."""
    if args.task not in TASKS:
        raise ConfigError(f"unknown task {args.task!r}; use one of {', '.join(TASKS)}")
    use_lora = lora is not None and lora.enabled
    if args.merge_to and not use_lora:
        raise ConfigError("--merge-to merges LoRA adapters; add --lora-rank R (a full fine-tune is already merged)")
    base = cfg or TrainConfig(**{k: v for k, v in FINETUNE_DEFAULTS.items()})
    if args.merge_to:
        from ..safety import check_output
        check_output(args.merge_to, inputs=[("the run's --out", base.out), ("the base model", args.model_dir),
                                            ("--data", base.data)], out_name="--merge-to")
    task_options = options if options is not None else base.task_options
    steps = FINETUNE_MAX_STEPS if base.max_steps is None and base.epochs is None else base.max_steps
    summary = train(dataclasses.replace(base, init_from=args.model_dir, task=args.task, task_options=task_options,
                                        max_steps=steps), lora=lora, observers=observers)
    if args.merge_to and not summary.get("stopped"):
        from ..adapt.runs import merge_adapter
        summary["merged"] = str(merge_adapter(summary["out"], args.merge_to))
    return summary
