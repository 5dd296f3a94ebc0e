"""Training-time inspection (`train --inspect-interval N`): every N steps, a `RunObserver` looks
inside the model with `lmforge.inspect` and returns the numbers the trainer logs as the step's
{"kind": "inspect"} row of metrics.jsonl, drawn beside the loss curve in loss.png:

- `previous_token_L{i}`, `induction_L{i}`: the highest score of a head of layer i
  (`inspect.head_scores` on its repeated random sequence, of tokens drawn from the lens batch's
  text: the model's self attention, an encoder-decoder's decoder). One number per layer, not per head, keeps the row small and says
  when a layer grows such a head; `lmforge inspect heads` on the checkpoint names the head.
- `lens_loss_{label}`: the cross-entropy of the logit lens at each layer (`inspect.lens_loss`;
  labels `0_pre` .. `final_post`, the last being the model's own loss) on a fixed batch of
  validation sequences, for the tasks whose batches are next-token (clm, sft) or masked-token
  (mlm) targets; other tasks log the head scores only.

Nothing is hooked between inspections: the `inspect` contexts set the model's hooks only while
they run.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
import torch.nn as nn

from ..inspect import head_scores, lens_loss, lens_points
from ..tasks.base import unwrap
from .observers import RunObserver

LENS_SEQUENCES = 8      # validation sequences the lens loss is measured on (the same ones every time)


def lens_batch(task, seed: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(inputs, targets) of the fixed validation batch the lens loss is measured on, or None for a
    task whose batches hold no token targets. Drawn with its own generator: the run's data order
    is unchanged."""
    try:
        indices = task.sample("val", LENS_SEQUENCES, torch.Generator().manual_seed(seed + 2))
        batch = task.collate("val", indices)
    except (KeyError, NotImplementedError, ValueError):
        return None
    targets = batch.get("y", batch.get("labels"))
    if "x" not in batch or targets is None or targets.shape != batch["x"].shape:
        return None
    return batch["x"], targets


def scored_tokens(tokenizer, batch: tuple[torch.Tensor, torch.Tensor] | None) -> str | None:
    """The text whose tokens the head scores' random sequence is drawn from: the lens batch's (tokens
    the model is trained on: one it never saw has an untrained embedding), or None (the vocabulary)."""
    if batch is None:
        return None
    text = tokenizer.decode(batch[0].flatten().tolist())
    return text if len(set(tokenizer.encode(text))) >= 2 else None


class TrainingInspection(RunObserver):
    """Head scores and the lens loss per layer, for `Trainer.inspect`."""

    def __init__(self, tokenizer, target_tokenizer=None, batch: tuple[torch.Tensor, torch.Tensor] | None = None):
        self.tokenizer, self.target_tokenizer, self.batch = tokenizer, target_tokenizer or tokenizer, batch
        self.alphabet = scored_tokens(tokenizer, batch)

    def on_inspect(self, step: int, model: nn.Module) -> dict[str, float]:
        return {**self.head_values(model), **self.lens_values(model)}

    def head_values(self, model: nn.Module) -> dict[str, float]:
        lm = SimpleNamespace(module=model, config=model.config, tokenizer=self.tokenizer,
                             target_tokenizer=self.target_tokenizer)
        scores = head_scores(lm, alphabet=self.alphabet)
        values: dict[str, Any] = {}
        for name, table in (("previous_token", scores.previous_token), ("induction", scores.induction)):
            values.update({f"{name}_L{i}": round(float(row.max()), 6) for i, row in enumerate(table)})
        return values

    def lens_values(self, model: nn.Module) -> dict[str, float]:
        if self.batch is None or model.config.family == "seq2seq" or (
                model.config.family == "encoder" and model.mlm_head is None):
            return {}
        device = next(model.parameters()).device
        ids, targets = (t.to(device) for t in self.batch)
        losses = lens_loss(model, ids, targets)
        return {f"lens_loss_{label}": round(float(v), 6) for label, v in zip(lens_points(model)[1], losses)
                if torch.isfinite(v)}                       # NaN: no target in the batch (JSON has no NaN)


@torch.no_grad()
def inspect_at(trainer, step: int) -> bool:
    """Every `inspect_interval` steps: the observers look inside the model, whole and in eval mode
    (`on_inspect`), and what they measure is logged as an {"kind": "inspect"} row. Returns whether
    it ran (with --inspect-interval 0, the default, never: no hook is ever set)."""
    every = trainer.cfg.inspect_interval
    if not every or step % every:
        return False
    model = unwrap(trainer.train_model)
    trainer.average.show()                       # --ema-decay: the model as it is evaluated and saved
    was_training = model.training
    model.eval()
    with trainer.full_params():
        if trainer.dist.is_main:
            values = trainer.observers.on_inspect(step, model)
            if values:
                trainer.observers.on_log({"kind": "inspect", "step": step, **values})
    model.train(was_training)
    return True
