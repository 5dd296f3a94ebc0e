"""What decoding keeps between steps, and who may attend to whom.

- `KVCache`: preallocated self-attention keys and values of one block (static shapes, gpt-fast
  style); `update` writes a step's keys at its slots, `reorder` picks batch rows (beam search).
- `attention_mask`: the boolean mask for causal or bidirectional attention over padded rows
  and cache slots. True = may attend. A query may always attend to itself, so rows made only of
  padding never produce NaN.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class KVCache(nn.Module):
    """Preallocated keys and values for incremental decoding (static shapes)."""

    def __init__(self, batch_size: int, n_kv_head: int, max_len: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str | None = None):
        super().__init__()
        shape = (batch_size, n_kv_head, max_len, head_dim)
        self.register_buffer("k_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape, dtype=dtype, device=device), persistent=False)

    def update(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # input_pos (T,) slots shared by the batch, or (B, T) slots per row (continuous batching:
        # each row at its own length); k, v (B, n_kv, T, hs) -> full caches (B, n_kv, max_len, hs)
        if input_pos.dim() == 2:
            rows = torch.arange(k.shape[0], device=k.device)[:, None]           # (B, 1)
            self.k_cache[rows, :, input_pos] = k.transpose(1, 2).to(self.k_cache.dtype)   # (B, T, n_kv, hs)
            self.v_cache[rows, :, input_pos] = v.transpose(1, 2).to(self.v_cache.dtype)
            return self.k_cache, self.v_cache
        self.k_cache.index_copy_(2, input_pos, k.to(self.k_cache.dtype))
        self.v_cache.index_copy_(2, input_pos, v.to(self.v_cache.dtype))
        return self.k_cache, self.v_cache

    def reorder(self, index: torch.Tensor) -> None:
        """Keep batch rows `index` (B',) in that order (beam search); B' may differ from B."""
        self.k_cache = self.k_cache.index_select(0, index)
        self.v_cache = self.v_cache.index_select(0, index)


def attention_mask(*, causal: bool, q_pos: torch.Tensor | None, k_len: int, key_valid: torch.Tensor | None,
                   device: torch.device) -> torch.Tensor | None:
    """Boolean (B|1, 1, Tq, Tk) mask, or None when plain `is_causal` / no mask will do.

    q_pos: slot of each query (Tq,) when decoding with a cache (keys are slots 0..k_len-1), or
        (B, Tq) when every row has its own slots (continuous batching).
    key_valid: (B, Tk) True at real tokens, False at padding.
    """
    if q_pos is None and key_valid is None:
        return None
    if q_pos is None:
        q_pos = torch.arange(k_len, device=device)
    k_pos = torch.arange(k_len, device=device)
    q = q_pos[..., None]                                            # (Tq, 1) or (B, Tq, 1)
    allowed = (k_pos <= q) if causal else torch.ones(*q_pos.shape, k_len, dtype=torch.bool, device=device)
    allowed = allowed[:, None] if q_pos.dim() == 2 else allowed[None, None]   # (B|1, 1, Tq, Tk)
    if key_valid is not None:
        itself = k_pos == q                                         # a query always sees itself
        itself = itself[:, None] if q_pos.dim() == 2 else itself[None, None]
        allowed = allowed & (key_valid[:, None, None, :] | itself)
    return allowed
