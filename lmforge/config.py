"""ModelConfig: every architectural choice of an lmforge model, plus named presets.

A family (decoder, encoder, seq2seq) is a thin assembly of the shared blocks in
`lmforge.model.blocks`; the config says which block variants to use. Presets are derived
from a few bases with `derive`, never copied; an unknown name fails with the known ones.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .options import bounds, between, option, validate

FAMILIES = ("decoder", "encoder", "seq2seq")
MLPS = ("gelu", "gelu_tanh", "relu", "swiglu")
NORMS = ("layernorm", "rmsnorm")
POSITIONS = ("learned", "sinusoidal", "rope", "none")
POOLINGS = ("auto", "cls", "mean", "last")


@dataclass
class ModelConfig:
    family: str = "decoder"          # decoder (GPT, Llama) | encoder (BERT) | seq2seq (original Transformer)
    vocab_size: int = 256            # the tokenizer's vocabulary; set from the tokenizer when training
    pad_vocab_multiple: int = 64     # embedding rows padded to a multiple of this for fast matmuls; logits are cut back to vocab_size
    context_length: int = 256        # longest sequence the model attends over (the KV cache size)
    n_layer: int = 4                 # transformer blocks (the decoder's, for seq2seq)
    n_head: int = 4                  # query heads
    n_kv_head: int | None = None     # key/value heads: < n_head gives grouped-query attention; None means n_head
    d_model: int = 128               # residual stream width
    d_ff: int | None = None          # MLP hidden width; None: 4*d_model for GELU/ReLU, 8/3*d_model (rounded up to 64) for SwiGLU
    mlp: str = "gelu"                # gelu (exact, BERT) | gelu_tanh (GPT-2) | relu (original Transformer) | swiglu (Llama)
    norm: str = "layernorm"          # layernorm (GPT-2, BERT) | rmsnorm (Llama)
    norm_eps: float = 1e-5           # epsilon inside the norms
    norm_position: str = "pre"       # pre: x + f(norm(x)) (GPT-2, Llama) | post: norm(x + f(x)) (original Transformer, BERT)
    position: str = "learned"        # learned (GPT-2, BERT) | sinusoidal (original Transformer) | rope (Llama) | none
    rope_theta: float = 10000.0      # RoPE base frequency
    bias: bool = True                # biases in the Linear layers and norms (GPT-2: yes, Llama: no)
    dropout: float = 0.0             # dropout on embeddings, residual branches and the classifier head (training only)
    attention_dropout: float | None = None  # dropout on the attention weights; None: the same as dropout. 0 keeps
                                     # CPU attention on its fused kernel (any other rate takes the slower math path)
    tie_embeddings: bool = True      # the output head shares the token-embedding matrix
    init_std: float = 0.02           # normal init std; residual output projections get std / sqrt(2 * n_layer)
    quantization: dict | None = None # weight-only quantization written by `lmforge quantize`: {"bits": 8 | 4,
                                     # "group_size": int4 group or None, "modules": [names of quantized Linears]}
    # ---- encoder (BERT) and encoder-decoder (original Transformer) choices; the defaults leave a decoder as above
    type_vocab_size: int = 0         # segment (token-type) embeddings added to the tokens: 2 for BERT; 0 disables
    embed_norm: bool = False         # a norm right after the summed embeddings (BERT); usually with post-norm blocks
    embed_scale: bool = False        # multiply token embeddings by sqrt(d_model) (original Transformer)
    pooler: bool = False             # encoder: dense + tanh over the first ([CLS]) state, as BERT's pooler
    mlm_head: bool = True            # encoder: masked-LM head (dense + act + norm + tied decoder + bias); False for
                                     # a bare encoder (e.g. sentence embeddings)
    n_encoder_layer: int | None = None    # seq2seq: encoder blocks; None means n_layer
    target_vocab_size: int | None = None  # seq2seq: target vocabulary when it has its own tokenizer; None shares
                                          # vocab_size and one embedding table between source and target
    labels: list[str] = dataclasses.field(default_factory=list)  # classification: class names (index = class id);
                                                                 # non-empty adds a classification head
    pooling: str = "auto"            # classification: cls (first token, via the pooler if any) | mean (over real
                                     # tokens) | last (last real token); auto = cls for encoders, last for decoders

    def __post_init__(self) -> None:
        self.validate()

    # ---- derived sizes -------------------------------------------------------------
    @property
    def kv_heads(self) -> int:
        return self.n_kv_head or self.n_head

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_head

    @property
    def ff_dim(self) -> int:
        if self.d_ff:
            return self.d_ff
        if self.mlp == "swiglu":
            return 64 * math.ceil(int(8 * self.d_model / 3) / 64)
        return 4 * self.d_model

    @property
    def padded_vocab_size(self) -> int:
        return self._padded(self.vocab_size)

    @property
    def tgt_vocab_size(self) -> int:
        """The vocabulary the (seq2seq) output head predicts."""
        return self.target_vocab_size or self.vocab_size

    @property
    def padded_tgt_vocab_size(self) -> int:
        return self._padded(self.tgt_vocab_size)

    def _padded(self, n: int) -> int:
        m = max(1, self.pad_vocab_multiple)
        return m * math.ceil(n / m)

    @property
    def attn_dropout(self) -> float:
        """The attention weights' dropout rate (`attention_dropout`, or `dropout` when unset)."""
        return self.dropout if self.attention_dropout is None else self.attention_dropout

    @property
    def encoder_layers(self) -> int:
        return self.n_encoder_layer or self.n_layer

    @property
    def pool_method(self) -> str:
        """How classification pools a sequence into one vector (`pooling` with auto resolved)."""
        if self.pooling != "auto":
            return self.pooling
        return "cls" if self.family == "encoder" else "last"

    def validate(self) -> None:
        def need(ok: bool, msg: str) -> None:
            if not ok:
                raise ConfigError(msg)
        need(self.family in FAMILIES, f"family={self.family!r} is unknown; use one of {', '.join(FAMILIES)}")
        need(self.mlp in MLPS, f"mlp={self.mlp!r} is unknown; use one of {', '.join(MLPS)}")
        need(self.norm in NORMS, f"norm={self.norm!r} is unknown; use one of {', '.join(NORMS)}")
        need(self.position in POSITIONS, f"position={self.position!r} is unknown; use one of {', '.join(POSITIONS)}")
        need(self.norm_position in ("pre", "post"), f"norm_position={self.norm_position!r}; use pre or post")
        for name in ("vocab_size", "context_length", "n_layer", "n_head", "d_model"):
            need(getattr(self, name) > 0, f"{name}={getattr(self, name)} must be positive")
        need(self.d_model % self.n_head == 0,
             f"d_model={self.d_model} is not divisible by n_head={self.n_head}; pick n_head dividing d_model")
        need(self.n_head % self.kv_heads == 0,
             f"n_head={self.n_head} is not a multiple of n_kv_head={self.kv_heads}; pick n_kv_head dividing n_head")
        need(self.position != "rope" or self.head_dim % 2 == 0,
             f"rotary positions need an even head size, got d_model/n_head={self.head_dim}")
        need(0.0 <= self.dropout < 1.0, f"dropout={self.dropout} must be in [0, 1)")
        need(0.0 <= self.attn_dropout < 1.0, f"attention_dropout={self.attention_dropout} must be in [0, 1)")
        need(self.quantization is None or self.quantization.get("bits") in (4, 8),
             f"quantization={self.quantization} needs bits 4 or 8; re-run `lmforge quantize` on the original model")
        need(self.pooling in POOLINGS, f"pooling={self.pooling!r} is unknown; use one of {', '.join(POOLINGS)}")
        need(self.type_vocab_size >= 0, f"type_vocab_size={self.type_vocab_size} must be >= 0 (0 disables)")
        need(len(set(self.labels)) == len(self.labels), f"labels {self.labels} repeat a name; class names must differ")
        need(not self.labels or len(self.labels) >= 2,
             f"labels={self.labels}: a classifier needs at least 2 classes")
        need(self.target_vocab_size is None or self.family == "seq2seq",
             f"target_vocab_size is only for seq2seq models, not family={self.family!r}")

    # ---- serialisation -------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "config") -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known - {"lmforge_version", "architecture"})
        if unknown:
            raise ConfigError(f"{source} has unknown fields {unknown}; it may come from a newer lmforge "
                              f"or another tool (use `lmforge import` for Hugging Face checkpoints)")
        values = {k: v for k, v in d.items() if k in known}
        hints = typing.get_type_hints(cls)
        for k, v in values.items():
            if not _has_type(v, hints[k]):
                raise ConfigError(f"{source}: field {k!r} is {v!r} ({type(v).__name__}) but must be of type "
                                  f"{_type_name(hints[k])}; restore the file or re-create the model directory")
        return cls(**values)

    def save(self, path: str | Path) -> None:
        from .modeldir import atomic_write_text
        atomic_write_text(Path(path), json.dumps({"lmforge_version": 1, **self.to_dict()}, indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        from .fileio import read_json
        path = Path(path)
        d = read_json(path, "restore it or re-create the model directory", ConfigError)
        if not isinstance(d, dict):
            raise ConfigError(f"{path} holds a JSON {type(d).__name__}, not an object of config fields; restore it "
                              f"or re-create the model directory")
        return cls.from_dict(d, source=str(path))


@dataclass
class ModelOverridesConfig:
    """The ModelConfig fields a training run may change from its preset (None: the preset's)."""
    context_length: int | None = option(None, "override the preset's context length", fixed=True, check=bounds(1))
    n_layer: int | None = option(None, "override the preset's number of layers", fixed=True, check=bounds(1))
    n_head: int | None = option(None, "override the preset's number of attention heads", fixed=True,
                                check=bounds(1))
    n_kv_head: int | None = option(None, "override the preset's key/value heads (grouped-query attention)",
                                   fixed=True, check=bounds(1))
    d_model: int | None = option(None, "override the preset's width", fixed=True, check=bounds(1))
    dropout: float | None = option(None, "override the preset's dropout", fixed=True,
                                   check=between(0, 1, high_open=True))
    attention_dropout: float | None = option(None, "dropout on the attention weights (0 keeps CPU attention on "
                                                   "its fast fused kernel)", fixed=True,
                                             check=between(0, 1, high_open=True),
                                             unset="the same as --dropout")
    pooling: str | None = option(None, "how a classifier pools a sequence into one vector: mean (over the real "
                                       "tokens), cls (first token, through BERT's pooler if any), last (last real "
                                       "token)", choices=POOLINGS, fixed=True,
                                 unset="the model's: mean for an encoder lmforge builds, cls for an imported BERT, "
                                       "last for a decoder")

    def __post_init__(self) -> None:
        validate(self)          # before any work: a run's flags, its run file and the API alike

    def given(self) -> dict[str, Any]:
        """{field: value} of the overrides that are set."""
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def _has_type(value: Any, tp: Any) -> bool:
    """Whether a JSON value fits a config field's annotation (int, float, str, bool, list[str],
    dict, or one of those | None)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, t) for t in typing.get_args(tp))
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if origin is list:
        (item,) = typing.get_args(tp) or (Any,)
        return isinstance(value, list) and (item is Any or all(_has_type(v, item) for v in value))
    if origin is dict or tp is dict:
        return isinstance(value, dict)
    return isinstance(value, tp) if isinstance(tp, type) else True


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def derive(base: ModelConfig, **changes: Any) -> ModelConfig:
    """A new config from `base` with some fields changed (validated)."""
    return dataclasses.replace(base, **changes)


_GPT2 = ModelConfig(vocab_size=50257, context_length=1024, n_layer=12, n_head=12, d_model=768,
                    mlp="gelu_tanh", norm="layernorm", position="learned", bias=True, tie_embeddings=True)
_LLAMA = ModelConfig(vocab_size=32000, context_length=2048, n_layer=16, n_head=32, n_kv_head=8, d_model=2048,
                     d_ff=8192, mlp="swiglu", norm="rmsnorm", norm_eps=1e-5, position="rope", rope_theta=10000.0,
                     bias=False, tie_embeddings=False)
# BERT: post-norm, a LayerNorm after word + position + segment embeddings, exact GELU, pooler, tied MLM head
_BERT = ModelConfig(family="encoder", vocab_size=30522, context_length=512, n_layer=12, n_head=12, d_model=768,
                    mlp="gelu", norm="layernorm", norm_eps=1e-12, norm_position="post", position="learned",
                    type_vocab_size=2, embed_norm=True, pooler=True, bias=True, tie_embeddings=True)
# "Attention Is All You Need" (base): post-norm, sinusoidal positions, ReLU, embeddings scaled by sqrt(d), one
# vocabulary shared by source, target and output head
_TRANSFORMER = ModelConfig(family="seq2seq", vocab_size=37000, context_length=512, n_layer=6, n_head=8, d_model=512,
                           d_ff=2048, mlp="relu", norm="layernorm", norm_position="post", position="sinusoidal",
                           embed_scale=True, dropout=0.1, bias=True, tie_embeddings=True)

PRESETS: dict[str, ModelConfig] = {
    # GPT-2 shapes
    "gpt2-124m": _GPT2,
    "gpt2-350m": derive(_GPT2, n_layer=24, n_head=16, d_model=1024),
    "gpt2-774m": derive(_GPT2, n_layer=36, n_head=20, d_model=1280),
    "gpt2-1.5b": derive(_GPT2, n_layer=48, n_head=25, d_model=1600),
    # small GPT-style models that train in minutes on 2 CPU cores
    "gpt-tiny": derive(_GPT2, vocab_size=256, context_length=64, n_layer=2, n_head=2, d_model=64),
    "gpt-mini": derive(_GPT2, vocab_size=256, context_length=128, n_layer=4, n_head=4, d_model=128),
    "gpt-small": derive(_GPT2, vocab_size=256, context_length=256, n_layer=6, n_head=6, d_model=384),
    # Llama shapes (grouped-query attention, RoPE, RMSNorm, SwiGLU, no biases, untied head)
    "llama-1b": _LLAMA,
    "llama-7b": derive(_LLAMA, n_layer=32, n_head=32, n_kv_head=32, d_model=4096, d_ff=11008, context_length=4096),
    "llama-tiny": derive(_LLAMA, vocab_size=256, context_length=64, n_layer=2, n_head=4, n_kv_head=2, d_model=64,
                         d_ff=None),
    "llama-mini": derive(_LLAMA, vocab_size=256, context_length=128, n_layer=4, n_head=4, n_kv_head=2, d_model=128,
                         d_ff=None),
    # BERT shapes; bert-tiny / bert-mini are the sizes of Google's BERT miniatures with a small default vocabulary
    "bert-base": _BERT,
    "bert-large": derive(_BERT, n_layer=24, n_head=16, d_model=1024),
    "bert-tiny": derive(_BERT, vocab_size=256, context_length=128, n_layer=2, n_head=2, d_model=128),
    "bert-mini": derive(_BERT, vocab_size=256, context_length=128, n_layer=4, n_head=4, d_model=256),
    # encoder-decoders: the original Transformer, and small pre-norm ones that train in minutes on 2 CPU cores
    "transformer-base": _TRANSFORMER,
    "transformer-big": derive(_TRANSFORMER, n_head=16, d_model=1024, d_ff=4096, dropout=0.3),
    "seq2seq-tiny": derive(_TRANSFORMER, vocab_size=256, context_length=64, n_layer=2, n_head=2, d_model=64,
                           d_ff=None, mlp="gelu", norm_position="pre", dropout=0.0),
    "seq2seq-mini": derive(_TRANSFORMER, vocab_size=256, context_length=128, n_layer=3, n_head=4, d_model=192,
                           d_ff=None, mlp="gelu", norm_position="pre", dropout=0.1),
}


def fresh_pooling(config: ModelConfig) -> ModelConfig:
    """A model built from scratch: an encoder whose pooling is auto pools by mean. lmforge never trains
    BERT's [CLS] pooler (no next-sentence task), and mean pooling measured better for its classifiers
    (docs/finetuning.md, "Pooling"); --pooling chooses otherwise."""
    return dataclasses.replace(config, pooling="mean") if config.family == "encoder" and config.pooling == "auto" \
        else config


def get_preset(name: str, **overrides: Any) -> ModelConfig:
    """The named preset with `overrides` applied; unknown names list the known ones."""
    if name not in PRESETS:
        import difflib
        close = difflib.get_close_matches(name, PRESETS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"unknown preset {name!r}{hint}; known presets: {', '.join(sorted(PRESETS))}")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return derive(PRESETS[name], **overrides)
