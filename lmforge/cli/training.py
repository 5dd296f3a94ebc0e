"""The verbs that make a model: quickstart, prepare, train, finetune and distill, and the
summary line a training verb ends with."""

from __future__ import annotations

import dataclasses
import os
import sys

from ..adapt.lora import LoRAConfig
from ..data.hygiene import summary as hygiene_summary
from ..data.shards import PrepareConfig
from ..options import from_args
from ..quickstart import QuickstartConfig
from ..tasks import TASK_OPTIONS      # task -> its options dataclass; the flags apply to that task
from ..train.distill import DistillConfig
from ..train.finetune import FINETUNE_DEFAULTS, FinetuneConfig
from ..train.config import TrainConfig
from .core import options_of, verb

SUMMARY_KEYS = ("step", "best_step", "train_loss", "val_loss", "val_ppl", "val_accuracy", "val_macro_f1", "val_bleu",
                "val_chrf", "val_rougeL", "test_accuracy", "test_macro_f1", "test_bleu", "test_chrf", "test_rougeL",
                "baseline_val_macro_f1", "baseline_test_macro_f1")


def print_summary(summary: dict) -> None:
    """The last line of a training verb: final metrics and where the model is."""
    if os.environ.get("RANK", "0") != "0":          # under torchrun: rank 0 speaks for the run
        return
    shown = {k: summary[k] for k in SUMMARY_KEYS if k in summary}
    print("finished: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items())
          + f"; model directory {summary['out']}" + (f"; merged model {summary['merged']}" if "merged" in summary
                                                      else ""))
    if summary.get("baseline_verdict"):
        print(summary["baseline_verdict"])
    if summary.get("warning"):
        print(f"warning: {summary['warning']}", file=sys.stderr)


@verb("quickstart", "prepare, train and sample a small GPT on the Python docs bundled with Python (no arguments needed)")
@options_of(QuickstartConfig)
def _quickstart(ns):
    from ..quickstart import quickstart
    quickstart(from_args(QuickstartConfig, ns))
    return 0


@verb("prepare", "tokenize text files, directories and tables (.jsonl, .csv, .parquet, ...) into train and val shards")
@options_of(PrepareConfig)
def _prepare(ns):
    from ..data.shards import prepare
    meta = prepare(from_args(PrepareConfig, ns))
    print(f"wrote {ns.out}: {meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens "
          f"({meta['dtype']}), {meta['bytes']:,} bytes, {meta['bytes_per_token']:.2f} bytes/token, "
          f"vocabulary {meta['vocab_size']} ({meta['tokenizer']})")
    for line in hygiene_summary(meta):
        print(line)
    return 0


def _with_task_options(cfg: TrainConfig, ns) -> TrainConfig:
    built = {task: from_args(cls, ns) for task, cls in TASK_OPTIONS.items()}    # every task's flags checked
    return dataclasses.replace(cfg, task_options=built[cfg.task]) if cfg.task in built else cfg


@verb("train", "train a model: on a prepared data directory (clm, mlm) or a table (classify, seq2seq); also "
               "under torchrun for DDP")
@options_of(TrainConfig, *TASK_OPTIONS.values())
def _train(ns):
    from ..train import train
    print_summary(train(_with_task_options(from_args(TrainConfig, ns), ns)))
    return 0


@verb("finetune", "fine-tune a model directory on new data, in full or with LoRA adapters (the task picks the "
                  "objective)")
@options_of(FinetuneConfig, LoRAConfig, TrainConfig, *TASK_OPTIONS.values(), skip=("init_from", "preset"),
            defaults=FINETUNE_DEFAULTS)
def _finetune(ns):
    from ..train.finetune import finetune
    args = from_args(FinetuneConfig, ns)
    cfg = _with_task_options(dataclasses.replace(from_args(TrainConfig, ns), task=args.task), ns)
    print_summary(finetune(args, cfg, lora=from_args(LoRAConfig, ns)))
    return 0


@verb("distill", "train a smaller student model on a teacher's soft targets (knowledge distillation)")
@options_of(DistillConfig, TrainConfig, skip=("init_from", "task", "preset"))
def _distill(ns):
    from ..train.distill import distill
    summary = distill(from_args(DistillConfig, ns), from_args(TrainConfig, ns))
    print_summary(summary)
    return 0
