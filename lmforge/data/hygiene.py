"""What `prepare` does to the documents between reading them and tokenizing them: canaries put
in, duplicates left out, personal data found and (if asked) redacted. The rules and the files it
writes are in docs/data.md, "Data hygiene".

A document is what `prepare` tokenizes as one, ending in <eos>: a text file, or a row of a table
or dataset. Documents are numbered from 0 in reading order, the canary copies at their places
counted among them. The order of work:

1. canaries (`--canaries`): the inputs are read once to count their documents, then each copy
   is placed at random among them (`canaries.py`); they go to the training split only;
2. dedup (`--dedup`): one more read decides, document by document, which duplicate an earlier
   kept one (`dedup.py`, on the text as read); those are left out of every later pass and
   listed in dedup.jsonl;
3. PII (`pii.py`): every piece of the inputs' text (not the canaries) is scanned while it is
   read for the tokenizer and the shards; the types of `--redact-pii` are replaced.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable, Iterable, Iterator, NamedTuple

from ..modeldir import write_json
from .canaries import CANARY_FILE, CanaryPlan
from .dedup import Deduplicator
from .pii import PiiScanner

DEDUP_FILE = "dedup.jsonl"
Raw = Iterable[tuple[str, bool]]      # (text piece, ends a document) of the inputs, as `reading.py` yields them


class Piece(NamedTuple):
    text: str
    ends: bool                  # the piece ends a document (which then gets <eos>)
    train_only: bool = False    # a canary: never in the validation split


class Hygiene:
    """The settings of one `prepare`, what the survey found, and the filter of every pass."""

    def __init__(self, dedup: str = "none", threshold: float = 0.8, redact: Iterable[str] = (), canaries: int = 0,
                 repeats: Iterable[int] = (1, 10, 100), seed: int = 0):
        self.dedup, self.threshold, self.redact = dedup, threshold, list(redact)
        self.canaries, self.repeats, self.seed = canaries, list(repeats), seed
        self.pii = PiiScanner(self.redact)
        self.plan: CanaryPlan | None = None
        self.dropped: dict[int, dict] = {}        # document index -> its dedup.jsonl record
        self.documents = 0

    def survey(self, read: Callable[[str], Raw]) -> None:
        """The passes before tokenizing: `read(what)` reads the inputs afresh (`what` names the pass)."""
        if self.canaries:
            n_inputs = sum(ends for _, ends in read("counting documents"))
            self.plan = CanaryPlan(self.canaries, self.repeats, self.seed, n_inputs)
        if self.dedup != "none":
            self._find_duplicates(read("finding duplicates"))

    def _find_duplicates(self, raw: Raw) -> None:
        dedup = Deduplicator(self.dedup, self.threshold)
        sketch = dedup.sketch()
        for index, text, ends, canary in self._stream(raw):
            sketch.feed(text, last=ends)
            if not ends:
                continue
            found = dedup.decide(index, sketch)
            if found is not None:
                self.dropped[index] = {"index": index, "kind": found[0], "duplicate_of": found[1],
                                       **({"canary": canary} if canary else {})}
                if canary:
                    self.plan.by_id[canary]["kept"] -= 1
            sketch = dedup.sketch()

    def _stream(self, raw: Raw) -> Iterator[tuple[int, str, bool, str | None]]:
        """(document index, piece, ends, canary id or None): the inputs with the canary copies at their places."""
        places = self.plan.places if self.plan else {}
        index, n_input, starts = 0, 0, True
        for text, ends in raw:
            if starts:
                for cid in places.get(n_input, ()):
                    yield index, self.plan.text(cid), True, cid
                    index += 1
            yield index, text, ends, None
            starts = ends
            index, n_input = index + ends, n_input + ends
        for cid in places.get(n_input, ()):
            yield index, self.plan.text(cid), True, cid
            index += 1
        self.documents = index

    def pieces(self, raw: Raw, count: bool = True) -> Iterator[Piece]:
        """The pieces to tokenize: duplicates left out, canaries in, PII redacted and counted
        afresh (`count=False`: a pass whose counts are not kept, the tokenizer's, where the text
        is only scanned if there is something to redact)."""
        scan = PiiScanner(self.redact) if count or self.redact else None
        self.pii = scan if count else self.pii
        for index, text, ends, canary in self._stream(raw):
            if index not in self.dropped:
                yield Piece(text, ends, True) if canary else Piece(scan(text) if scan else text, ends)

    def meta(self) -> dict:
        """What meta.json records."""
        meta = {"pii": self.pii.summary()}
        if self.dedup != "none":
            counts = {kind: sum(r["kind"] == kind for r in self.dropped.values()) for kind in ("exact", "near")}
            meta["dedup"] = {"mode": self.dedup, **({"threshold": self.threshold} if self.dedup == "near" else {}),
                             "documents": self.documents, "dropped": counts,
                             "kept": self.documents - len(self.dropped)}
        if self.plan:
            meta["canaries"] = self.plan.meta()
        return meta

    def write_files(self, out: Path) -> None:
        """dedup.jsonl (with --dedup) and canaries.json (with --canaries) into `out`."""
        if self.dedup != "none":
            with open(out / DEDUP_FILE, "w", encoding="utf-8") as f:
                for index in sorted(self.dropped):
                    f.write(json.dumps(self.dropped[index]) + "\n")
        if self.plan:
            write_json(out / CANARY_FILE, self.plan.file())


def summary(meta: dict) -> list[str]:
    """The lines `lmforge prepare` prints about the hygiene of its data."""
    lines = []
    if "canaries" in meta:
        c = meta["canaries"]
        lines.append(f"canaries: {c['count']} secrets in {c['documents']} training documents (canaries.json)")
    if "dedup" in meta:
        d = meta["dedup"]
        lines.append(f"dedup ({d['mode']}): kept {d['kept']:,} of {d['documents']:,} documents, dropped "
                     f"{d['dropped']['exact']:,} exact and {d['dropped']['near']:,} near duplicates (dedup.jsonl)")
    pii = meta.get("pii")
    if pii and (pii["redacted"] or any(pii["found"].values())):
        found = ", ".join(f"{n:,} {kind}" for kind, n in pii["found"].items())
        lines.append(f"personal data found: {found}; " + (
            "redacted: " + ", ".join(f"{n:,} {kind}" for kind, n in pii["redacted"].items()) if pii["redacted"]
            else "left as is (--redact-pii TYPES replaces them with placeholders)"))
    return lines
