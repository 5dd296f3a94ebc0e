"""Decoder-only causal language model (GPT-2, Llama): a causal `Transformer` + LM head
(+ a classification head over the last real token when config.labels is set)."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..config import ModelConfig
from .family import FamilyModel
from .heads import ClassificationHead, pool
from .linear import Linear
from .transformer import Transformer


class DecoderLM(FamilyModel):
    family = "decoder"

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        self.transformer = Transformer(config, causal=True)
        self.lm_head = Linear(config.d_model, config.padded_vocab_size, bias=False)
        self.classifier = ClassificationHead(config) if config.labels else None
        self.finish_init()

    def tie_weights(self) -> None:
        """Share the token embedding with the output head (again after loading weights)."""
        if self.config.tie_embeddings:
            self.lm_head.weight = self.transformer.tok_emb.weight

    def forward(self, idx: torch.Tensor, *, last_only: bool = False, head: str = "lm", **kw) -> torch.Tensor:
        """idx (B, T) -> logits (B, T, vocab_size), or (B, 1, vocab_size) with `last_only`;
        head="classify": class logits (B, C) (training goes through forward, so DDP sees it).

        Keyword arguments (pos_ids, key_valid, input_pos) go to `Transformer.forward`.
        """
        if head == "classify":
            return self.classify(idx, key_valid=kw.get("key_valid"))
        h = self.transformer(idx, **kw)          # (B, T, d)
        if last_only:
            h = h[:, -1:]
        logits = self.lm_head(h)                 # (B, T, padded_vocab)
        if self.config.padded_vocab_size != self.config.vocab_size:
            logits = logits[..., : self.config.vocab_size]
        return logits

    def hidden_states(self, idx: torch.Tensor, **kw) -> torch.Tensor:
        """(B, T, d) final hidden states (for classification heads and pooling)."""
        return self.transformer(idx, **kw)

    def classify(self, idx: torch.Tensor, *, key_valid: torch.Tensor | None = None) -> torch.Tensor:
        """idx (B, T) -> class logits (B, len(config.labels)), pooled at config.pool_method
        (by default the last real token, which has seen the whole text)."""
        assert self.classifier is not None, "config.labels is empty: this model has no classification head"
        h = self.transformer(idx, key_valid=key_valid)
        return self.classifier(pool(h, key_valid, self.config.pool_method))

    # ---- KV cache for decoding --------------------------------------------------------
    def setup_cache(self, batch_size: int, max_len: int | None = None, dtype: torch.dtype | None = None) -> None:
        self.transformer.setup_cache(batch_size, max_len or self.config.context_length, dtype)

    def reorder_cache(self, index: torch.Tensor) -> None:
        """Keep cache rows `index` (beam search)."""
        self.transformer.reorder_cache(index)

    def clear_cache(self) -> None:
        self.transformer.clear_cache()

    def lookup_tables(self) -> list[nn.Module | None]:
        """The position table and, when the head is untied, the token table."""
        t = self.transformer
        return [getattr(t, "pos_emb", None), None if self.config.tie_embeddings else t.tok_emb]
