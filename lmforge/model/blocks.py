"""The one block library every family is assembled from.

- `Attention`: causal, bidirectional or cross attention through `scaled_dot_product_attention`,
  grouped-query heads (`n_kv_head`), an optional preallocated `KVCache`.
- `MLP`: GELU / ReLU or SwiGLU. `make_norm`: LayerNorm or RMSNorm.
- positions: learned table, fixed sinusoidal table, or rotary (`Rotary`).
- `Block`: attention (+ cross attention) + MLP with pre- or post-norm residuals.
- `Transformer`: embeddings (+ segment embeddings, + embedding norm) + positions + blocks +
  final norm; the decoder, the encoder and both halves of the seq2seq model are this module
  with different flags.

Decoding caches: self-attention keys/values live in a preallocated `KVCache` per block
(`reorder` picks batch rows, for beam search); cross-attention keys/values of the encoder
output are projected once per sequence (`setup_cache(..., memory=)`) and reused every step.

Masks are boolean, True = may attend. A query may always attend to itself, so rows made only
of padding never produce NaN.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ModelConfig


# ---------------------------------------------------------------------------------- norms
class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # computed in fp32 like Llama, returned in the input dtype
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).to(x.dtype)


def make_norm(config: ModelConfig) -> nn.Module:
    if config.norm == "rmsnorm":
        return RMSNorm(config.d_model, config.norm_eps)
    return nn.LayerNorm(config.d_model, eps=config.norm_eps, bias=config.bias)


# ------------------------------------------------------------------------------ positions
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


# ------------------------------------------------------------------------------ KV cache
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


# ----------------------------------------------------------------------------- attention
class Attention(nn.Module):
    """Multi-head attention: self (fused q/k/v projection) or cross (q from x, k/v from memory)."""

    def __init__(self, config: ModelConfig, cross: bool = False):
        super().__init__()
        self.n_head, self.n_kv_head, self.head_dim = config.n_head, config.kv_heads, config.head_dim
        self.cross = cross
        d, q_dim, kv_dim = config.d_model, config.n_head * config.head_dim, config.kv_heads * config.head_dim
        if cross:
            self.q = nn.Linear(d, q_dim, bias=config.bias)
            self.kv = nn.Linear(d, 2 * kv_dim, bias=config.bias)
        else:
            self.qkv = nn.Linear(d, q_dim + 2 * kv_dim, bias=config.bias)
        self.out = nn.Linear(q_dim, d, bias=config.bias)
        self.dropout = config.dropout
        self.kv_cache: KVCache | None = None
        self.memory_kv: tuple[torch.Tensor, torch.Tensor] | None = None   # cross: encoder keys/values while decoding
        self.recorded: list[torch.Tensor] | None = None   # set to a list to collect the attention weights (viz)

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
        if rope is not None:
            cos, sin = rope
            q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        if self.kv_cache is not None and not self.cross:
            assert input_pos is not None, "decoding with a KV cache needs input_pos (the cache slots)"
            k, v = self.kv_cache.update(input_pos, k, v)
        if self.recorded is not None:
            self.recorded.append(attention_weights(q, k, mask, is_causal and mask is None))
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal and mask is None,
            dropout_p=self.dropout if self.training else 0.0,
            enable_gqa=self.n_kv_head != self.n_head,
        )                                            # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, q_dim)   # (B, T, nh*hs)
        return self.out(y)


def attention_weights(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None, is_causal: bool) -> torch.Tensor:
    """The weights `scaled_dot_product_attention` applies, written out (for looking at, not for
    speed): q (B, nh, Tq, hs), k (B, nkv, Tk, hs) -> (B, nh, Tq, Tk) float32, rows summing to 1."""
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)               # grouped-query heads
    scores = (q.float() @ k.float().transpose(-2, -1)) / math.sqrt(q.shape[-1])
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    elif is_causal:
        Tq, Tk = scores.shape[-2:]
        scores = scores.masked_fill(torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).triu(Tk - Tq + 1),
                                    float("-inf"))
    return scores.softmax(-1)


# ----------------------------------------------------------------------------------- MLP
class MLP(nn.Module):
    """fc -> activation -> proj. SwiGLU fuses gate and up projections into one `fc`."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.kind, ff = config.mlp, config.ff_dim
        self.fc = nn.Linear(config.d_model, 2 * ff if self.kind == "swiglu" else ff, bias=config.bias)
        self.proj = nn.Linear(ff, config.d_model, bias=config.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        if self.kind == "swiglu":
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up
        elif self.kind == "gelu_tanh":
            h = F.gelu(h, approximate="tanh")
        elif self.kind == "relu":
            h = F.relu(h)
        else:
            h = F.gelu(h)
        return self.proj(h)


# --------------------------------------------------------------------------------- block
class Block(nn.Module):
    """Self attention (+ cross attention) + MLP, each wrapped in a pre- or post-norm residual."""

    def __init__(self, config: ModelConfig, cross: bool = False):
        super().__init__()
        self.pre_norm = config.norm_position == "pre"
        self.attn_norm, self.attn = make_norm(config), Attention(config)
        if cross:
            self.cross_norm, self.cross_attn = make_norm(config), Attention(config, cross=True)
        else:
            self.cross_attn = None
        self.mlp_norm, self.mlp = make_norm(config), MLP(config)
        self.drop = nn.Dropout(config.dropout)

    def _residual(self, x: torch.Tensor, norm: nn.Module, fn) -> torch.Tensor:
        if self.pre_norm:
            return x + self.drop(fn(norm(x)))
        return norm(x + self.drop(fn(x)))

    def forward(self, x: torch.Tensor, *, mask=None, is_causal=False, rope=None, input_pos=None,
                memory=None, memory_mask=None) -> torch.Tensor:
        x = self._residual(x, self.attn_norm,
                           lambda h: self.attn(h, mask=mask, is_causal=is_causal, rope=rope, input_pos=input_pos))
        if self.cross_attn is not None:
            x = self._residual(x, self.cross_norm, lambda h: self.cross_attn(h, mask=memory_mask, memory=memory))
        return self._residual(x, self.mlp_norm, self.mlp)


# --------------------------------------------------------------------------- transformer
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
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, cross=cross) for _ in range(n_layer or config.n_layer))
        # post-norm blocks end in a norm already; pre-norm stacks need a final one
        self.norm = make_norm(config) if config.norm_position == "pre" else nn.Identity()

    def embed(self, idx: torch.Tensor, pos_ids: torch.Tensor,
              type_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple | None]:
        x = self.tok_emb(idx)                                        # (B, T, d)
        if self.emb_scale is not None:
            x = x * self.emb_scale
        if self.type_emb is not None:                                # segment 0 unless type_ids say otherwise
            x = x + (self.type_emb(type_ids) if type_ids is not None else self.type_emb.weight[0])
        rope = None
        if self.config.position == "learned":
            x = x + self.pos_emb(pos_ids)
        elif self.config.position == "sinusoidal":
            x = x + self.sin_pos(pos_ids).to(x.dtype)
        elif self.config.position == "rope":
            rope = self.rotary(pos_ids)
        if self.emb_norm is not None:
            x = self.emb_norm(x)
        return self.drop(x), rope

    def forward(self, idx: torch.Tensor, *, pos_ids: torch.Tensor | None = None,
                key_valid: torch.Tensor | None = None, input_pos: torch.Tensor | None = None,
                memory: torch.Tensor | None = None, memory_valid: torch.Tensor | None = None,
                type_ids: torch.Tensor | None = None, ring: bool = False) -> torch.Tensor:
        """idx (B, T) token ids -> hidden states (B, T, d).

        pos_ids: (B, T) or (T,) positions (default: 0..T-1, or input_pos when decoding).
        key_valid: (B, Tk) bool, False at padding keys (Tk = T, or the cache length).
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
            k_len = cache.k_cache.shape[2]
        mask = attention_mask(causal=self.causal and not ring, q_pos=input_pos, k_len=k_len, key_valid=key_valid,
                              device=idx.device)
        memory_mask = None
        if memory_valid is not None:
            memory_mask = memory_valid[:, None, None, :]                 # (B, 1, 1, S)
        for block in self.blocks:
            x = block(x, mask=mask, is_causal=self.causal, rope=rope, input_pos=input_pos,
                      memory=memory, memory_mask=memory_mask)
        return self.norm(x)

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


def init_weights(module: nn.Module, config: ModelConfig) -> None:
    """GPT-2 init: N(0, init_std) for Linear / Embedding, zero biases, ones for norms,
    residual output projections scaled by 1/sqrt(2 * n_layer)."""
    for name, m in module.named_modules():
        if isinstance(m, nn.Linear):
            std = config.init_std
            if name.endswith("attn.out") or name.endswith("mlp.proj"):
                std = config.init_std / math.sqrt(2 * config.n_layer)
            nn.init.normal_(m.weight, 0.0, std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, 0.0, config.init_std)
        elif isinstance(m, (nn.LayerNorm, RMSNorm)):
            nn.init.ones_(m.weight)
            if getattr(m, "bias", None) is not None:
                nn.init.zeros_(m.bias)
