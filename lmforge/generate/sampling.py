"""Turning next-token logits into tokens: penalties, filters, sampling. All tensor ops.

    >>> logits = torch.tensor([[1.0, 3.0, 2.0]])
    >>> sample_next(logits, temperature=0.0)        # greedy
    tensor([1])
    >>> filter_top_k(logits, 2)
    tensor([[-inf, 3., 2.]])
"""

from __future__ import annotations

import torch


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL / HF rule: for tokens already in the sequence (`seen` (B, V) bool), divide positive
    logits by `penalty` and multiply negative ones by it."""
    if penalty == 1.0:
        return logits
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)


def filter_top_k(logits: torch.Tensor, k: int | None) -> torch.Tensor:
    if not k or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, float("-inf"))


def filter_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability mass reaches p (nucleus sampling)."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    cum = sorted_logits.softmax(-1).cumsum(-1)
    drop_sorted = (cum - sorted_logits.softmax(-1)) >= p          # mass before this token already >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def probabilities(logits: torch.Tensor, temperature: float, top_k: int | None = None,
                  top_p: float = 1.0) -> torch.Tensor:
    """The distribution sampling draws from: softmax of the temperature-scaled, filtered logits
    (..., V) -> (..., V) float32. (Speculative decoding compares these for two models.)"""
    return filter_top_p(filter_top_k(logits.float() / temperature, top_k), top_p).softmax(dim=-1)


def sample_next(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None, top_p: float = 1.0,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """logits (B, V) -> next token ids (B,). temperature 0 means greedy (argmax)."""
    if temperature <= 0.0:
        return logits.argmax(dim=-1)
    probs = probabilities(logits, temperature, top_k, top_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)
