"""`Attention`: the one attention module of every family — causal, bidirectional or cross
attention through `scaled_dot_product_attention`, grouped-query heads (`n_kv_head`), rotary
positions, an optional preallocated `KVCache`.

Decoding caches: self-attention keys/values live in the block's `KVCache`; cross-attention
keys/values of the encoder output are projected once per sequence (`project_memory`, kept in
`memory_kv`) and reused every step.

Inspection: while `lmforge.inspect` sets `hook` (None otherwise: one `if`, no cost), the same
attention runs written out (`_written_out`: `attention_scores`, softmax, weighted sum), each
step passing through a named hook point in TransformerLens' names and shapes.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ModelConfig
from .dropout import dropout
from .kv_cache import KVCache
from .linear import Linear
from .positions import apply_rotary


class Attention(nn.Module):
    """Multi-head attention: self (fused q/k/v projection) or cross (q from x, k/v from memory)."""

    def __init__(self, config: ModelConfig, cross: bool = False):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.kv_heads, config.head_dim
        self.cross = cross
        d, q_dim, kv_dim = config.d_model, config.n_head * config.head_dim, config.kv_heads * config.head_dim
        if cross:
            self.q = Linear(d, q_dim, bias=config.bias)
            self.kv = Linear(d, 2 * kv_dim, bias=config.bias)
        else:
            self.qkv = Linear(d, q_dim + 2 * kv_dim, bias=config.bias)
        self.out = Linear(q_dim, d, bias=config.bias)
        self.dropout = config.attn_dropout
        self.kv_cache: KVCache | None = None
        self.memory_kv: tuple[torch.Tensor, torch.Tensor] | None = None   # cross: encoder keys/values while decoding
        self.hook = None   # lmforge.inspect's hook (name, tensor) -> tensor while tracing or patching; else None

    def _split_heads(self, x: torch.Tensor, n: int) -> torch.Tensor:
        B, T, _ = x.shape
        return x.view(B, T, n, self.head_dim).transpose(1, 2)  # (B, n, T, hs)

    def project_memory(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross attention: encoder output (B, S, d) -> keys, values (B, nkv, S, hs)."""
        k, v = self.kv(memory).split(self.n_kv_head * self.head_dim, dim=-1)
        return self._split_heads(k, self.n_kv_head), self._split_heads(v, self.n_kv_head)

    def forward(self, x: torch.Tensor, *, mask: torch.Tensor | None = None, is_causal: bool = False,
                rope: tuple[torch.Tensor, torch.Tensor] | None = None, input_pos: torch.Tensor | None = None,
                memory: torch.Tensor | None = None) -> torch.Tensor:
        B, T, _ = x.shape
        q_dim, kv_dim = self.n_head * self.head_dim, self.n_kv_head * self.head_dim
        if self.cross:
            q = self._split_heads(self.q(x), self.n_head)                   # (B, nh, T, hs)
            if self.memory_kv is not None:                                  # decoding: projected once per sequence
                k, v = self.memory_kv
            else:
                assert memory is not None, "cross attention needs the encoder output (memory)"
                k, v = self.project_memory(memory)                          # (B, nkv, S, hs)
        else:
            q, k, v = self.qkv(x).split((q_dim, kv_dim, kv_dim), dim=-1)
            q = self._split_heads(q, self.n_head)        # (B, nh, T, hs)
            k = self._split_heads(k, self.n_kv_head)     # (B, nkv, T, hs)
            v = self._split_heads(v, self.n_kv_head)
        if self.hook is not None:
            return self._written_out(q, k, v, mask=mask, is_causal=is_causal and mask is None, rope=rope,
                                     input_pos=input_pos)
        if rope is not None:
            cos, sin = rope
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if self.kv_cache is not None and not self.cross and input_pos is not None:
            # decoding (a plain forward ignores a kept cache): the slots the mask covers
            k, v = attended_slots(*self.kv_cache.update(input_pos, k, v), mask)
        if torch.compiler.is_compiling() and T == 1 and mask is not None and not self.training \
                and x.device.type == "cpu":                 # eager decoding pays the first test only
            y = one_query_attention(q, k, v, mask)   # a compiled CPU decode step: fused by inductor
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, is_causal=is_causal and mask is None,
                dropout_p=self.dropout if self.training else 0.0,
                enable_gqa=self.n_kv_head != self.n_head,
            )                                        # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, q_dim)   # (B, T, nh*hs)
        return self.out(y)

    def _written_out(self, q, k, v, *, mask, is_causal, rope, input_pos) -> torch.Tensor:
        """`forward` step by step through the hook points (inspection: float32 scores, not fast).
        q, k, v, z are hooked as (B, T, heads, hs), scores and pattern as (B, nh, Tq, Tk), the
        per-head outputs `hook_result` (B, T, nh, d) only when asked for."""
        hook = self.hook
        def heads_last(name, t):                                 # hook (B, T, heads, hs); keep (B, heads, T, hs)
            return hook(name, t.transpose(1, 2)).transpose(1, 2)
        q, k, v = heads_last("hook_q", q), heads_last("hook_k", k), heads_last("hook_v", v)
        if rope is not None:
            cos, sin = rope
            q = heads_last("hook_rot_q", apply_rotary(q, cos, sin))
            k = heads_last("hook_rot_k", apply_rotary(k, cos, sin))
        if self.kv_cache is not None and not self.cross and input_pos is not None:
            k, v = attended_slots(*self.kv_cache.update(input_pos, k, v), mask)
        pattern = hook("hook_pattern", hook("hook_attn_scores", attention_scores(q, k, mask, is_causal)).softmax(-1))
        if self.training and self.dropout:
            pattern = dropout(pattern, self.dropout)
        v = v.repeat_interleave(self.n_head // self.n_kv_head, dim=1)            # grouped-query heads
        z = hook("hook_z", (pattern @ v.float()).to(v.dtype).transpose(1, 2))   # (B, T, nh, hs)
        B, T, nh, hs = z.shape
        if not hook.wants("hook_result"):
            return self.out(z.reshape(B, T, nh * hs))
        alone = torch.eye(nh, dtype=z.dtype, device=z.device)[:, :, None] * z[:, :, None]   # (B, T, nh, nh, hs)
        bias = self.out(z.new_zeros(nh * hs))                                    # (d,): the output bias, or 0
        result = hook("hook_result", self.out(alone.reshape(B, T, nh, nh * hs)) - bias)   # (B, T, nh, d)
        return result.sum(2) + bias


def attended_slots(k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The cache's first slots, as many as the mask has keys: a decode loop passes `key_valid` for
    the slots written so far (`Transformer.forward`), so a step reads and scores only those, not
    the whole preallocated cache (a view; the whole cache when the mask covers it)."""
    if mask is None:
        return k, v
    return k[:, :, :mask.shape[-1]], v[:, :, :mask.shape[-1]]


def one_query_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Attention of one query per sequence, written as sums for inductor to fuse into the compiled
    CPU decode step (483 against 428 tokens/s through SDPA's kernel on the CPU anchor's Llama):
    q (B, nh, 1, hs), k and v (B, nkv, Tk, hs), mask (B|1, 1, 1, Tk) True where allowed."""
    B, nh, _, hs = q.shape
    nkv = k.shape[1]
    q = q.view(B, nkv, nh // nkv, 1, hs)                                   # grouped-query heads share k, v
    scores = (q * k.unsqueeze(2)).sum(-1) / math.sqrt(hs)                   # (B, nkv, group, Tk)
    weights = scores.masked_fill(~mask.view(mask.shape[0], 1, 1, -1), float("-inf")).softmax(-1)
    return (weights.unsqueeze(-1) * v.unsqueeze(2)).sum(-2).reshape(B, nh, 1, hs)


def attention_scores(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None, is_causal: bool) -> torch.Tensor:
    """The scores `scaled_dot_product_attention` softmaxes, written out (for looking at, not for
    speed): q (B, nh, Tq, hs), k (B, nkv, Tk, hs) -> (B, nh, Tq, Tk) float32, -inf where masked."""
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)               # grouped-query heads
    scores = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    elif is_causal:
        Tq, Tk = scores.shape[-2:]
        scores = scores.masked_fill(torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).triu(Tk - Tq + 1),
                                    float("-inf"))
    return scores
