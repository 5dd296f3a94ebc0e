"""Duplicate documents: exact ones by a hash of the normalised text, near ones by MinHash with
LSH (`datasketch`), a document at a time in reading order; the first of a group is kept.

Normalised text: Unicode NFKC, case-folded (`str.casefold`), every run of whitespace one space,
none at the ends; so two documents that differ only in case, spacing, line breaks or Unicode
compatibility forms (full-width letters, ligatures) are exact duplicates.

Near duplicates: the shingles of a document are the character 5-grams of its normalised text
(with a space after it; a shorter text is one shingle), hashed with CRC-32; their MinHash (128
permutations) is looked up in an LSH index tuned to `threshold`, and each candidate is confirmed
by its estimated Jaccard similarity >= `threshold` (the LSH only proposes, so it is tuned against
missing a pair). Character 5-grams were chosen by measurement on the planted corpus of
tests/test_hygiene.py (word 5-grams missed most copies with 1-3 edited words; see docs/data.md,
"Data hygiene"). Only kept documents
enter the index, so `duplicate_of` always names a kept document. Memory: the index holds about
1 KB per kept document (near mode), the exact table about 100 bytes.

    >>> d = Deduplicator("exact")
    >>> [d.check(i, text) for i, text in enumerate(["Hello  World", "hello world\\n", "other"])]
    [None, ('exact', 0), None]
"""

from __future__ import annotations

import hashlib
import unicodedata
import zlib

from ..errors import DataError

DEDUP_MODES = ("none", "exact", "near")
SHINGLE_SIZE = 5           # character 5-grams (see the module docstring)
NUM_PERM = 128             # MinHash permutations: the Jaccard estimate's standard error is about 0.035 at 0.8
LSH_WEIGHTS = (0.1, 0.9)   # the LSH only proposes (every candidate is checked): tune it against missing one
INSTALL_HINT = "pip install 'lmforge[audit]'"


def normalise(text: str) -> str:
    """NFKC, case-folded, whitespace collapsed (see the module docstring).

    >>> normalise("  Ｆｕｌｌ\\tWIDTH\\n\\ntext ")
    'full width text'
    """
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def _datasketch():
    try:
        import datasketch
    except ImportError:
        raise DataError(f"--dedup near needs the datasketch library; install it with {INSTALL_HINT}") from None
    return datasketch


class Sketch:
    """One document's exact key and (near mode) MinHash, fed piece by piece (`last` on the
    document's last piece): a piece may end inside a word, which is carried over to the next."""

    def __init__(self, minhash=None):
        self.hasher = hashlib.blake2b(digest_size=16)
        self.minhash, self.carry, self.tail, self.shingles = minhash, "", "", 0

    def feed(self, piece: str, last: bool = False) -> None:
        text = self.carry + piece
        words = normalise(text).split(" ") if text.strip() else []
        self.carry = ""
        if not last and words and not text[-1].isspace():
            self.carry = words.pop()
        if not words:
            return
        self.hasher.update((" ".join(words) + " ").encode("utf-8"))
        if self.minhash is not None:
            text = self.tail + " ".join(words) + " "
            grams = [text[i:i + SHINGLE_SIZE] for i in range(len(text) - SHINGLE_SIZE + 1)]
            self.tail = text[-(SHINGLE_SIZE - 1):]
            if grams:
                self.minhash.update_batch([g.encode("utf-8") for g in set(grams)])
                self.shingles += len(grams)

    def finish(self) -> None:
        if self.carry:
            self.feed("", last=True)
        if self.minhash is not None and self.shingles == 0 and self.tail:   # shorter than one shingle
            self.minhash.update_batch([self.tail.encode("utf-8")])
            self.shingles = 1


class Deduplicator:
    """Decides, document by document in reading order, which are duplicates of an earlier
    kept one: `check(index, text)` / `decide(index, sketch)` return None (kept) or (kind, index of the kept document)."""

    def __init__(self, mode: str, threshold: float = 0.8):
        if mode not in DEDUP_MODES:
            raise DataError(f"--dedup {mode}: use one of {', '.join(DEDUP_MODES)}")
        self.mode, self.threshold = mode, threshold
        self.exact: dict[bytes, int] = {}
        self.dropped = {"exact": 0, "near": 0}
        if mode == "near":
            ds = _datasketch()
            self.template = ds.MinHash(num_perm=NUM_PERM, seed=1, hashfunc=zlib.crc32)
            self.lsh = ds.MinHashLSH(threshold=threshold, num_perm=NUM_PERM, weights=LSH_WEIGHTS)
            self.kept: dict[int, object] = {}

    def sketch(self) -> Sketch:
        return Sketch(self.template.copy() if self.mode == "near" else None)

    def check(self, index: int, text: str) -> tuple[str, int] | None:
        """`decide` for a document given whole."""
        sketch = self.sketch()
        sketch.feed(text, last=True)
        return self.decide(index, sketch)

    def decide(self, index: int, sketch: Sketch) -> tuple[str, int] | None:
        sketch.finish()             # in case the last piece was not fed with last=True
        key = sketch.hasher.digest()
        found = ("exact", self.exact[key]) if key in self.exact else None
        if found is None and self.mode == "near" and sketch.shingles:
            found = self._near(index, sketch.minhash)
        if found is None:
            self.exact[key] = index
        else:
            self.dropped[found[0]] += 1
        return found

    def _near(self, index: int, minhash) -> tuple[str, int] | None:
        best, best_j = None, 0.0
        for other in self.lsh.query(minhash):
            j = minhash.jaccard(self.kept[other])
            if j >= self.threshold and (j > best_j or (j == best_j and other < best)):
                best, best_j = other, j
        if best is not None:
            return "near", best
        self.lsh.insert(index, minhash)
        self.kept[index] = minhash
        return None
