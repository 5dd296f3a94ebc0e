"""WordPiece (BERT style) trained on the user's text with HF `tokenizers`.

Text is normalised (control characters removed, CJK characters split apart, optionally
lowercased and accents stripped), split on whitespace and punctuation, and each word is
written with the longest vocabulary pieces from its start ("playing" -> "play", "##ing").
A word with a character the vocabulary lacks becomes <unk>. Unlike char and byte-level BPE
it does not round-trip exactly: decoding joins words with single spaces. Ids are numbered
canonically (specials, then the pieces sorted), so they depend only on the vocabulary.

    >>> tok = train_wordpiece_tokenizer(["the player plays; players played"] * 50, vocab_size=60)
    >>> tok.decode(tok.encode("players play"))
    'players play'
"""

from __future__ import annotations

from typing import Iterable

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, normalizers, pre_tokenizers, trainers

from ..errors import ConfigError
from .base import SPECIAL_TOKENS, Tokenizer, split_long_words

MIN_WORDPIECE_VOCAB = len(SPECIAL_TOKENS) + 1


def train_wordpiece_tokenizer(texts: Iterable[str], vocab_size: int = 8192, lowercase: bool = False,
                              min_frequency: int = 2, show_progress: bool = False) -> Tokenizer:
    """Train a WordPiece tokenizer of at most `vocab_size` tokens (the 5 specials first)."""
    if vocab_size < MIN_WORDPIECE_VOCAB:
        raise ConfigError(f"vocab_size={vocab_size} cannot hold the {len(SPECIAL_TOKENS)} special tokens and any "
                          f"word piece; use --vocab-size 1000 or more")
    hf = HFTokenizer(models.WordPiece(unk_token=SPECIAL_TOKENS["unk"], continuing_subword_prefix="##"))
    hf.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=lowercase,
                                               lowercase=lowercase)
    hf.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    hf.decoder = decoders.WordPiece(prefix="##", cleanup=True)
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        show_progress=show_progress, special_tokens=list(SPECIAL_TOKENS.values()),
                                        continuing_subword_prefix="##")
    hf.train_from_iterator(split_long_words(texts), trainer=trainer)
    # the trainer numbers "##" pieces in hash order (huggingface/tokenizers#1794), so ids differed between runs on
    # the same text; WordPiece encodes by vocabulary membership only, so renumber: specials, then sorted pieces.
    # (Which of several equally frequent merges make the cut can still vary: that is upstream's to fix.)
    specials = list(SPECIAL_TOKENS.values())
    pieces = sorted(t for t in hf.get_vocab() if t not in SPECIAL_TOKENS.values())
    hf.model = models.WordPiece({t: i for i, t in enumerate(specials + pieces)}, unk_token=SPECIAL_TOKENS["unk"],
                                continuing_subword_prefix="##")
    return Tokenizer(hf, "wordpiece")
