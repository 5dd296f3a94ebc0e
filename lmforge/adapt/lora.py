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

A LoRA run (`lmforge finetune MODEL --lora-rank R`) writes a model directory without a full
copy of the weights:

    adapter.safetensors   the trainable tensors only (adapters + `--lora-train` modules)
    adapter_config.json   the LoRA settings, the base model's path and its fingerprints
    config.json, tokenizer files, metrics.jsonl, train_state/   as in every run

`lmforge.load` (so every verb) loads it as the base with the adapters merged in; an adapter
whose recorded base fingerprints differ from the base found is refused.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import json
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ModelConfig
from ..errors import ConfigError, ModelDirError
from ..model import replace_module
from ..model.blocks import MLP, Attention
from ..modeldir import CONFIG_FILE, WEIGHTS_FILE, read_weights, write_json
from ..fileio import read_json
from ..options import option, validate

ADAPTER_FILE, ADAPTER_CONFIG = "adapter.safetensors", "adapter_config.json"
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

    def merged(self) -> nn.Linear:
        """A plain Linear computing the same function (W + scale · B A, same bias)."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None, device="meta")
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


def _tied_parameters(model: nn.Module) -> set[int]:
    seen: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        seen[id(p)] = seen.get(id(p), 0) + 1
    return {i for i, n in seen.items() if n > 1}


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
    tied = _tied_parameters(model)
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


def trainable_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """What a LoRA checkpoint stores: the parameters that train (adapters + `lora_train` modules)."""
    return {n: p.detach().to("cpu").contiguous() for n, p in model.named_parameters() if p.requires_grad}


def load_adapter_weights(model: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    expected = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    bad = [n for n in set(expected) & set(tensors) if tensors[n].shape != expected[n].shape]
    if missing or unexpected or bad:
        raise ModelDirError(f"{source} does not match the LoRA settings in {ADAPTER_CONFIG}: missing {missing[:4]}, "
                            f"unexpected {unexpected[:4]}, wrong shape {bad[:4]}; the adapter file and its "
                            f"config come from different runs")
    with torch.no_grad():
        for n, t in tensors.items():
            expected[n].copy_(t)


# ----------------------------------------------------------------- the adapter directory
def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def config_sha256(config: ModelConfig) -> str:
    """Hash of the architecture (dropout excluded: it does not change the weights' meaning)."""
    d = {k: v for k, v in config.to_dict().items() if k != "dropout"}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def weights_fingerprint(model_dir: Path) -> str:
    """Hash of the weights file's size and first MiB (header + leading tensors): cheap, and
    different for any two trainings."""
    path = model_dir / WEIGHTS_FILE if (model_dir / WEIGHTS_FILE).is_file() else model_dir / ADAPTER_FILE
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    return hashlib.sha256(str(path.stat().st_size).encode() + head).hexdigest()[:16]


def write_adapter_config(out: Path, cfg: LoRAConfig, base_dir: str | Path) -> None:
    base_dir = Path(base_dir)
    write_json(Path(out) / ADAPTER_CONFIG, {
        "lmforge_adapter": 1,
        "base_model": os.path.relpath(base_dir.resolve(), Path(out).resolve()),   # relative: move both together
        "base_config_sha256": config_sha256(ModelConfig.load(base_dir / CONFIG_FILE)),
        "base_weights_sha256": weights_fingerprint(base_dir),
        "lora": dataclasses.asdict(cfg),
    })


def read_adapter_config(adapter_dir: Path) -> dict:
    path = Path(adapter_dir) / ADAPTER_CONFIG
    if not path.is_file():
        raise ModelDirError(f"{adapter_dir} holds no LoRA adapters (no {ADAPTER_CONFIG}); give the --out directory "
                            f"of a LoRA fine-tuning (`lmforge finetune MODEL_DIR --lora-rank R --out DIR`)")
    info = read_json(path, "re-run the LoRA fine-tuning", ModelDirError)
    try:
        LoRAConfig(**info["lora"])
        if not isinstance(info["base_model"], str):
            raise TypeError("base_model is not a path")
        return info
    except (KeyError, TypeError) as e:
        raise ModelDirError(f"{path} is not a valid LoRA adapter config ({e}); re-run the LoRA fine-tuning") from e


def adapter_base(adapter_dir: Path, base: str | Path | None = None) -> Path:
    """The base model directory of an adapter, checked against the fingerprints it recorded."""
    adapter_dir = Path(adapter_dir)
    info = read_adapter_config(adapter_dir)
    if base is None and os.path.isabs(info["base_model"]):
        raise ModelDirError(f"{adapter_dir / ADAPTER_CONFIG} names its base by an absolute path, which lmforge never "
                            f"writes; pass the base model directory (`--base DIR`)")
    base_dir = Path(base) if base is not None else (adapter_dir / info["base_model"]).resolve()
    if not base_dir.is_dir():
        raise ModelDirError(f"the base model of the adapter in {adapter_dir} should be at {base_dir}, which does not "
                            f"exist; pass the base model directory (`--base DIR`)")
    if not all((base_dir / n).is_file() for n in (CONFIG_FILE, WEIGHTS_FILE)):
        raise ModelDirError(f"the base model of the adapter in {adapter_dir} should be at {base_dir}, which is not a "
                            f"model directory; pass the base model directory (`--base DIR`)")
    if config_sha256(ModelConfig.load(base_dir / CONFIG_FILE)) != info["base_config_sha256"]:
        raise ModelDirError(f"the adapter in {adapter_dir} was trained on a different base: {base_dir}/config.json "
                            f"does not match the config hash {info['base_config_sha256']} it recorded; pass the "
                            f"base model it was trained on")
    if weights_fingerprint(base_dir) != info["base_weights_sha256"]:
        raise ModelDirError(f"the adapter in {adapter_dir} was trained on different weights than those in "
                            f"{base_dir} (same architecture, weights fingerprint differs from "
                            f"{info['base_weights_sha256']}); pass the base model it was trained on")
    return base_dir


def load_lora_model(adapter_dir: str | Path, base: str | Path | None = None, device="cpu", dtype=None,
                    weights: dict[str, torch.Tensor] | None = None, **config_overrides):
    """(model with LoRALinear layers, the run's config, adapter tokenizer, LoRAConfig). The run's
    config is the base's plus any head the task added (trained and saved with the adapters).
    The adapters come from `weights` when given (a resumed checkpoint), else from
    adapter.safetensors."""
    from ..api import build_with_weights, read_model_dir, resolve_dtype
    from ..model import new_head_prefixes
    from ..tokenizers import Tokenizer
    adapter_dir = Path(adapter_dir)
    base_dir = adapter_base(adapter_dir, base)
    lora = LoRAConfig(**read_adapter_config(adapter_dir)["lora"])
    config = dataclasses.replace(ModelConfig.load(adapter_dir / CONFIG_FILE), **config_overrides)
    base_config, base_weights, _, source = read_model_dir(base_dir)
    new_head = new_head_prefixes(base_config, config)
    base_weights = {k: v for k, v in base_weights.items() if not (new_head and k.startswith(new_head))}
    model = build_with_weights(config, base_weights, source, optional=new_head)
    del base_weights
    device = torch.device(device)
    model = model.to(device=device, dtype=resolve_dtype(dtype, device))
    apply_lora(model, lora, train_also=new_head)
    if weights is None:
        weights, _ = read_weights(adapter_dir / ADAPTER_FILE)
    load_adapter_weights(model, weights, str(adapter_dir / ADAPTER_FILE))
    return model, config, Tokenizer.load(adapter_dir), lora


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path, base: str | Path | None = None,
                  overwrite: bool = False) -> Path:
    """Write base + merged adapters as a plain model directory (for export or quantization); never
    into the adapter or base directory, into one holding anything only with `overwrite`."""
    from ..api import Model
    from ..safety import check_output
    inputs = [("the adapter directory", adapter_dir), ("the base model", adapter_base(Path(adapter_dir), base))]
    check_output(out_dir, inputs=inputs, overwrite=overwrite, out_name="OUT_DIR")
    model, config, tokenizer, _ = load_lora_model(adapter_dir, base)
    return Model(merge_lora(model), config, tokenizer).save(out_dir, overwrite=overwrite, inputs=inputs)
