"""Heads that sit on a family's hidden states (B, T, d): BERT's pooler and masked-LM head, the
sequence-classification head, and `pool` (one vector per sequence: first token, mean, or last
real token). They are the same for every family; the family decides where they go."""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ModelConfig
from .blocks import make_norm
from .dropout import Dropout
from .linear import Linear

ACTIVATIONS = {"gelu": F.gelu, "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"), "relu": F.relu,
               "swiglu": F.silu}   # a gated MLP's activation, for the single-matrix heads


def pool(h: torch.Tensor, key_valid: torch.Tensor | None, method: str) -> torch.Tensor:
    """h (B, T, d) -> (B, d). cls: the first position; mean: the average over real tokens;
    last: the last real token (key_valid (B, T) True at real tokens; padding may be anywhere)."""
    if method == "cls":
        return h[:, 0]
    if key_valid is None:
        return h.mean(1) if method == "mean" else h[:, -1]
    if method == "mean":
        w = key_valid.to(h.dtype)[..., None]                                  # (B, T, 1)
        return (h * w).sum(1) / w.sum(1).clamp(min=1)
    positions = torch.arange(h.shape[1], device=h.device).expand_as(key_valid)
    last = torch.where(key_valid, positions, -1).max(dim=1).values.clamp(min=0)  # (B,)
    return h[torch.arange(h.shape[0], device=h.device), last]


class Pooler(nn.Module):
    """BERT's pooler: tanh(dense(first hidden state))."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.dense = Linear(config.d_model, config.d_model, bias=config.bias)

    def forward(self, first: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(first))


class MaskedLMHead(nn.Module):
    """BERT's prediction head: dense -> activation -> norm -> decoder (tied to the token
    embedding by the family) + a per-token output bias. Returns padded-vocabulary logits."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.act = ACTIVATIONS[config.mlp]
        self.dense = Linear(config.d_model, config.d_model, bias=config.bias)
        self.norm = make_norm(config)
        self.decoder = Linear(config.d_model, config.padded_vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(config.padded_vocab_size))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.norm(self.act(self.dense(h)))) + self.bias


class ClassificationHead(nn.Module):
    """dropout -> Linear(d, number of labels) on a pooled vector (B, d) -> class logits (B, C)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.drop = Dropout(config.dropout)
        self.proj = Linear(config.d_model, len(config.labels))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.proj(self.drop(pooled))


def lookup_params(*tables: nn.Module | None) -> int:
    """Parameters of embedding tables used only as lookups (no matmul FLOPs), counted once."""
    seen = {id(t.weight): t.weight.numel() for t in tables if t is not None}
    return sum(seen.values())
