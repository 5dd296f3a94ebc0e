"""Contamination of an evaluation set by the training data (the GPT-3 paper's 13-gram overlap,
Brown et al. 2020, Appendix C): which examples of an evaluation file share an n-gram with the
training shard, and what share of each example's n-grams the training data holds.

N-grams are of words, not tokens, so that the answer does not depend on the tokenizer (a 13-gram
of a character tokenizer would be 13 letters): both sides are lowercased and split into runs of
letters and digits (`\\w+`), punctuation and spacing dropped. The training side is DATA/train.bin
decoded document by document (documents end with <eos>), so no n-gram spans two documents. An
example with fewer than n words has no n-gram and is never counted as contaminated.

    >>> from lmforge import audit
    >>> audit.overlap("data/pydoc", against="test.jsonl").contaminated       # doctest: +SKIP
    [3, 17]
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm.auto import tqdm

from ..data.reading import iter_documents
from ..data.rows import table_format
from ..data.shards import load_split
from ..errors import ConfigError, DataError
from ..fileio import read_text
from ..options import at_least, option, validate
from ..tokenizers import Tokenizer

WORD = re.compile(r"\w+")
CHUNK = 1 << 20                 # training tokens decoded at a time


@dataclass
class OverlapConfig:
    against: str | None = option(None, "the evaluation file: text (one example per line) or a table (.jsonl, .csv, "
                                       ".tsv, .parquet, ...: one example per row, its --text-field)")
    n: int = option(13, "n-gram length in words (13 as in GPT-3)", check=at_least(1))
    text_field: str = option("text", "field (column) holding the text in a table")
    progress: bool = option(True, "show a progress bar")

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class ExampleOverlap:
    index: int                   # 0-based, in the file's order
    ngrams: int                  # distinct n-grams of the example
    found: int                   # of them, in the training data
    text: str

    @property
    def share(self) -> float:
        return self.found / self.ngrams if self.ngrams else 0.0


@dataclass
class OverlapResult:
    n: int
    examples: list[ExampleOverlap] = field(default_factory=list)

    @property
    def contaminated(self) -> list[int]:
        return [e.index for e in self.examples if e.found]

    @property
    def summary(self) -> str:
        short = sum(not e.ngrams for e in self.examples)
        return (f"{len(self.contaminated)} of {len(self.examples)} examples share a {self.n}-gram with the training "
                f"data" + (f" ({short} shorter than {self.n} words, not checked)" if short else ""))

    def to_dict(self) -> dict:
        return {"n": self.n, "contaminated": self.contaminated, "summary": self.summary,
                "examples": [{"index": e.index, "ngrams": e.ngrams, "found": e.found, "share": e.share}
                             for e in self.examples]}

    def table(self) -> str:
        rows = [f"{'example':>7} {'n-grams':>8} {'found':>6} {'share':>6}  text"]
        for e in self.examples:
            if e.found:
                text = e.text if len(e.text) <= 50 else e.text[:47] + "..."
                rows.append(f"{e.index:>7} {e.ngrams:>8} {e.found:>6} {e.share:>6.1%}  {text!r}")
        return "\n".join(rows + [self.summary])


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def read_examples(path: str | Path, text_field: str) -> list[str]:
    """The examples of an evaluation file: each non-blank line of a text file, each row of a table."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"evaluation file {path} does not exist; check the path")
    if table_format(path) is None:
        examples = [line for line in read_text(path).splitlines() if line.strip()]
    else:
        examples = [text for text, _ in iter_documents([path], text_field)]
    if not examples:
        raise DataError(f"{path} holds no examples")
    return examples


def training_documents(data_dir: str | Path, progress: bool) -> Iterator[str]:
    """The documents of the training shard, decoded (a document ends at <eos>)."""
    ids, tokenizer = load_split(data_dir, "train"), Tokenizer.load(data_dir)
    eos = tokenizer.eos_id
    carry = np.zeros(0, dtype=np.int64)
    with tqdm(total=len(ids), unit="tok", unit_scale=True, desc="training data", disable=not progress) as bar:
        for start in range(0, len(ids), CHUNK):
            chunk = np.concatenate([carry, np.asarray(ids[start: start + CHUNK], dtype=np.int64)])
            ends = np.flatnonzero(chunk == eos) if eos is not None else np.zeros(0, dtype=np.int64)
            last = start + CHUNK >= len(ids)
            cut = len(chunk) if last else (int(ends[-1]) + 1 if len(ends) else 0)
            bounds = [0, *(int(e) + 1 for e in ends if e < cut), cut]
            docs = [chunk[a:b].tolist() for a, b in zip(bounds, bounds[1:]) if b > a]
            yield from tokenizer.hf.decode_batch(docs, skip_special_tokens=True)
            carry = chunk[cut:]
            bar.update(min(CHUNK, len(ids) - start))


def overlap(data, cfg: OverlapConfig | None = None, **options) -> OverlapResult:
    """Which examples of `against` share word n-grams with the training shard of `data` (a prepared
    data directory). Options are `OverlapConfig` fields (`against` required)."""
    cfg = cfg or OverlapConfig(**options)
    if not cfg.against:
        raise ConfigError("give the evaluation file to check: --against FILE")
    examples = read_examples(cfg.against, cfg.text_field)
    vocab: dict[str, int] = {}
    grams: dict[tuple[int, ...], list[int]] = {}          # n-gram (word ids) -> examples holding it
    counts = []
    for i, text in enumerate(examples):
        ws = [vocab.setdefault(w, len(vocab)) for w in words(text)]
        own = {tuple(ws[j: j + cfg.n]) for j in range(len(ws) - cfg.n + 1)}
        for g in own:
            grams.setdefault(g, []).append(i)
        counts.append(len(own))
    found: set[tuple[int, ...]] = set()
    for doc in training_documents(data, cfg.progress):
        ids = np.array([vocab.get(w, -1) for w in words(doc)], dtype=np.int64)
        if len(ids) < cfg.n:
            continue
        unknown = np.convolve(ids < 0, np.ones(cfg.n, dtype=np.int64), mode="valid")   # per window start
        for j in np.flatnonzero(unknown == 0):                # windows made only of the examples' words
            g = tuple(ids[j: j + cfg.n].tolist())
            if g in grams:
                found.add(g)
    hits = [0] * len(examples)
    for g in found:
        for i in grams[g]:
            hits[i] += 1
    return OverlapResult(cfg.n, [ExampleOverlap(i, counts[i], hits[i], text) for i, text in enumerate(examples)])
