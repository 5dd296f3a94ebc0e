"""Causal-LM pretraining batches: random windows of `context_length + 1` tokens from the
memmapped shards (nanoGPT style); inputs are the first T tokens, targets the last T."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..train.objective import Objective
from .shards import load_splits


def lm_loss(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """Mean next-token cross-entropy; logits (B, T, V), targets (B, T)."""
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=ignore_index)


class CausalLMObjective(Objective):
    name = "clm"
    reports_perplexity = True

    def __init__(self, data_dir: str | Path, context_length: int):
        self.T = context_length
        self.data = load_splits(data_dir, self.T + 1, f"context_length + 1 = {self.T + 1}")

    def sample(self, split: str, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(len(self.data[split]) - self.T, (n,), generator=generator)

    def collate(self, split: str, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        data = self.data[split]
        rows = np.stack([data[i: i + self.T + 1] for i in indices.tolist()]).astype(np.int64)
        rows = torch.from_numpy(rows)
        return {"x": rows[:, :-1], "y": rows[:, 1:]}

    def logits_and_targets(self, model, batch):
        return model(batch["x"]), batch["y"]

    def loss(self, model, batch):
        return lm_loss(*self.logits_and_targets(model, batch))
