"""Explicit key tables between lmforge and Hugging Face state dicts.

An `Architecture` is everything lmforge knows about one HF model type: its config mapping
both ways and a table of `Rule`s, one per lmforge tensor. A rule names the lmforge tensor, the
HF tensor(s) it comes from, and the only transforms there are — a transpose (GPT-2's
Conv1D stores (in, out)), a fusion (several HF tensors concatenated along dim 0, split
again on export with sizes from the config) and the rotary interleave llama.cpp's GGUF files
apply to Llama's q / k rows (`rotary`). Nothing is guessed from the shape of a name. The same
tables serve GGUF (`gguf/tables.py`): there "hf" names the GGUF tensor.

    >>> rule = Rule("blocks.{i}.attn.qkv.weight", ("h.{i}.q.weight", "h.{i}.k.weight"),
    ...             split=lambda c: (4, 2))
    >>> rule.at(3).ours, rule.at(3).hf
    ('blocks.3.attn.qkv.weight', ('h.3.q.weight', 'h.3.k.weight'))
    >>> rule.hf_shapes((6, 8), None)                       # the HF shapes lmforge's (6, 8) comes from
    [(4, 8), (2, 8)]
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.nn as nn
from tqdm import tqdm

from ..config import ModelConfig
from ..errors import ConfigError, ModelDirError


@dataclass(frozen=True)
class Rule:
    ours: str                                  # lmforge state-dict name; "{i}" stands for the layer index
    hf: tuple[str, ...] | str                  # HF name; a tuple: parts fused in ours, concatenated on dim 0 in order
    transpose: bool = False                    # HF stores the matrix as (in, out) (GPT-2's Conv1D), we as (out, in)
    split: Callable[[ModelConfig], tuple[int, ...]] | None = None   # rows of each fused part, from the config
    vocab_rows: bool = False                   # one row per token: export drops lmforge's vocabulary padding
    rotary: Callable[[ModelConfig], tuple[int | None, ...]] | None = None
    # per fused part: the heads whose rows the other format stores in llama.cpp's interleaved RoPE order
    # (None: the part is stored as lmforge stores it)

    def __post_init__(self) -> None:
        if isinstance(self.hf, str):
            object.__setattr__(self, "hf", (self.hf,))
        assert (len(self.hf) > 1) == (self.split is not None), f"{self.ours}: fused parts need split sizes"

    def at(self, layer: int) -> "Rule":
        return dataclasses.replace(self, ours=self.ours.format(i=layer), hf=tuple(h.format(i=layer) for h in self.hf))

    def part_rows(self, ours_rows: int, config: ModelConfig) -> tuple[int, ...]:
        rows = self.split(config) if self.split else (ours_rows,)
        assert sum(rows) == ours_rows, f"{self.ours}: split {rows} does not add up to {ours_rows} rows"
        return rows

    def hf_shapes(self, ours_shape: tuple[int, ...], config: ModelConfig) -> list[tuple[int, ...]]:
        """The shape each HF tensor must have for lmforge's tensor to have `ours_shape`."""
        shapes = [(rows, *ours_shape[1:]) for rows in self.part_rows(ours_shape[0], config)]
        return [s[::-1] for s in shapes] if self.transpose else shapes


@dataclass(frozen=True)
class Architecture:
    name: str                                  # how lmforge names it in messages ("gpt2", "llama")
    model_type: str                            # config.json "model_type"
    hf_classes: tuple[str, ...]                # config.json "architectures" accepted on import; the first is exported
    base_prefix: str                           # HF base_model_prefix: a bare-model checkpoint stores names without it
    keys: tuple[Rule, ...]                     # one rule per lmforge tensor; "{i}" rules repeat per layer
    ignored: tuple[str, ...]                   # HF tensors that hold no weights (old causal-mask / RoPE buffers)
    config_from_hf: Callable[[dict[str, Any]], ModelConfig]   # raises ConfigError naming an unsupported field
    config_to_hf: Callable[[ModelConfig], dict[str, Any]]     # raises ConfigError naming what HF cannot hold;
                                                              # may name the class to write ("architectures")
    heads: Callable[[ModelConfig, dict[str, Any], set[str]], ModelConfig] | None = None
    # (config, config.json, the checkpoint's tensor names) -> config with the optional heads the checkpoint holds

    def rules(self, n_layer: int) -> Iterator[Rule]:
        for rule in self.keys:
            if "{i}" in rule.ours:
                yield from (rule.at(i) for i in range(n_layer))
            else:
                yield rule

    def ignored_names(self, n_layer: int) -> set[str]:
        return {name.format(i=i) for name in self.ignored for i in range(n_layer)}


