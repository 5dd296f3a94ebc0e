"""Sequence-to-sequence pairs (translation, summarisation): source and target texts encoded for
an encoder-decoder, and the target-side tokenizer of a model directory.

    source: text <eos>                    (encoder input, right-padded)
    target: <bos> text <eos>              decoder input = all but the last token,
                                          labels = all but the first (-100 at padding)

One vocabulary (default): one tokenizer trained on both sides, one embedding table shared by
encoder, decoder and output head. `--separate-vocab`: a tokenizer per side; the target one is
stored in `target_tokenizer/` inside the model directory.
"""

from __future__ import annotations

from pathlib import Path

from ..tokenizers import Tokenizer

TARGET_TOKENIZER_DIR = "target_tokenizer"


def load_target_tokenizer(model_dir: str | Path, source: Tokenizer) -> Tokenizer:
    """The target-side tokenizer of a seq2seq model directory (the source one when shared)."""
    d = Path(model_dir) / TARGET_TOKENIZER_DIR
    return Tokenizer.load(d) if d.is_dir() else source


def encode_pairs(src_tok: Tokenizer, tgt_tok: Tokenizer, sources: list[str], targets: list[str], max_len: int
                 ) -> tuple[list[list[int]], list[list[int]], int]:
    """(source ids, target ids with <bos>/<eos>, number of pairs truncated to `max_len`)."""
    eos_s = [src_tok.eos_id] if src_tok.eos_id is not None else []
    truncated = 0
    src_ids, tgt_ids = [], []
    for s, t in zip(src_tok.encode_batch(sources), tgt_tok.encode_batch(targets)):
        if len(s) + len(eos_s) > max_len or len(t) + 1 > max_len:
            truncated += 1
        src_ids.append(s[: max_len - len(eos_s)] + eos_s)
        tgt_ids.append([tgt_tok.bos_id] + t[: max_len - 1] + [tgt_tok.eos_id])   # decoder input <= max_len
    return src_ids, tgt_ids, truncated


def source_ids(tokenizer: Tokenizer, text: str, max_len: int | None = None) -> list[int]:
    """One source text as the encoder reads it: its ids then <eos>, the ids cut to fit `max_len`
    when given (as `encode_pairs` fits them for training)."""
    eos = [tokenizer.eos_id] if tokenizer.eos_id is not None else []
    ids = tokenizer.encode(text)
    return (ids if max_len is None else ids[: max_len - len(eos)]) + eos
