"""Encoder-only model (BERT): a bidirectional `Transformer` + optional pooler, masked-LM head
and classification head.

With the `bert-*` presets it is BERT exactly: word + learned position + segment embeddings,
LayerNorm, post-norm blocks with exact GELU, a pooler (dense + tanh on [CLS]) and an MLM head
(dense + GELU + LayerNorm + decoder tied to the word embeddings + output bias). Every piece is
a config choice, so a from-scratch encoder can also be pre-norm, RoPE, RMSNorm, ...

    logits = model(idx, key_valid=valid)                     # (B, T, vocab) masked-LM logits
    logits = model(idx, select=masked)                        # (N, vocab) only where masked (B, T) is True
    class_logits = model(idx, key_valid=valid, head="classify")   # (B, len(config.labels))
    h = model(idx, key_valid=valid, head="hidden")            # (B, T, d)

Training goes through `forward` (so DDP sees every call); `classify` / `hidden_states` are the
same computations as methods.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..config import ModelConfig
from ..errors import ConfigError
from .family import FamilyModel
from .heads import ClassificationHead, MaskedLMHead, Pooler, pool
from .transformer import Transformer


class EncoderModel(FamilyModel):
    family = "encoder"

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.transformer = Transformer(config, causal=False)
        self.pooler = Pooler(config) if config.pooler else None
        self.mlm_head = MaskedLMHead(config) if config.mlm_head else None
        self.classifier = ClassificationHead(config) if config.labels else None
        self.finish_init()

    def tie_weights(self) -> None:
        """The MLM decoder shares the token embedding (again after loading weights)."""
        if self.mlm_head is not None and self.config.tie_embeddings:
            self.mlm_head.decoder.weight = self.transformer.tok_emb.weight

    def hidden_states(self, idx: torch.Tensor, *, key_valid: torch.Tensor | None = None,
                      type_ids: torch.Tensor | None = None, **kw) -> torch.Tensor:
        """idx (B, T) -> (B, T, d). key_valid (B, T): False at padding; type_ids: segments."""
        return self.transformer(idx, key_valid=key_valid, type_ids=type_ids, **kw)

    def mlm_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Hidden states (..., d) -> masked-LM logits (..., vocab_size)."""
        if self.mlm_head is None:
            raise ConfigError("this encoder has no masked-LM head (mlm_head=false in config.json); "
                              "use it for classification or embeddings, or train one with mlm_head=true")
        return self.mlm_head(h)[..., : self.config.vocab_size]

    def forward(self, idx: torch.Tensor, *, head: str = "mlm", select: torch.Tensor | None = None,
                key_valid: torch.Tensor | None = None, type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """idx (B, T) -> head "mlm": masked-LM logits (B, T, vocab_size) (as HF BertForMaskedLM),
        or (N, vocab_size) at the N positions where `select` (B, T) is True; "classify": class
        logits (B, C); "hidden": the final hidden states (B, T, d)."""
        if head == "classify":
            return self.classify(idx, key_valid=key_valid, type_ids=type_ids)
        h = self.hidden_states(idx, key_valid=key_valid, type_ids=type_ids)
        if head == "hidden":
            return h
        assert head == "mlm", f"unknown head {head!r}"
        return self.mlm_logits(h if select is None else h[select])

    def pooled(self, h: torch.Tensor, key_valid: torch.Tensor | None = None, method: str | None = None
               ) -> torch.Tensor:
        """(B, T, d) -> (B, d) by `method` (default config.pool_method); "cls" goes through the
        pooler when there is one."""
        method = method or self.config.pool_method
        v = pool(h, key_valid, method)
        if method == "cls" and self.pooler is not None:
            v = self.pooler(v)
        return v

    def classify(self, idx: torch.Tensor, *, key_valid: torch.Tensor | None = None,
                 type_ids: torch.Tensor | None = None) -> torch.Tensor:
        """idx (B, T) -> class logits (B, len(config.labels))."""
        assert self.classifier is not None, "config.labels is empty: this model has no classification head"
        h = self.hidden_states(idx, key_valid=key_valid, type_ids=type_ids)
        return self.classifier(self.pooled(h, key_valid))

    def lookup_tables(self) -> list[nn.Module | None]:
        """Position and segment tables, and the token table unless it is the MLM decoder too."""
        t = self.transformer
        tok_is_lookup = self.mlm_head is None or not self.config.tie_embeddings
        return [getattr(t, "pos_emb", None), t.type_emb, t.tok_emb if tok_is_lookup else None]