def interleave_rotary(rows: torch.Tensor, n_head: int) -> torch.Tensor:
    """lmforge's (= HF's) "rotate half" q / k rows -> llama.cpp's interleaved pairs, per head:
    within a head, rows [x0..x(h/2-1), y0..y(h/2-1)] become [x0, y0, x1, y1, ...] (the
    permutation llama.cpp's convert_hf_to_gguf.py applies to Llama's attn_q / attn_k).

        >>> interleave_rotary(torch.arange(8), 2).tolist()     # 2 heads of 4 rows
        [0, 2, 1, 3, 4, 6, 5, 7]
    """
    shape = rows.shape
    return rows.reshape(n_head, 2, shape[0] // n_head // 2, *shape[1:]).transpose(1, 2).reshape(shape)


def deinterleave_rotary(rows: torch.Tensor, n_head: int) -> torch.Tensor:
    """The inverse of `interleave_rotary`: llama.cpp's interleaved q / k rows -> lmforge's."""
    shape = rows.shape
    return rows.reshape(n_head, shape[0] // n_head // 2, 2, *shape[1:]).transpose(1, 2).reshape(shape)


def refuse(field: str, value: Any, why: str) -> ConfigError:
    """The error for a config field lmforge (or HF) cannot represent, naming the field."""
    return ConfigError(f"{field}={value!r} is not supported: {why}")


def hf_value(hf: dict[str, Any], field: str, default: Any) -> Any:
    """A field of an HF config.json, with transformers' default when absent (or null)."""
    value = hf.get(field)
    return default if value is None else value


def attention_rate(hf: dict[str, Any], field: str, default: float, dropout: float) -> float | None:
    """An HF attention-dropout field as lmforge's `attention_dropout`: None (follow `dropout`) when equal to it."""
    rate = hf_value(hf, field, default)
    return None if rate == dropout else rate


def qkv_rows(c: ModelConfig) -> tuple[int, int, int]:
    """Rows of q, k and v in lmforge's fused `qkv` (k and v are n_kv_head heads wide)."""
    return c.n_head * c.head_dim, c.kv_heads * c.head_dim, c.kv_heads * c.head_dim


def gate_up_rows(c: ModelConfig) -> tuple[int, int]:
    """Rows of gate and up in lmforge's fused SwiGLU `fc`."""
    return c.ff_dim, c.ff_dim


def weight_and_bias(ours: str, hf: str, **kw) -> tuple[Rule, Rule]:
    """The two rules of a Linear or LayerNorm: `ours`.weight <-> `hf`.weight, and the bias."""
    return Rule(ours + ".weight", hf + ".weight", **kw), Rule(ours + ".bias", hf + ".bias")


# HF activation names (GPT-2's activation_function, BERT's hidden_act) <-> lmforge's mlp;
# "gelu_new" is the tanh approximation GPT-2 was trained with
ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu", "relu": "relu"}
EXPORTED_ACTIVATION = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu"}


def activation_from_hf(hf: dict[str, Any], field: str, default: str) -> str:
    """lmforge's mlp for the activation named in config.json `field`, or the error naming it."""
    act = hf_value(hf, field, default)
    if act not in ACTIVATIONS:
        raise refuse(field, act, f"lmforge's MLP supports {', '.join(ACTIVATIONS)}")
    return ACTIVATIONS[act]


def activation_to_hf(c: ModelConfig, architecture: str) -> str:
    if c.mlp not in EXPORTED_ACTIVATION:
        raise refuse("mlp", c.mlp, f"{architecture}'s MLP is one of {', '.join(EXPORTED_ACTIVATION)}")
    return EXPORTED_ACTIVATION[c.mlp]


def require_hf(hf: dict[str, Any], rules: tuple[tuple[str, Any, str], ...]) -> None:
    """(field, the only value lmforge can import, why) for HF config.json fields: refuse others."""
    for field, needed, why in rules:
        if hf_value(hf, field, needed) != needed:
            raise refuse(field, hf[field], why)


def require_config(c: ModelConfig, rules: tuple[tuple[str, Any, str], ...]) -> None:
    """(field, the only value the HF architecture can hold, why) for lmforge config fields."""
    for field, needed, why in rules:
        if getattr(c, field) != needed:
            raise refuse(field, getattr(c, field), why)


def require_full_heads(c: ModelConfig, architecture: str) -> None:
    """Refuse grouped-query heads for an architecture with a key/value head per query head."""
    if c.kv_heads != c.n_head:
        raise refuse("n_kv_head", c.n_kv_head, f"{architecture} has as many key/value heads as query heads")


def own_tensors(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor the model stores, tied copies (lm_head = tok_emb) once."""
    seen: set[int] = set()
    out = {}
    for name, t in model.state_dict(keep_vars=True).items():
        if id(t) not in seen:
            seen.add(id(t))
            out[name] = tuple(t.shape)
    return out


def to_lmforge(arch: Architecture, config: ModelConfig, model: nn.Module, names: set[str],
               shape_of: Callable[[str], tuple[int, ...]], read: Callable[[str], torch.Tensor],
               source: str, progress: bool = False) -> dict[str, torch.Tensor]:
    """Convert an HF checkpoint (its tensor `names`, read one at a time) into lmforge's names
    for `model` (built from `config`, on the meta device). Every HF tensor's shape is checked
    before anything is read; every HF tensor must be used, tied away, or listed as ignored."""
    own = own_tensors(model)
    tied = set(model.state_dict()) - set(own)
    rules = [r for r in arch.rules(config.n_layer) if r.ours in own]
    uncovered = set(own) - {r.ours for r in rules}
    assert not uncovered, f"the {arch.name} key table has no rule for {sorted(uncovered)}"
    for rule in rules:
        for name, shape in zip(rule.hf, rule.hf_shapes(own[rule.ours], config)):
            if name not in names:
                raise ModelDirError(f"{source} has no tensor {name!r} (shape {shape}), which config.json implies; "
                                    f"the weights and config.json come from different models")
            if tuple(shape_of(name)) != shape:
                raise ModelDirError(f"{source}: tensor {name!r} has shape {tuple(shape_of(name))} but config.json "
                                    f"implies {shape}; the weights and config.json come from different models")
    used = {name for r in rules for name in r.hf}
    droppable = {name for r in arch.rules(config.n_layer) if r.ours in tied for name in r.hf}
    unexpected = sorted(names - used - droppable - arch.ignored_names(config.n_layer))
    if unexpected:
        raise ModelDirError(f"{source} holds tensors a {arch.name} model with this config.json has no place for: "
                            f"{unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}; the weights and "
                            f"config.json come from different models")
    out = {}
    for rule in tqdm(rules, desc="converting", unit="tensor", disable=not progress):
        parts = [read(name) for name in rule.hf]
        if rule.rotary:
            parts = [p if n is None else deinterleave_rotary(p, n) for p, n in zip(parts, rule.rotary(config))]
        if rule.transpose:
            parts = [p.t() for p in parts]                      # (in, out) -> (out, in)
        out[rule.ours] = torch.cat(parts) if len(parts) > 1 else parts[0].contiguous()
    return out


def to_hf(arch: Architecture, config: ModelConfig, own: dict[str, tuple[int, ...]],
          weights: dict[str, torch.Tensor], progress: bool = False) -> dict[str, torch.Tensor]:
    """Convert lmforge `weights` (already checked against the model's `own_tensors`) to HF names.
    Tensors are taken out of `weights` as they are converted, so at most one extra tensor is
    alive at a time."""
    out = {}
    for rule in tqdm(list(arch.rules(config.n_layer)), desc="converting", unit="tensor", disable=not progress):
        if rule.ours not in own:
            continue                                        # a bias of a bias-free model, a tied head
        t = weights.pop(rule.ours)
        if rule.vocab_rows and t.shape[0] != config.vocab_size:
            t = t[: config.vocab_size].clone()              # drop the rows padding the vocabulary
        parts = t.split(rule.part_rows(t.shape[0], config)) if len(rule.hf) > 1 else (t,)
        if rule.rotary:
            parts = [p if n is None else interleave_rotary(p, n) for p, n in zip(parts, rule.rotary(config))]
        for name, part in zip(rule.hf, parts):
            part = part.t() if rule.transpose else part    # (out, in) -> (in, out)
            out[name] = part.clone(memory_format=torch.contiguous_format) if len(parts) > 1 else part.contiguous()
    return out


def fitting_architecture(architectures: dict[str, "Architecture"], config, format_name: str
                         ) -> tuple["Architecture", dict[str, Any]]:
    """The first of `architectures` whose `config_to_hf` accepts `config`, with the fields it
    gives; else an error that says why each one refused."""
    reasons = []
    for arch in architectures.values():
        try:
            return arch, arch.config_to_hf(config)
        except ConfigError as e:
            reasons.append(f"as {arch.name}: {e}")
    raise ConfigError(f"no {format_name} architecture lmforge exports can hold this model — " + "; ".join(reasons))

