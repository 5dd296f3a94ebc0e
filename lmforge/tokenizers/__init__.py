"""Tokenizers: char (byte fallback), byte-level BPE, WordPiece; all stored as HF tokenizer.json."""

from __future__ import annotations

from typing import Iterable

from ..errors import ConfigError
from .base import SPECIAL_TOKENS, Tokenizer
from .bpe import train_bpe_tokenizer
from .char import train_char_tokenizer
from .wordpiece import train_wordpiece_tokenizer

TRAINERS = {"char": lambda texts, vocab_size, progress: train_char_tokenizer(texts),
            "bpe": lambda texts, vocab_size, progress: train_bpe_tokenizer(texts, vocab_size, show_progress=progress),
            "wordpiece": lambda texts, vocab_size, progress: train_wordpiece_tokenizer(texts, vocab_size,
                                                                                     show_progress=progress)}


def train_tokenizer(kind: str, texts: Iterable[str], vocab_size: int = 8192, progress: bool = False) -> Tokenizer:
    """Train a tokenizer of `kind` (see TRAINERS) on an iterable of text chunks; `progress` shows
    the BPE / WordPiece trainer's own bars (counting pairs, computing merges) after the reading."""
    if kind not in TRAINERS:
        raise ConfigError(f"unknown tokenizer kind {kind!r}; use one of {', '.join(TRAINERS)} "
                          f"or the path of a directory holding a tokenizer.json")
    return TRAINERS[kind](texts, vocab_size, progress)


load_tokenizer = Tokenizer.load

__all__ = ["Tokenizer", "SPECIAL_TOKENS", "TRAINERS", "train_tokenizer", "load_tokenizer",
           "train_char_tokenizer", "train_bpe_tokenizer", "train_wordpiece_tokenizer"]
