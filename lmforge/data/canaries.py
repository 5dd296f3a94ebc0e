"""Canaries (Carlini et al. 2019, "The Secret Sharer"): random secrets of a known format that
`prepare --canaries N` plants in the training split, so that `lmforge audit canaries` can
measure how far a model trained on it memorised each one (its exposure).

For each repetition count r of `repeats`, N secrets; each is one document, "the secret code is
{secret}" with 9 random digits, written r times at random places among the documents (uniform
over the gaps between them, the start and the end included). They are recorded in
DATA/canaries.json (the interface in the docs, "Data hygiene"):

    {"format": "the secret code is {secret}", "alphabet": "0123456789", "length": 9,
     "canaries": [{"id": "c0", "secret": "281265017", "repeats": 10, "inserted": 10, "kept": 10}, ...]}

    >>> plan = CanaryPlan(2, [1, 3], seed=0, n_documents=5)
    >>> [c["repeats"] for c in plan.canaries], sum(len(v) for v in plan.places.values())
    ([1, 1, 3, 3], 8)
"""

from __future__ import annotations

import random
from collections import defaultdict

from ..errors import DataError

CANARY_FILE = "canaries.json"
FORMAT = "the secret code is {secret}"
ALPHABET = "0123456789"
LENGTH = 9


def canary_repeats(value: list[int] | str) -> list[int]:
    """The repetition counts of --canary-repeats: "1,10,100" or a list, each at least 1.

    >>> canary_repeats("1, 10,100"), canary_repeats([5])
    ([1, 10, 100], [5])
    """
    parts = [p.strip() for item in ([value] if isinstance(value, str) else value) for p in str(item).split(",")]
    try:
        counts = [int(p) for p in parts if p]
    except ValueError:
        counts = []
    if not counts or any(c < 1 for c in counts):
        raise DataError(f"--canary-repeats {value!r}: give repetition counts of at least 1, comma-separated, "
                        f"e.g. 1,10,100")
    return counts


class CanaryPlan:
    """The secrets and where their copies go: `places[i]` lists the canary ids written just
    before input document i (i == n_documents: after the last one). `kept` counts the copies
    left after deduplication (set by prepare)."""

    def __init__(self, n: int, repeats: list[int], seed: int, n_documents: int):
        rng = random.Random(seed)
        self.canaries = [{"id": f"c{i}", "secret": "".join(rng.choice(ALPHABET) for _ in range(LENGTH)),
                          "repeats": r, "inserted": r, "kept": r}
                         for i, r in enumerate(r for r in repeats for _ in range(n))]
        self.by_id = {c["id"]: c for c in self.canaries}
        self.places: dict[int, list[str]] = defaultdict(list)
        copies = [c["id"] for c in self.canaries for _ in range(c["repeats"])]
        for cid in copies:
            self.places[rng.randint(0, n_documents)].append(cid)

    def text(self, cid: str) -> str:
        return FORMAT.format(secret=self.by_id[cid]["secret"])

    def file(self) -> dict:
        """The contents of canaries.json."""
        return {"format": FORMAT, "alphabet": ALPHABET, "length": LENGTH, "canaries": self.canaries}

    def meta(self) -> dict:
        return {"count": len(self.canaries), "documents": sum(c["inserted"] for c in self.canaries)}
