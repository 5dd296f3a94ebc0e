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


PII = {
    "email": ["ann.lee@example.com", "j_smith+news@mail.co.uk", "ZED99@Sub.Domain.ORG", "o'brien@firm.ie",
              "info@xn--bcher-kva.de", "x@y.io", "first.last@uni-bonn.de", "support@example.museum"],
    "phone": ["+1 (555) 123-4567", "555-123-4567", "(555) 987 6543", "555.123.4567", "+44 20 7946 0958",
              "+33 1 23 45 67 89", "+49 30 12345678", "+1-202-555-0143"],
    "ip": ["192.168.1.20", "10.0.0.1", "8.8.8.8", "255.255.255.0", "2001:db8::8a2e:370:7334",
           "fe80::1ff:fe23:4567:890a", "2001:0db8:0000:0000:0000:ff00:0042:8329"],
    "card": ["4111 1111 1111 1111", "5500-0000-0000-0004", "340000000000009", "6011000000000004",
             "4012888888881881", "3782 822463 10005"],
}
NOT_PII = [                    # look like the above, yet are none of them
    "4111 1111 1111 1112", "5500-0000-0000-0005", "340000000000008", "6011000000000005", "4012888888881882",
    "1234567890123",           # 13 digits, Luhn-invalid
    "released 2023-01-15 at 10:30:45 UTC", "Python 3.11.7 and numpy 1.26.4", "a[1::2] and b[::-1]",
    "ISBN 978-3-16-148410-0", "1,234,567 dollars and $1,299.99", "MAC 00:1A:2B:3C:4D:5E", "order #12345678",
    "ratio 16:9 or 4:3", "pi is 3.14159265358979323846", "at 48.8566, 2.3522", "on 12.05.2024", "a@b",
    "@handle", "user at example dot com", "C++ std::vector<int>", "x = y :: z",
]
CONTEXTS = ["Contact {} for details.", "({})", "<{}>", "Send it to {}, then wait.", "see: {}", "\"{}\"",
            "value={}; next", "{}", "Last line ends with {}.", "[{}]"]


def pii_corpus(seed: int = 0, filler: int = 30) -> list[tuple[str, str | None, str]]:
    """(line, PII type or None, the line with that value replaced by its placeholder): every
    planted value and every look-alike once, in a random context, among paragraphs of Python's
    docs (which hold none), shuffled."""
    rng = random.Random(seed)
    placeholders = {"email": "<EMAIL>", "phone": "<PHONE>", "ip": "<IP>", "card": "<CARD>"}
    lines = []
    for kind, values in PII.items():
        for value in values:
            context = rng.choice(CONTEXTS)
            lines.append((context.format(value), kind, context.format(placeholders[kind])))
    for text in NOT_PII:
        line = rng.choice(CONTEXTS).format(text)
        lines.append((line, None, line))
    lines += [(p, None, p) for p in base_paragraphs(filler, rng)]
    rng.shuffle(lines)
    return lines
