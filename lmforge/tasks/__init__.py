"""What a model is trained for: one file per task, each with its batches, loss, metrics and final
report, and a `build(train config, model config, tokenizer)` that the one trainer calls.

    clm       next-token prediction on prepared shards (decoders)
    mlm       masked-LM on prepared shards (encoders)
    classify  a labelled CSV / TSV / JSONL table (a classification head on an encoder or decoder)
    seq2seq   a pairs table (encoder-decoders: translation, summarisation)
    sft       chat conversations (loss on the assistant's tokens)

`distill` is not a task of its own: it wraps one (`DistillTask`) with a teacher's soft targets.
"""

from __future__ import annotations

from typing import Callable

from . import classify, clm, mlm, seq2seq, sft
from .base import NextTokenTask, Task, lm_loss
from .classify import ClassifyOptions
from .mlm import MLMOptions
from .seq2seq import Seq2SeqOptions

# task name -> build(train config, model config, tokenizer); table tasks get tokenizer=None when training from
# scratch and train their own
TASKS: dict[str, Callable] = {"clm": clm.build, "mlm": mlm.build, "classify": classify.build,
                              "seq2seq": seq2seq.build, "sft": sft.build}
SHARD_TASKS = ("clm", "mlm")          # --data is a prepared directory; the others read a file
TASK_OPTIONS: dict[str, type] = {"mlm": MLMOptions, "classify": ClassifyOptions, "seq2seq": Seq2SeqOptions}

__all__ = ["TASKS", "SHARD_TASKS", "TASK_OPTIONS", "Task", "NextTokenTask", "lm_loss", "ClassifyOptions",
           "MLMOptions", "Seq2SeqOptions"]
