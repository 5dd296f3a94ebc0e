"""What the one trainer needs from a task (`Task`), and the next-token loss the language-model
tasks share.

A task is what a model is trained for: Causal LM, masked LM, classification, seq2seq and
SFT differ only here: in the batches they build and the loss they compute.

Sampling is split from collation so that data order is a pure function of one seeded
`torch.Generator`: every rank draws the same indices for a step and collates only its share,
which makes `--resume` exact and a 2-process DDP step equal a 1-process step with 2
accumulation micro-batches.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..data.batching import EpochOrder


class Task:
    name = "base"
    reports_perplexity = False   # val loss is a per-token cross-entropy: also log exp(loss)
    selection = ("val_loss", "min")  # the validation metric --keep-best / --patience judge by, and its direction
    tokenizer = None             # set by tasks that read a table and train their own tokenizer from it
    in_passes = False            # trains on a list of whole examples: --epochs takes them in shuffled passes

    # ---- what the data decides about the model (called by `train()` before the model is built) ----
    def model_changes(self) -> dict[str, Any]:
        """ModelConfig fields the data fixes (class labels, vocabulary sizes of tokenizers trained here)."""
        return {}

    def frozen(self, config) -> tuple[str, ...]:
        """Parameter-name prefixes this task does not train (heads it never uses); frozen
        so that the optimizer and DDP see only parameters that get gradients."""
        return ()

    def attach(self, model: torch.nn.Module) -> None:
        """Modules the task trains beside the model (ELECTRA's generator), put on it before training."""

    def saved_names(self, names: set[str]) -> set[str]:
        """Which of the model's state-dict names model.safetensors keeps (the rest: `save_extras`)."""
        return names

    def save_extras(self, model: torch.nn.Module, out_dir: Path) -> None:
        """At each checkpoint, after model.safetensors: what `attach` added, in a file of its own."""

    def sample(self, split: str, n: int, generator: torch.Generator) -> torch.Tensor:
        """n example indices (int64) for `split`, drawn with `generator`."""
        raise NotImplementedError

    def train_examples(self) -> int | None:
        """What one pass over the training split holds (examples; the shard tasks: windows of the
        context length), by which --epochs sizes a run; None: the task cannot count them."""
        return None

    def epoch_order(self, seed: int, per_step: int) -> EpochOrder | None:
        """Under --epochs, the order of the training examples: shuffled passes (`EpochOrder`) for
        the tasks that train on whole examples (`in_passes`); None: the task keeps drawing with
        `sample` (the shard tasks' windows at random offsets)."""
        return EpochOrder(self.train_examples(), seed, per_step) if self.in_passes else None

    def collate(self, split: str, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        """The batch (CPU tensors) for these indices."""
        raise NotImplementedError

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Mean loss of the batch (a scalar tensor)."""
        raise NotImplementedError

    def eval_loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The validation loss (`val_loss`); the training loss unless a task says otherwise."""
        return self.loss(model, batch)

    def logits_and_targets(self, model: torch.nn.Module,
                           batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (..., V), targets (...) with -100 where nothing is predicted): what distillation
        needs from a task. Tasks whose loss is a cross-entropy over logits implement it."""
        raise NotImplementedError(f"task {self.name!r} does not expose logits and targets")

    def tokens_in(self, batch: dict[str, torch.Tensor]) -> int:
        """Tokens processed (for tokens/s)."""
        x = next(iter(batch.values()))
        return x.numel()

    def evaluate(self, model: torch.nn.Module, device: torch.device, autocast: Any) -> dict[str, float]:
        """Extra validation metrics beyond the loss (accuracy, BLEU, ...)."""
        return {}

    def baseline(self) -> tuple[dict[str, float], str] | None:
        """Before training: what a classical model gets on the same split (its figures for the log
        and the summary, and a line to print); None when the task has no baseline."""
        return None

    def constant_loss(self) -> float | None:
        """The training loss of a model that ignores its input and predicts the training frequencies
        (of labels, of tokens): where a collapsed run sits (None: not known for this task)."""
        return None

    # ---- around the run ------------------------------------------------------------------------
    def sampler(self) -> Callable[[torch.nn.Module], str] | None:
        """What the trainer prints as a sample at each evaluation (None: text generation for decoders)."""
        return None

    def extra_files(self, out_dir: Path) -> None:
        """Write other files the model directory needs (e.g. a target-side tokenizer)."""

    def report(self, model: torch.nn.Module, out_dir: Path, device: torch.device, autocast: Any) -> dict[str, Any]:
        """After training: the final evaluation on held-out data, written into the model directory."""
        return {}


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model itself inside the DDP and torch.compile wrappers the trainer may put around it
    (a loss reads its config and modules there)."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Mean next-token cross-entropy; logits (B, T, V), targets (B, T)."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=ignore_index)


class NextTokenTask(Task):
    """A task whose batches are {"x": inputs (B, T), "y": next-token targets (B, T), -100 = no loss}:
    causal LM and SFT."""
    reports_perplexity = True

    def logits_and_targets(self, model, batch):
        return model(batch["x"]), batch["y"]

    def loss(self, model, batch):
        return lm_loss(*self.logits_and_targets(model, batch))


def token_entropy(tokens, limit: int = 2_000_000) -> float:
    """Entropy (nats) of the token frequencies of (the first `limit` of) a token array: the loss of
    predicting every token from frequency alone."""
    import numpy as np
    return float(frequency_entropy(np.bincount(np.asarray(tokens[:limit], dtype=np.int64))))


def frequency_entropy(counts) -> float:
    """Entropy (nats) of the distribution the counts give: the loss of always predicting it."""
    p = torch.as_tensor(counts, dtype=torch.float64)
    p = p[p > 0] / p.sum()
    return float(-(p * p.log()).sum())
