"""The one block library every family is assembled from, one module per part:

- `positions.py`: learned table, fixed sinusoidal table, or rotary (`Rotary`, `apply_rotary`).
- `kv_cache.py`: the preallocated `KVCache` and `attention_mask` (padding, causality, cache slots).
- `attention.py`: `Attention` — causal, bidirectional or cross, grouped-query heads, KV cache.
- `dropout.py`: `Dropout` — `nn.Dropout` with a faster mask on the CPU.
- `linear.py`: `Linear` — `nn.Linear` whose few-row CPU product is a sum over the inputs when
  compiled and split over the threads eagerly.
- here: `make_norm` (LayerNorm or RMSNorm), `MLP` (GELU / ReLU or SwiGLU), `Block` (attention
  (+ cross attention) + MLP with pre- or post-norm residuals) and `init_weights`.

Named hook points (TransformerLens' names: `hook_resid_pre`, `hook_attn_out`, `hook_resid_mid`,
`hook_mlp_out`, `hook_resid_post`, the MLP's `hook_pre` / `hook_post`): a module calls
`self.hook(name, tensor)` only while `lmforge.inspect` has set `hook` (a trace or a patch is
active); otherwise `hook` is None and the cost is one `if`.
- `transformer.py`: `Transformer` — embeddings + positions + blocks + final norm; the decoder,
  the encoder and both halves of the seq2seq model are this module with different flags.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ModelConfig
from .attention import Attention
from .dropout import Dropout
from .linear import Linear

__all__ = ["RMSNorm", "make_norm", "norm_parts", "MLP", "Block", "init_weights"]


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


def norm_parts(norm: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A norm written out for inspection: (x centred — LayerNorm — or as is — RMSNorm —, its scale
    (..., 1)), so that norm(x) = centred / scale * weight (+ bias); float32."""
    x = x.float()
    if isinstance(norm, nn.LayerNorm):
        x = x - x.mean(-1, keepdim=True)
    return x, (x.pow(2).mean(-1, keepdim=True) + norm.eps).sqrt()


# ----------------------------------------------------------------------------------- MLP
class MLP(nn.Module):
    """fc -> activation -> proj. SwiGLU fuses gate and up projections into one `fc`."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.kind, ff = config.mlp, config.ff_dim
        self.fc = Linear(config.d_model, 2 * ff if self.kind == "swiglu" else ff, bias=config.bias)
        self.proj = Linear(ff, config.d_model, bias=config.bias)
        self.hook = None   # lmforge.inspect's (name, tensor) -> tensor while tracing or patching

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        hook = self.hook
        if self.kind == "swiglu":
            gate, up = h.chunk(2, dim=-1)
            if hook is not None:                             # TransformerLens' gated MLP: pre = gate, pre_linear = up
                gate, up = hook("hook_pre", gate), hook("hook_pre_linear", up)
            h = F.silu(gate) * up
        else:
            if hook is not None:
                h = hook("hook_pre", h)
            if self.kind == "gelu_tanh":
                h = F.gelu(h, approximate="tanh")
            elif self.kind == "relu":
                h = F.relu(h)
            else:
                h = F.gelu(h)
        if hook is not None:
            h = hook("hook_post", h)
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
        self.drop = Dropout(config.dropout)
        self.hook = None   # lmforge.inspect's (name, tensor) -> tensor while tracing or patching

    def _residual(self, x: torch.Tensor, norm: nn.Module, fn, names: tuple[str, str]) -> torch.Tensor:
        """x + fn(norm(x)) (pre-norm) or norm(x + fn(x)) (post-norm); `names`: the hook points of
        the sub-layer's output and of the residual stream after it."""
        h = fn(norm(x) if self.pre_norm else x)
        if self.hook is not None:
            h = self.hook(names[0], h)
        x = x + self.drop(h)
        if not self.pre_norm:
            x = norm(x)
        return x if self.hook is None else self.hook(names[1], x)

    def forward(self, x: torch.Tensor, *, mask=None, is_causal=False, rope=None, input_pos=None,
                memory=None, memory_mask=None) -> torch.Tensor:
        if self.hook is not None:
            x = self.hook("hook_resid_pre", x)
        x = self._residual(x, self.attn_norm,
                           lambda h: self.attn(h, mask=mask, is_causal=is_causal, rope=rope, input_pos=input_pos),
                           ("hook_attn_out", "hook_resid_mid"))
        if self.cross_attn is not None:
            x = self._residual(x, self.cross_norm, lambda h: self.cross_attn(h, mask=memory_mask, memory=memory),
                               ("hook_cross_attn_out", "hook_resid_mid_cross"))
        return self._residual(x, self.mlp_norm, self.mlp, ("hook_mlp_out", "hook_resid_post"))


# ------------------------------------------------------------------------------ weights
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
