"""`Transformer`: token embeddings (+ segment embeddings, + embedding norm) + positions + N
`Block`s + final norm — the body of every family. The decoder, the encoder and both halves of
the seq2seq model are this module with different flags (`causal`, `cross`).

It also owns the decoding caches of its blocks: `setup_cache` preallocates every block's
`KVCache` (and projects the encoder output for cross attention once), `reorder_cache` keeps the
rows beam search continues, `clear_cache` frees them.

Its hook points (while `lmforge.inspect` sets `hook`): `hook_embed` (the token table's rows),
`hook_pos_embed` (learned or sinusoidal position vectors), `hook_token_type_embed` (segments)
and the final norm's `ln_final.hook_scale` and `ln_final.hook_normalized` (the input centred and
divided by its scale, before the norm's weight: the norm then runs written out).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..config import ModelConfig
from .blocks import Block, make_norm, norm_parts
from .dropout import Dropout
from .kv_cache import KVCache, attention_mask
from .positions import Rotary, SinusoidalPositions


class Transformer(nn.Module):
    """Token embeddings + positions + N blocks + final norm: the body of every family."""

    def __init__(self, config: ModelConfig, causal: bool, cross: bool = False, n_layer: int | None = None,
                 embed: nn.Embedding | None = None):
        super().__init__()
        self.config, self.causal = config, causal
        self.tok_emb = embed if embed is not None else nn.Embedding(config.padded_vocab_size, config.d_model)
        self.type_emb = nn.Embedding(config.type_vocab_size, config.d_model) if config.type_vocab_size else None
        self.emb_scale = math.sqrt(config.d_model) if config.embed_scale else None
        if config.position == "learned":
            self.pos_emb = nn.Embedding(config.context_length, config.d_model)
        elif config.position == "sinusoidal":
            self.sin_pos = SinusoidalPositions(config.context_length, config.d_model)
        elif config.position == "rope":
            self.rotary = Rotary(config.head_dim, config.context_length, config.rope_theta)
        self.emb_norm = make_norm(config) if config.embed_norm else None
        self.drop = Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, cross=cross) for _ in range(n_layer or config.n_layer))
        # post-norm blocks end in a norm already; pre-norm stacks need a final one
        self.norm = make_norm(config) if config.norm_position == "pre" else nn.Identity()
        self.hook = None   # lmforge.inspect's (name, tensor) -> tensor while tracing or patching

    def embed(self, idx: torch.Tensor, pos_ids: torch.Tensor,
              type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple | None]:
        x = self.tok_emb(idx)                                        # (B, T, d)
        if self.hook is not None:
            x = self.hook("hook_embed", x)
        if self.emb_scale is not None:
            x = x * self.emb_scale
        if self.type_emb is not None:                                # segment 0 unless type_ids say otherwise
            x = x + self._hooked("hook_token_type_embed", self.type_emb(type_ids) if type_ids is not None
                                 else self.type_emb.weight[0], x)
        rope = None
        if self.config.position == "learned":
            x = x + self._hooked("hook_pos_embed", self.pos_emb(pos_ids), x)
        elif self.config.position == "sinusoidal":
            x = x + self._hooked("hook_pos_embed", self.sin_pos(pos_ids).to(x.dtype), x)
        elif self.config.position == "rope":
            rope = self.rotary(pos_ids)
        if self.emb_norm is not None:
            x = self.emb_norm(x)
        return self.drop(x), rope

    def _hooked(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """`t`, through hook point `name` (broadcast to the shape of `like`) while one is set."""
        return t if self.hook is None else self.hook(name, t.expand_as(like))

    def forward(self, idx: torch.Tensor, *, pos_ids: torch.Tensor | None = None,
                key_valid: torch.Tensor | None = None, input_pos: torch.Tensor | None = None,
                memory: torch.Tensor | None = None, memory_valid: torch.Tensor | None = None,
                type_ids: torch.Tensor | None = None, ring: bool = False) -> torch.Tensor:
        """idx (B, T) token ids -> hidden states (B, T, d).

        pos_ids: (B, T) or (T,) positions (default: 0..T-1, or input_pos when decoding).
        key_valid: (B, Tk) bool, False at padding keys (Tk = T; with a cache, its first Tk slots are
            attended to: a decode step passes the slots written so far).
        input_pos: (T,) cache slots being written (decoding with a KV cache).
        memory, memory_valid: encoder output (B, S, d) and its padding mask (B, S), for cross
            attention; while decoding, memory was projected by `setup_cache` and only the mask is given.
        type_ids: (B, T) segment ids when the config has segment embeddings (default: all 0).
        ring: the cache is a rolling buffer (decoding past the context): slots are not in text
            order, every cached key precedes the query, and key_valid alone says which to see.
        """
        B, T = idx.shape
        if pos_ids is None:
            if input_pos is None and T > self.config.context_length:
                raise ValueError(f"sequence of {T} tokens is longer than the model's context_length "
                                 f"{self.config.context_length}; pass shorter inputs")
            pos_ids = input_pos if input_pos is not None else torch.arange(T, device=idx.device)
        x, rope = self.embed(idx, pos_ids, type_ids)
        k_len = T
        if input_pos is not None:
            cache = self.blocks[0].attn.kv_cache
            assert cache is not None, "input_pos given but no KV cache: call setup_cache first"
            k_len = cache.k_cache.shape[2] if key_valid is None else key_valid.shape[-1]   # the slots to attend to
        mask = attention_mask(causal=self.causal and not ring, q_pos=input_pos, k_len=k_len, key_valid=key_valid,
                              device=idx.device)
        memory_mask = None
        if memory_valid is not None:
            memory_mask = memory_valid[:, None, None, :]                 # (B, 1, 1, S)
        for block in self.blocks:
            x = block(x, mask=mask, is_causal=self.causal, rope=rope, input_pos=input_pos,
                      memory=memory, memory_mask=memory_mask)
        return self.norm(x) if self.hook is None or isinstance(self.norm, nn.Identity) else self._final_norm(x)

    def _final_norm(self, x: torch.Tensor) -> torch.Tensor:
        """The final norm written out through its hook points `ln_final.hook_scale` (B, T, 1) and
        `ln_final.hook_normalized` (centred / scale, before the weight)."""
        centred, scale = norm_parts(self.norm, x)
        scale = self.hook("ln_final.hook_scale", scale)
        y = self.hook("ln_final.hook_normalized", centred / scale) * self.norm.weight
        return (y if getattr(self.norm, "bias", None) is None else y + self.norm.bias).to(x.dtype)

    # ---- KV cache -------------------------------------------------------------------
    def setup_cache(self, batch_size: int, max_len: int, dtype: torch.dtype | None = None,
                    memory: torch.Tensor | None = None) -> None:
        """Preallocate the self-attention caches; with `memory` (B, S, d), also project the
        encoder output into every cross-attention's keys and values, once. Caches of the same shape
        are kept, not reallocated (a compiled decode step then sees the same buffers every call)."""
        p = self.tok_emb.weight
        shape = (batch_size, self.config.kv_heads, max_len, self.config.head_dim)
        for block in self.blocks:
            cache = block.attn.kv_cache
            if cache is None or cache.k_cache.shape != shape or cache.k_cache.dtype != (dtype or p.dtype):
                block.attn.kv_cache = KVCache(*shape[:3], self.config.head_dim, dtype or p.dtype, p.device)
            if block.cross_attn is not None and memory is not None:
                block.cross_attn.memory_kv = block.cross_attn.project_memory(memory)

    def reorder_cache(self, index: torch.Tensor) -> None:
        """Keep the self-attention cache rows `index` (beam search: the beams that survive)."""
        for block in self.blocks:
            block.attn.kv_cache.reorder(index)

    def clear_cache(self) -> None:
        for block in self.blocks:
            if "kv_cache" in block.attn._modules:   # unregister: a plain attribute again (the serve scheduler
                del block.attn.kv_cache             # puts views of its own batched cache there)
            block.attn.kv_cache = None
            if block.cross_attn is not None:
                block.cross_attn.memory_kv = None
