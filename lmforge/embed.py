"""Sentence embeddings: one vector per text, pooled from a model's final hidden states and
L2-normalised, which is how sentence-transformers embeds text with a model such as
all-MiniLM-L6-v2 (imported with `lmforge import`, it matches to a cosine of 0.9999).

Texts are encoded as for classification (`<bos> text <eos>` — [CLS] text [SEP] — for an
encoder, `text <eos>` for a decoder, cut to the context) and pooled by `pooling`: mean (the
average over real tokens), cls (the first token, through BERT's pooler when the model has one)
or last (the last real token); auto is the model's `pooling` (what an imported
sentence-transformers model declares; else cls for encoders, last for decoders).

    >>> lm = lmforge.load("runs/minilm")                                    # doctest: +SKIP
    >>> v = lm.embed(["A man is eating food.", "Someone is having a meal."])  # (2, 384)  # doctest: +SKIP
    >>> float(v[0] @ v[1])             # unit vectors: the dot product is the cosine  # doctest: +SKIP
    0.71
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from .config import POOLINGS
from .data.classify import encode_for_classification
from .errors import ConfigError
from .model.heads import pool
from .options import at_least, option, validate
from .tasks.classify import map_batches, segments


@dataclass
class EmbedConfig:
    """How texts become vectors: `Model.embed(texts, **fields)` and the `embed` verb's flags."""
    pooling: str = option("auto", "mean over the tokens, cls (first token, through BERT's pooler), last token; auto: "
                                  "the model's own (an imported sentence-transformers model's, else cls for encoders)",
                          choices=POOLINGS)
    normalize: bool = option(True, "scale every vector to length 1 (dot products are then cosine similarities)")
    batch_size: int = option(64, "texts per forward pass", check=at_least(1))

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise ConfigError(f"pooling={self.pooling!r} is unknown; use one of {', '.join(POOLINGS)}")
        validate(self)


def embed_texts(model, tokenizer, texts: list[str], pooling: str = "auto", normalize: bool = True,
                batch_size: int = 64) -> torch.Tensor:
    """(N, d) float32 vectors of `texts` from an encoder or decoder `model` (unit length when
    `normalize`; see `EmbedConfig`)."""
    config = model.config
    if config.family not in ("encoder", "decoder"):
        raise ConfigError(f"embeddings come from an encoder or a decoder model, not a {config.family}; use a "
                          f"bert-* (or an imported BERT such as all-MiniLM-L6-v2) or gpt-* / llama-* model")
    if pooling not in POOLINGS:
        raise ConfigError(f"pooling={pooling!r} is unknown; use one of {', '.join(POOLINGS)}")
    method = config.pool_method if pooling == "auto" else pooling
    ids, types, truncated = encode_for_classification(tokenizer, config.family, texts, None, config.context_length)
    if truncated:
        warnings.warn(f"{truncated} of {len(texts)} texts are longer than the model's context of "
                      f"{config.context_length} tokens; their embeddings cover the beginning only", stacklevel=2)

    def vectors(m, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        h = m.hidden_states(batch["x"], key_valid=batch["valid"], **segments(m, batch))        # (b, T, d)
        if config.family == "encoder":
            return m.pooled(h, batch["valid"], method)                                        # (b, d)
        return pool(h, batch["valid"], method)

    out = map_batches(model, ids, types, tokenizer.pad_id or 0, vectors, (config.d_model,), batch_size=batch_size)
    return F.normalize(out, dim=-1) if normalize else out
