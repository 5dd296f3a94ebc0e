"""Causal-LM pretraining (task `clm`): random windows of `context_length + 1` tokens from the
memmapped shards (nanoGPT style); inputs are the first T tokens, targets the last T."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import ModelConfig
from ..data.shards import load_splits
from ..errors import ConfigError
from .base import NextTokenTask, token_entropy


class CausalLMTask(NextTokenTask):
    name = "clm"

    def __init__(self, data_dir: str | Path, context_length: int):
        self.T = context_length
        self.data = load_splits(data_dir, self.T + 1, f"context_length + 1 = {self.T + 1}")

    def sample(self, split: str, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(len(self.data[split]) - self.T, (n,), generator=generator)

    def train_examples(self) -> int:
        return (len(self.data["train"]) - 1) // self.T

    def constant_loss(self) -> float:
        return token_entropy(self.data["train"])

    def collate(self, split: str, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        data = self.data[split]
        rows = np.stack([data[i: i + self.T + 1] for i in indices.tolist()]).astype(np.int64)
        rows = torch.from_numpy(rows)
        return {"x": rows[:, :-1], "y": rows[:, 1:]}


def build(cfg, config: ModelConfig, tokenizer) -> CausalLMTask:
    if config.family != "decoder":
        raise ConfigError(f"task clm needs a decoder model, but preset {cfg.preset!r} is a {config.family}; "
                          f"pick a decoder preset (gpt-*, llama-*)")
    return CausalLMTask(cfg.data, config.context_length)
