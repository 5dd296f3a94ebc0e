"""`TrainConfig`: every setting of a training run, in one dataclass that drives the Python API,
the `lmforge train` flags and the run's `train_config.yaml` (see `lmforge.options`). Settings
left None take the task's default (`lmforge.tasks.DEFAULTS`, `TASK_DEFAULTS`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import ModelOverridesConfig
from ..errors import ConfigError
from ..options import SEED, above, at_least, between, device_name, nested, option, validate
from ..tasks import DEFAULTS, TASK_DEFAULTS, task_defaults
from .distributed import STRATEGIES
from .tracking import check_report_to


MAX_STEPS, FINETUNE_MAX_STEPS = 1000, 500     # a run's length when neither --max-steps nor --epochs is given


def defaults_text(name: str) -> str:
    """The help's account of a task-dependent default: "the task's: 0.001, seq2seq 0.002"."""
    own = ", ".join(f"{task} {d[name]:g}" for task, d in TASK_DEFAULTS.items() if name in d)
    return f"the task's: {DEFAULTS[name]:g}" + (f", {own}" if own else "")


@dataclass
class TrainConfig:
    data: str = option("data/corpus", "prepared data directory (from `lmforge prepare`) for clm / mlm; a table (CSV / "
                                      "TSV / JSONL / Parquet / Arrow / save_to_disk directory) for classify / seq2seq")
    out: str = option("runs/model", "model directory to write: config, weights, tokenizer, metrics", short="-o")
    preset: str = option("gpt-mini", "model preset (`lmforge presets` lists them)", fixed=True)
    task: str = option("clm", "what to train for: clm (next-token prediction), mlm (masked LM, encoders), rtd "
                              "(replaced-token detection, ELECTRA: encoders), classify "
                              "(labelled table), seq2seq (pairs table, encoder-decoders), sft (chat JSONL)",
                       aliases=("--objective",), fixed=True)
    model: ModelOverridesConfig = nested(ModelOverridesConfig)
    init_from: str | None = option(None, "start from the weights of this model directory (fine-tuning)")
    batch_size: int | None = option(None, "sequences per micro-batch (per process)", fixed=True, check=at_least(1),
                                    unset=defaults_text("batch_size"))
    grad_accum: int = option(1, "micro-batches accumulated per optimizer step (a resume on another number of "
                                "processes changes it to keep processes x grad-accum x batch-size; the checkpoint "
                                "checks that product)", check=at_least(1))
    max_steps: int | None = option(None, "optimizer steps in the whole run (the schedule's length; given with "
                                         "--epochs, it wins, as in transformers)", fixed=True, check=at_least(1),
                                   unset=f"{MAX_STEPS} ({FINETUNE_MAX_STEPS} for `finetune`), or what --epochs take")
    epochs: float | None = option(None, "size the run in passes over the training set: the steps they take at "
                                        "processes x grad-accum x batch-size examples per step. classify, seq2seq and "
                                        "sft then see every example once per epoch, in a new random order each time; "
                                        "clm, mlm and rtd count windows of the context length, still drawn at random "
                                        "offsets", fixed=True, check=above(0), unset="off: --max-steps sizes the run")
    lr: float | None = option(None, "peak learning rate (of every weight under adamw; of the embeddings, head, norms "
                                    "and biases under muon)", fixed=True, check=above(0),
                              unset=defaults_text("lr"))
    min_lr: float | None = option(None, "final learning rate of the cosine decay (default lr/10; at most --lr)",
                                  fixed=True, check=at_least(0))
    warmup_steps: int | None = option(None, "linear warmup steps", fixed=True, check=at_least(0),
                                      unset=defaults_text("warmup_steps"))
    weight_decay: float = option(0.1, "AdamW weight decay (matrices only)", fixed=True, check=at_least(0))
    optimizer: str | None = option(None, "muon (Muon for the blocks' weight matrices, AdamW for the rest; measured "
                                         "best per CPU-minute for every task: docs/finetuning.md, 'Defaults') or adamw",
                                   choices=("adamw", "muon"), fixed=True,
                                   unset="muon; adamw with --strategy fsdp, which Muon does not support")
    muon_lr: float | None = option(None, "peak learning rate of the Muon matrices (with --optimizer muon)",
                                   fixed=True, check=above(0), unset=defaults_text("muon_lr"))
    beta1: float = option(0.9, "AdamW beta1", fixed=True, check=between(0, 1, high_open=True))
    beta2: float = option(0.95, "AdamW beta2", fixed=True, check=between(0, 1, high_open=True))
    grad_clip: float = option(1.0, "clip the gradient norm to this (0 disables)", fixed=True, check=at_least(0))
    eval_interval: int = option(200, "evaluate every this many steps", check=at_least(1))
    eval_iters: int = option(20, "validation batches per evaluation", check=at_least(1))
    log_interval: int = option(10, "log the training loss every this many steps", check=at_least(1))
    save_interval: int | None = option(None, "checkpoint every this many steps (default: eval_interval)",
                                       check=at_least(1))
    sample_interval: int | None = option(None, "print a sample every this many steps (default: eval_interval; "
                                               "0 disables)", check=at_least(0))
    inspect_interval: int = option(0, "every this many steps, log each layer's highest previous-token and induction "
                                      "head score and logit-lens loss to metrics.jsonl (kind \"inspect\") and draw "
                                      "them beside the loss curve (0: never, the default; costs nothing then)",
                                   check=at_least(0))
    sample_tokens: int = option(64, "tokens per training sample", check=at_least(1))
    sample_prompt: str = option("", "prompt for training samples")
    keep_best: bool | None = option(None, "when the run ends, keep the weights of the evaluation with the best "
                                          "validation metric (classify: val_macro_f1; other tasks: val_loss), not "
                                          "the last", unset="on for classify and with --patience, else off")
    patience: int | None = option(None, "early stopping: end the run when the validation metric has not improved "
                                        "for this many evaluations (every --eval-interval steps)", check=at_least(1))
    ema_decay: float | None = option(None, "keep an exponential moving average of the trainable weights with this decay "
                                           "per step (0.998: about the last 500 steps), and evaluate, keep and save it "
                                           "instead of the raw weights, which the optimizer steps",
                                     fixed=True, check=between(0, 1, high_open=True), unset="off")
    seed: int = option(1337, "random seed (data order, init, dropout)", fixed=True, check=SEED)
    device: str = option("auto", "auto, cpu, cuda, cuda:N or mps", check=device_name)
    dtype: str = option("auto", "auto (bf16 autocast on GPU, fp32 on CPU), float32 or bfloat16",
                        choices=("auto", "float32", "bfloat16"))
    compile: bool = option(False, "torch.compile the model")
    strategy: str = option("auto", "with torchrun: ddp (every process holds the whole model), fsdp (parameters, "
                                   "gradients and optimizer state sharded over the processes; sharded checkpoints); "
                                   "auto: ddp under torchrun, nothing for one process", choices=STRATEGIES, saved=False)
    activation_checkpointing: bool = option(False, "recompute each block's activations in the backward pass "
                                                   "instead of keeping them: less memory, ~1/3 more compute")
    resume: bool = option(False, "continue the run in --out exactly where it stopped (its train_config.yaml gives "
                                 "the settings; flags typed again may not change how it was trained)", saved=False)
    force: bool = option(False, "with --resume: accept flags that change what the checkpoint was trained with "
                                "(batch size, schedule, model shape, task options)", saved=False)
    overwrite: bool = option(False, "start a new run in an --out that holds another model or other files, "
                                    "replacing them (never one of the run's inputs)", saved=False)
    stop_after: int | None = option(None, "stop (with a checkpoint) after this many steps of this run; "
                                          "continue later with --resume", saved=False, check=at_least(1))
    progress: bool = option(True, "show a progress bar")
    report_to: list[str] = option([], "experiment trackers that get the logged rows and the run's settings too: "
                                      "tensorboard, trackio, mlflow, wandb (several at once), all (those installed) "
                                      "or none (the default); each needs its library: pip install "
                                      "\"lmforge[tracking]\"", check=check_report_to)
    task_options: Any = option(None, "the task's own options (MLMConfig, RTDConfig, ClassifyConfig, Seq2SeqConfig); "
                                     "None: their defaults. The CLI fills it from the task's flags", cli=False)

    def __post_init__(self) -> None:
        if isinstance(self.report_to, str):                     # report_to="wandb", as Hugging Face takes it
            self.report_to = [self.report_to]
        if self.optimizer is None and self.strategy == "fsdp":
            self.optimizer = "adamw"
        for name, value in task_defaults(self.task).items():      # None: the task's default (one source)
            if getattr(self, name) is None:
                setattr(self, name, value)
        validate(self)
        if self.min_lr is not None and self.min_lr > self.lr:
            raise ConfigError(f"min_lr={self.min_lr} is above lr={self.lr}: the cosine decay would raise the "
                              f"learning rate; give --min-lr at most --lr")
        if self.resume and self.overwrite:
            raise ConfigError("--resume continues the run in --out and --overwrite replaces it; give one of them")

    def keeps_best(self) -> bool:
        """--keep-best, or its default: on for classify (a fine-tuned classifier overfits small tables)
        and with --patience. Resolved here, not in __post_init__, since `finetune` sets the task later."""
        return self.keep_best if self.keep_best is not None else self.task == "classify" or self.patience is not None

    def options_for(self, cls: type) -> Any:
        """The task's options: `task_options` when set (checked to be a `cls`), else `cls()`."""
        if self.task_options is None:
            return cls()
        if not isinstance(self.task_options, cls):
            raise ConfigError(f"task {self.task} takes {cls.__name__} as task_options, not "
                              f"{type(self.task_options).__name__}")
        return self.task_options
