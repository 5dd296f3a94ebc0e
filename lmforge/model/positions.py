"""Position information for the blocks: a fixed sinusoidal table added to the embeddings
(`SinusoidalPositions`), or rotary tables (`Rotary`) that `apply_rotary` turns queries and keys
with. (A learned position table is a plain `nn.Embedding` in `Transformer`.)

Both tables are non-persistent buffers: not saved with the weights, rebuilt by `init_buffers`
after a model is built on the meta device.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn


def sinusoidal_table(n_pos: int, dim: int) -> torch.Tensor:
    """(n_pos, dim) table of "Attention Is All You Need": sin on even, cos on odd features."""
    pos = torch.arange(n_pos, dtype=torch.float32)[:, None]
    inv = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(n_pos, dim)
    table[:, 0::2] = torch.sin(pos * inv)
    table[:, 1::2] = torch.cos(pos * inv[: dim // 2])
    return table


class SinusoidalPositions(nn.Module):
    """Fixed sinusoidal position vectors added to the token embeddings."""

    def __init__(self, max_pos: int, dim: int):
        super().__init__()
        self.register_buffer("table", sinusoidal_table(max_pos, dim), persistent=False)

    def init_buffers(self) -> None:  # non-persistent buffers are not saved: rebuild after meta-device init
        self.table = sinusoidal_table(*self.table.shape)

    def forward(self, pos_ids: torch.Tensor) -> torch.Tensor:
        return self.table[pos_ids]


class Rotary(nn.Module):
    """Rotary position embedding tables (the "rotate half" layout used by Llama / HF)."""

    def __init__(self, head_dim: int, max_pos: int, theta: float = 10000.0):
        super().__init__()
        self.head_dim, self.max_pos, self.theta = head_dim, max_pos, theta
        cos, sin = self._tables()
        self.register_buffer("cos", cos, persistent=False)  # (max_pos, head_dim/2)
        self.register_buffer("sin", sin, persistent=False)

    def _tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        inv_freq = 1.0 / (self.theta ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim))
        freqs = torch.outer(torch.arange(self.max_pos, dtype=torch.float32), inv_freq)
        return freqs.cos(), freqs.sin()

    def init_buffers(self) -> None:  # non-persistent buffers are not saved: rebuild after meta-device init
        self.cos, self.sin = self._tables()

    def extend(self, n_pos: int) -> None:
        """Tables for positions up to n_pos (decoding past the context with a rolling cache)."""
        if n_pos > self.max_pos:
            device = self.cos.device
            self.max_pos = n_pos
            self.cos, self.sin = (t.to(device) for t in self._tables())

    def forward(self, pos_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # pos_ids (B, T) or (T,) -> cos, sin broadcastable to (B, nh, T, hs/2)
        cos, sin = self.cos[pos_ids], self.sin[pos_ids]
        if pos_ids.dim() == 2:
            cos, sin = cos[:, None], sin[:, None]
        return cos, sin


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x (B, nh, T, hs); rotate the pairs (x_i, x_{i + hs/2})
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)
    return out.to(x.dtype)
