"""LoRA: low-rank adapters on chosen Linear layers (Hu et al., 2021).

A targeted Linear computes x Wᵀ + b + (alpha / r) · x Aᵀ Bᵀ with A (r, in) random and B (out, r)
zero, so at initialisation the model computes exactly what it computed before. Only A and B
train; `merge_lora` folds W + (alpha / r) · B A back into plain Linear layers for export.

Targets are short names or patterns over the names of Linear modules:

    q, k, v  query / key / value projections. Self-attention fuses them into one Linear
             (`attn.qkv`, output rows [q | k | v]): each chosen projection gets its own A and B
             that update only its rows — what separate q, k, v Linears with LoRA would compute.
             Cross attention has `cross_attn.q` and a fused `cross_attn.kv` (rows [k | v]).
    o        attention output projections (`attn.out`, `cross_attn.out`)
    mlp      the MLP's `fc` (SwiGLU: gate and up, fused) and `proj`
    *.mlp.fc, lm_head, ...   fnmatch patterns (a pattern also matches as a name suffix)

The adapters extend the wrapped Linear's parameter names (`...attn.qkv.lora_A.q`,
`...attn.qkv.lora_B.q`) and the Linear keeps `weight` and `bias`, so base weights load unchanged.

The directory a LoRA run writes (its adapters, their config and base) is `lmforge.adapt.runs`.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError
from ..model import replace_module, shared_parameters
from ..model.attention import Attention
from ..model.blocks import MLP
from ..model.linear import Linear
from ..options import option, validate

ALIASES = ("q", "k", "v", "o", "mlp")


def _split_commas(items: list[str] | str) -> list[str]:
    items = [items] if isinstance(items, str) else items
    return [part.strip() for item in items for part in item.split(",") if part.strip()]


@dataclass
class LoRAConfig:
    lora_rank: int = option(0, "train rank-R LoRA adapters instead of every weight (0: full fine-tuning)")
    lora_alpha: float = option(16.0, "LoRA scale: the adapters' update is multiplied by alpha / rank")
    lora_targets: list[str] = option(["q", "k", "v", "o", "mlp"],
                                     "layers to adapt: q, k, v, o, mlp and/or module-name patterns such as "
                                     "'*.mlp.fc' (comma- or space-separated)")
    lora_dropout: float = option(0.0, "dropout on the adapters' input (training only)")
    lora_train: list[str] = option([], "module-name patterns trained in full and saved with the adapters "
                                       "(e.g. a newly added classification head)")

    def __post_init__(self) -> None:
        self.lora_targets = _split_commas(self.lora_targets)
        self.lora_train = _split_commas(self.lora_train)
        validate(self)
        if self.lora_rank < 0:
            raise ConfigError(f"lora_rank={self.lora_rank} must be >= 0 (0 disables LoRA)")
        if self.lora_alpha <= 0:
            raise ConfigError(f"lora_alpha={self.lora_alpha} must be positive")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ConfigError(f"lora_dropout={self.lora_dropout} must be in [0, 1)")
        if self.enabled and not self.lora_targets:
            raise ConfigError(f"--lora-targets is empty; name layers to adapt: {', '.join(ALIASES)} or patterns")

    @property
    def enabled(self) -> bool:
        return self.lora_rank > 0


# ------------------------------------------------------------------------------ the module
class LoRALinear(nn.Linear):
    """A Linear plus low-rank updates of chosen output-row ranges ("slices").

    slices: {name: (first row, end row)}; each gets A (rank, in) and B (end - first, rank).
    It shares the wrapped Linear's `weight` and `bias` Parameters (same names, same storage).
    """

    def __init__(self, base: nn.Linear, slices: dict[str, tuple[int, int]], rank: int, alpha: float,
                 dropout: float = 0.0):
        super().__init__(base.in_features, base.out_features, bias=base.bias is not None, device="meta")
        self.weight, self.bias = base.weight, base.bias
        self.rank, self.scale = rank, alpha / rank
        self.slices = dict(sorted(slices.items(), key=lambda item: item[1]))
        like = dict(device=base.weight.device, dtype=base.weight.dtype)
        self.lora_A = nn.ParameterDict({s: nn.Parameter(torch.empty(rank, self.in_features, **like))
                                        for s in self.slices})
        self.lora_B = nn.ParameterDict({s: nn.Parameter(torch.zeros(end - first, rank, **like))
                                        for s, (first, end) in self.slices.items()})
        for a in self.lora_A.values():
            nn.init.kaiming_uniform_(a, a=math.sqrt(5))                  # nn.Linear's init; B stays zero
        self.lora_dropout = nn.Dropout(dropout)
        # output rows in order: (slice name, rows) for adapted ranges, (None, rows) for the others
        self.layout: list[tuple[str | None, int]] = []
        row = 0
        for s, (first, end) in self.slices.items():
            assert first >= row and end <= self.out_features, f"overlapping LoRA slices {self.slices}"
            if first > row:
                self.layout.append((None, first - row))
            self.layout.append((s, end - first))
            row = end
        if row < self.out_features:
            self.layout.append((None, self.out_features - row))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x, self.weight, self.bias)                          # (..., out)
        h = self.lora_dropout(x)
        parts = [F.linear(F.linear(h, self.lora_A[s]), self.lora_B[s]) if s is not None   # (..., rows)
                 else h.new_zeros(*h.shape[:-1], rows) for s, rows in self.layout]
        return y + self.scale * torch.cat(parts, dim=-1)

    def delta_weight(self) -> torch.Tensor:
        """scale · B A for every slice, zeros elsewhere: (out, in) in float32."""
        parts = [self.lora_B[s].float() @ self.lora_A[s].float() if s is not None
                 else torch.zeros(rows, self.in_features, device=self.weight.device) for s, rows in self.layout]
        return self.scale * torch.cat(parts, dim=0)

    def merged(self) -> Linear:
        """A plain Linear computing the same function (W + scale · B A, same bias)."""
        linear = Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
        linear.weight = nn.Parameter((self.weight.float() + self.delta_weight()).to(self.weight.dtype))
        linear.bias = None if self.bias is None else nn.Parameter(self.bias.detach().clone())
        return linear

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.rank}, scale={self.scale:g}, slices={self.slices}"


# ------------------------------------------------------------------------------ targeting
def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _alias_targets(model: nn.Module, alias: str) -> dict[str, dict[str, tuple[int, int]]]:
    """{Linear name: {alias: row range}} for a short target name (q, k, v, o, mlp)."""
    hits: dict[str, dict[str, tuple[int, int]]] = {}
    for name, m in model.named_modules():
        if isinstance(m, Attention):
            q, kv = m.n_head * m.head_dim, m.n_kv_head * m.head_dim
            if m.cross:   # q (q rows); kv ([k | v] rows)
                rows = {"q": ("q", 0, q), "k": ("kv", 0, kv), "v": ("kv", kv, 2 * kv)}
            else:         # qkv ([q | k | v] rows)
                rows = {"q": ("qkv", 0, q), "k": ("qkv", q, q + kv), "v": ("qkv", q + kv, q + 2 * kv)}
            rows["o"] = ("out", 0, m.out.out_features)
            if alias in rows:
                child, first, end = rows[alias]
                hits[_join(name, child)] = {alias: (first, end)}
        elif isinstance(m, MLP) and alias == "mlp":
            for child in ("fc", "proj"):
                hits[_join(name, child)] = {"mlp": (0, getattr(m, child).out_features)}
    return hits


def _module_names(model: nn.Module, kind: type = nn.Module) -> list[str]:
    """Distinct module names with block indices collapsed (transformer.blocks.N.attn.qkv)."""
    names = dict.fromkeys(re.sub(r"\.\d+(?=\.|$)", ".N", n) for n, m in model.named_modules()
                          if n and isinstance(m, kind))
    return list(names)


def _matches(name: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, "*." + pattern)


def resolve_targets(model: nn.Module, targets: list[str]) -> dict[str, dict[str, tuple[int, int]]]:
    """{Linear module name: {slice name: (first row, end row)}} selected by `targets`."""
    linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    found: dict[str, dict[str, tuple[int, int]]] = {}
    for target in targets:
        if target in ALIASES:
            hits = _alias_targets(model, target)
        else:
            hits = {n: {"all": (0, m.out_features)} for n, m in linears.items() if _matches(n, target)}
        if not hits:
            raise ConfigError(f"LoRA target {target!r} matches no Linear module; use {', '.join(ALIASES)} or a "
                              f"pattern matching one of: {', '.join(_module_names(model, nn.Linear))}")
        for name, slices in hits.items():
            found.setdefault(name, {}).update(slices)
    tied = shared_parameters(model)
    for name, slices in found.items():
        if id(linears[name].weight) in tied:
            raise ConfigError(f"LoRA target {name} shares its weight with another module (tied embeddings); "
                              f"adapt other layers, or train it in full with --lora-train")
        whole = [s for s, (first, end) in slices.items() if (first, end) == (0, linears[name].out_features)]
        if whole:                                    # one adapter over all rows covers the slices too
            found[name] = {whole[0]: slices[whole[0]]}
    return found


def apply_lora(model: nn.Module, cfg: LoRAConfig, train_also: tuple[str, ...] = ()) -> list[str]:
    """Freeze `model`, wrap the targeted Linears in `LoRALinear` and unfreeze the adapters, the
    `lora_train` modules and parameters under the `train_also` prefixes (a new task head).
    Returns the adapted module names."""
    assert cfg.enabled, "apply_lora needs lora_rank > 0"
    targets = resolve_targets(model, cfg.lora_targets)
    model.requires_grad_(False)
    for name, slices in targets.items():
        replace_module(model, name, LoRALinear(model.get_submodule(name), slices, cfg.lora_rank, cfg.lora_alpha,
                                               cfg.lora_dropout))
    for pattern in cfg.lora_train:
        hits = [m for n, m in model.named_modules() if n and _matches(n, pattern)]
        if not hits:
            raise ConfigError(f"--lora-train {pattern!r} matches no module; modules: "
                              f"{', '.join(_module_names(model))}")
        for m in hits:
            m.requires_grad_(True)
    for name, p in model.named_parameters():
        if train_also and name.startswith(train_also):
            p.requires_grad_(True)
    return list(targets)


def merge_lora(model: nn.Module) -> nn.Module:
    """Replace every LoRALinear by the equivalent plain Linear (in place); all weights trainable again."""
    for name, m in list(model.named_modules()):
        if isinstance(m, LoRALinear):
            replace_module(model, name, m.merged())
    return model.requires_grad_(True)
