"""Planted corpora for tests/test_hygiene.py (and the shingle measurement in docs/data.md): real
paragraphs from `pydoc_data.topics` with known exact and near duplicates, and text with known
personal data. Every planted fact is returned beside the text, so a test knows the truth."""

from __future__ import annotations

import random
import re

WORDS = ("river", "protocol", "garden", "module", "silver", "window", "thread", "harbor", "ledger", "canvas")


def _shingles(text: str, n: int = 5) -> set[str]:
    words = text.lower().split()
    return {" ".join(words[i:i + n]) for i in range(max(len(words) - n + 1, 1))}


def base_paragraphs(n: int, rng: random.Random) -> list[str]:
    """`n` paragraphs of 40-150 words from Python's own docs, one line each, no two of them
    alike (word 5-gram Jaccard below 0.3), so the only duplicates are the planted ones."""
    import pydoc_data.topics
    paragraphs = sorted({" ".join(p.split()) for text in pydoc_data.topics.topics.values()
                         for p in re.split(r"\n\s*\n", text) if 40 <= len(p.split()) <= 150})
    rng.shuffle(paragraphs)
    chosen: list[tuple[str, set[str]]] = []
    for p in paragraphs:
        s = _shingles(p)
        if all(len(s & t) / len(s | t) < 0.3 for _, t in chosen):
            chosen.append((p, s))
        if len(chosen) == n:
            break
    return [p for p, _ in chosen]


def near_copy(text: str, edits: int, rng: random.Random) -> str:
    """`text` with `edits` single-word edits: a word replaced, a word inserted or a word removed."""
    words = text.split()
    for _ in range(edits):
        i, kind = rng.randrange(len(words)), rng.choice(("replace", "insert", "delete"))
        if kind == "replace":
            words[i] = rng.choice(WORDS)
        elif kind == "insert":
            words.insert(i, rng.choice(WORDS))
        else:
            del words[i]
    return " ".join(words)


def exact_copy(text: str, rng: random.Random) -> str:
    """The same text after normalisation: other case, doubled spaces, a line break, full-width letters."""
    words = text.split()
    i = rng.randrange(len(words))
    words[i] = words[i].upper()
    out = "  ".join(words[:3]) + " " + " ".join(words[3:])
    return "\n" + out.replace("a", "\uff41", 1) + "  "      # U+FF41, full-width a: NFKC makes it "a"


def related(text: str, other: str, keep: float) -> str:
    """Not a duplicate, yet alike: the first `keep` of `text`'s words, then the end of `other`."""
    words, tail = text.split(), other.split()
    n = int(len(words) * keep)
    return " ".join(words[:n] + tail[-(len(words) - n):])


def dedup_corpus(n_base: int = 300, n_exact: int = 40, n_near: int = 60, n_related: int = 40, max_edits: int = 3,
                 seed: int = 0) -> tuple[list[str], dict[int, tuple[str, int]]]:
    """(documents, truth): truth maps each planted copy's index to (exact|near, index of its
    original); each original has at most one copy, always after it; near copies carry 1 to
    `max_edits` word edits. `n_related` more documents keep 70% of an original and end like
    another: alike, but no duplicates (they test precision)."""
    rng = random.Random(seed)
    base = base_paragraphs(n_base, rng)
    originals = rng.sample(range(n_base), n_exact + n_near + n_related)
    copies = [("exact", o, exact_copy(base[o], rng)) for o in originals[:n_exact]]
    copies += [("near", o, near_copy(base[o], rng.randint(1, max_edits), rng))
               for o in originals[n_exact:n_exact + n_near]]
    copies += [(None, o, related(base[o], base[rng.randrange(n_base)], 0.7)) for o in originals[n_exact + n_near:]]
    docs: list[tuple[str, tuple[str, int] | None]] = [(p, None) for p in base]
    for kind, original, text in copies:
        at = rng.randint(docs.index((base[original], None)) + 1, len(docs))
        docs.insert(at, (text, (kind, original)))
    index_of = {p: i for i, (p, truth) in enumerate(docs) if truth is None}
    truth = {i: (t[0], index_of[base[t[1]]]) for i, (_, t) in enumerate(docs) if t is not None and t[0]}
    return [d for d, _ in docs], truth
