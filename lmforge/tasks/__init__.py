"""What a model is trained for: one file per task, each with its batches, loss, metrics and final
report, and a `build(train config, model config, tokenizer)` that the one trainer calls.

    clm       next-token prediction on prepared shards (decoders)
    mlm       masked-LM on prepared shards (encoders)
    rtd       replaced-token detection (ELECTRA) on prepared shards (encoders)
    classify  a labelled CSV / TSV / JSONL table (a classification head on an encoder or decoder)
    seq2seq   a pairs table (encoder-decoders: translation, summarisation)
    sft       chat conversations (loss on the assistant's tokens)

`distill` is not a task of its own: it wraps one (`DistillTask`) with a teacher's soft targets.
"""

from __future__ import annotations

from typing import Any, Callable

from . import classify, clm, mlm, rtd, seq2seq, sft
from .base import NextTokenTask, Task, lm_loss
from .classify import ClassifyConfig
from .mlm import MLMConfig
from .rtd import RTDConfig
from .seq2seq import Seq2SeqConfig
from .sft import SFTConfig

# task name -> build(train config, model config, tokenizer); table tasks get tokenizer=None when training from
# scratch and train their own
TASKS: dict[str, Callable] = {"clm": clm.build, "mlm": mlm.build, "rtd": rtd.build, "classify": classify.build,
                              "seq2seq": seq2seq.build, "sft": sft.build}
SHARD_TASKS = ("clm", "mlm", "rtd")   # --data is a prepared directory; the others read a file
TASK_OPTIONS: dict[str, type] = {"mlm": MLMConfig, "rtd": RTDConfig, "classify": ClassifyConfig,
                                 "seq2seq": Seq2SeqConfig, "sft": SFTConfig}

# Training defaults (TrainConfig fields left None), measured at equal 2-core CPU time on the shared corpora
# (docs/finetuning.md, "Defaults"): Muon for the blocks' matrices wins for every task; seq2seq learns fastest
# with a larger batch, a higher AdamW rate for its embeddings and a gentler Muon rate.
DEFAULTS: dict[str, Any] = {"optimizer": "muon", "lr": 1e-3, "muon_lr": 0.02, "batch_size": 16, "warmup_steps": 100}
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "seq2seq": {"lr": 2e-3, "muon_lr": 0.01, "batch_size": 32, "warmup_steps": 50},
}


def task_defaults(task: str) -> dict[str, Any]:
    """The training defaults of `task`: DEFAULTS with the task's own changes."""
    return {**DEFAULTS, **TASK_DEFAULTS.get(task, {})}


__all__ = ["TASKS", "SHARD_TASKS", "TASK_OPTIONS", "DEFAULTS", "TASK_DEFAULTS", "task_defaults", "Task",
           "NextTokenTask", "lm_loss", "ClassifyConfig", "MLMConfig", "RTDConfig", "Seq2SeqConfig", "SFTConfig"]
