"""Character-level tokenizer with byte fallback.

The vocabulary is the 5 special tokens, the 256 byte symbols <0x00>..<0xFF>, then every
character seen in the training text (most frequent first). A character never seen is
encoded as its UTF-8 bytes, so any text round-trips: decode(encode(x)) == x.

It is stored as an HF `tokenizers` BPE model with no merges and byte fallback, so it loads
with the same code (and in `transformers`) as the other kinds.

    >>> tok = train_char_tokenizer(["abba"])
    >>> tok.encode("ab")          # specials 0-4, bytes 5-260, then 'a', 'b' by frequency
    [261, 262]
    >>> tok.decode(tok.encode("a€"))
    'a€'
"""

from __future__ import annotations

from collections import Counter
from typing import Iterable

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models

from .base import SPECIAL_TOKENS, Tokenizer


def byte_token(b: int) -> str:
    return f"<0x{b:02X}>"


def train_char_tokenizer(texts: Iterable[str], max_chars: int | None = None) -> Tokenizer:
    """Build a char tokenizer from an iterable of text chunks (streamed; only counts are kept).

    max_chars caps the character vocabulary (rarer characters fall back to bytes)."""
    counts: Counter[str] = Counter()
    for t in texts:
        counts.update(t)
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS.values())}
    for b in range(256):
        vocab[byte_token(b)] = len(vocab)
    for ch, _ in counts.most_common(max_chars):
        vocab.setdefault(ch, len(vocab))
    hf = HFTokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True, unk_token=SPECIAL_TOKENS["unk"]))
    hf.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    hf.add_special_tokens(list(SPECIAL_TOKENS.values()))
    return Tokenizer(hf, "char")
