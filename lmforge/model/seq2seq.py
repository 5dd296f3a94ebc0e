"""Encoder-decoder model (the original Transformer, T5-like): a bidirectional `Transformer`
over the source, a causal `Transformer` with cross attention over the target, and an LM head.

With `transformer-base` it is "Attention Is All You Need": sinusoidal positions, post-norm,
ReLU, embeddings scaled by sqrt(d_model), one vocabulary whose table is shared by encoder,
decoder and output head. `target_vocab_size` gives the target its own table (two tokenizers).

    memory = model.encode(src, src_valid)                        # (B, S, d)
    logits = model.decode(tgt, memory=memory, memory_valid=src_valid)   # (B, T, target vocab)
    logits = model(src, tgt, src_valid=src_valid)                 # both (teacher forcing)

Decoding: `setup_cache(batch, max_len, memory=memory)` projects the encoder output into every
cross attention's keys/values once; then `decode(token, memory_valid=..., input_pos=slot)`.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from ..config import ModelConfig
from .family import FamilyModel
from .linear import Linear
from .transformer import Transformer


class Seq2SeqLM(FamilyModel):
    family = "seq2seq"

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        src_emb = nn.Embedding(config.padded_vocab_size, config.d_model)
        shared = config.target_vocab_size is None
        tgt_emb = src_emb if shared else nn.Embedding(config.padded_tgt_vocab_size, config.d_model)
        self.encoder = Transformer(config, causal=False, n_layer=config.encoder_layers, embed=src_emb)
        self.decoder = Transformer(config, causal=True, cross=True, embed=tgt_emb)
        self.lm_head = Linear(config.d_model, config.padded_tgt_vocab_size, bias=False)
        self.finish_init()

    def tie_weights(self) -> None:
        """The output head shares the target embedding (which, with one vocabulary, is also the
        source embedding: the same module sits in encoder and decoder)."""
        if self.config.tie_embeddings:
            self.lm_head.weight = self.decoder.tok_emb.weight

    def encode(self, src: torch.Tensor, src_valid: torch.Tensor | None = None) -> torch.Tensor:
        """src (B, S) -> memory (B, S, d); src_valid (B, S) False at padding."""
        return self.encoder(src, key_valid=src_valid)

    def decode(self, tgt: torch.Tensor, *, memory: torch.Tensor | None = None,
               memory_valid: torch.Tensor | None = None, last_only: bool = False, **kw) -> torch.Tensor:
        """tgt (B, T) -> logits (B, T, target vocab). Other keywords (input_pos, pos_ids,
        key_valid) go to the decoder `Transformer`."""
        h = self.decoder(tgt, memory=memory, memory_valid=memory_valid, **kw)   # (B, T, d)
        if last_only:
            h = h[:, -1:]
        logits = self.lm_head(h)
        return logits[..., : self.config.tgt_vocab_size]

    def forward(self, src: torch.Tensor, tgt: torch.Tensor, *, src_valid: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher forcing: src (B, S), tgt (B, T) decoder inputs -> logits (B, T, target vocab)."""
        return self.decode(tgt, memory=self.encode(src, src_valid), memory_valid=src_valid)

    # ---- decoding caches ----------------------------------------------------------------
    def setup_cache(self, batch_size: int, max_len: int | None = None, dtype: torch.dtype | None = None,
                    memory: torch.Tensor | None = None) -> None:
        self.decoder.setup_cache(batch_size, max_len or self.config.context_length, dtype, memory=memory)

    def reorder_cache(self, index: torch.Tensor) -> None:
        self.decoder.reorder_cache(index)

    def clear_cache(self) -> None:
        self.decoder.clear_cache()

    def lookup_tables(self) -> list[nn.Module | None]:
        """Position and segment tables; the token tables unless they are the output head too."""
        e, d = self.encoder, self.decoder
        tables = [getattr(e, "pos_emb", None), getattr(d, "pos_emb", None), e.type_emb, d.type_emb]
        if e.tok_emb is not d.tok_emb or not self.config.tie_embeddings:
            tables.append(e.tok_emb)          # the source table is only a lookup unless it is the head
        if not self.config.tie_embeddings:
            tables.append(d.tok_emb)
        return tables
