"""Byte-level BPE (GPT-2 style) trained on the user's text with HF `tokenizers`.

Every string maps to bytes first, so any UTF-8 text (Chinese, emoji) round-trips exactly.
The vocabulary holds the 5 special tokens (ids 0-4: pad, bos, eos, unk, mask), the 256 byte symbols, then
merges.
"""

from __future__ import annotations

from typing import Iterable

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from ..errors import ConfigError
from .base import SPECIAL_TOKENS, Tokenizer, split_long_words

MIN_BPE_VOCAB = len(SPECIAL_TOKENS) + 256


def train_bpe_tokenizer(texts: Iterable[str], vocab_size: int = 8192, min_frequency: int = 2,
                        show_progress: bool = False) -> Tokenizer:
    """Train a byte-level BPE tokenizer of `vocab_size` tokens on an iterable of text chunks."""
    if vocab_size < MIN_BPE_VOCAB:
        raise ConfigError(f"vocab_size={vocab_size} cannot hold the {len(SPECIAL_TOKENS)} special tokens and "
                          f"the 256 byte symbols of a byte-level BPE; use --vocab-size {MIN_BPE_VOCAB} or more")
    hf = HFTokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, show_progress=show_progress,
        special_tokens=list(SPECIAL_TOKENS.values()),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    hf.train_from_iterator(split_long_words(texts), trainer=trainer)
    return Tokenizer(hf, "bpe")
