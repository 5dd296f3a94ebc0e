"""Speed of `prepare --dedup`: documents per second of lmforge's dedup pass (datasketch MinHash
+ LSH for near duplicates; a hash of the normalised text for exact ones) on real text.

    python benchmarks/dedup.py                         # 100k documents, near and exact
    python benchmarks/dedup.py --docs 2000             # a quick check that it runs

The documents are the non-blank lines of the files of the data kit (`../shared/data`: the KJV
verses, Chinese poems and fortunes, the fortunes table, both sides of the English-Chinese
pairs), or of Python's own docs (`pydoc_data.topics`) where the kit is missing; when there are
fewer lines than --docs, copies with 1-3 word edits of random lines make up the rest (planted
near duplicates). Only the dedup pass is timed (the documents are in memory): reading and
tokenizing are the rest of `prepare`.
"""

from __future__ import annotations

import argparse
import csv
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
KIT = ROOT.parent / "shared" / "data"


def kit_lines(kit: Path) -> list[str]:
    lines: list[str] = []
    for name in ("kjv.txt", "zh_poems_fortunes.txt"):
        if (kit / name).is_file():
            lines += (kit / name).read_text(encoding="utf-8").splitlines()
    for name, columns in (("fortunes_topics.tsv", ("text",)), ("en_zh_pairs.tsv", ("en", "zh"))):
        if (kit / name).is_file():
            with open(kit / name, encoding="utf-8", newline="") as f:
                for row in csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE):
                    lines += [row[c] for c in columns]
    return lines


def documents(n: int, kit: Path, seed: int = 0) -> tuple[list[str], str, int]:
    """(documents, where they come from, how many are planted near copies)."""
    lines = kit_lines(kit)
    source = str(kit)
    if not lines:
        import pydoc_data.topics
        lines = [line for text in pydoc_data.topics.topics.values() for line in text.splitlines()]
        source = "pydoc_data.topics"
    lines = [line.strip() for line in lines if len(line.split()) >= 3 or len(line.strip()) >= 20][:n]
    rng = random.Random(seed)
    planted = n - len(lines)
    for _ in range(planted):
        words = rng.choice(lines).split()
        for _ in range(rng.randint(1, 3)):
            words.insert(rng.randrange(len(words) + 1), rng.choice(("river", "module", "silver", "window")))
        lines.insert(rng.randrange(len(lines) + 1), " ".join(words))
    return lines, source, max(planted, 0)


def run(mode: str, docs: list[str], threshold: float) -> dict:
    from lmforge.data.dedup import Deduplicator
    dedup = Deduplicator(mode, threshold)
    start = time.perf_counter()
    for i, text in enumerate(docs):
        dedup.check(i, text)
    seconds = time.perf_counter() - start
    return {"mode": mode, "docs": len(docs), "seconds": round(seconds, 2), "docs_per_s": round(len(docs) / seconds),
            "mb_per_s": round(sum(len(d.encode()) for d in docs) / seconds / 1e6, 2), **dedup.dropped}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--docs", type=int, default=100_000)
    p.add_argument("--threshold", type=float, default=0.8)
    p.add_argument("--kit", default=str(KIT), help="the data kit's directory (default: ../shared/data)")
    args = p.parse_args()
    docs, source, planted = documents(args.docs, Path(args.kit))
    words = sum(len(d.split()) for d in docs) / len(docs)
    print(f"{len(docs):,} documents from {source} ({planted:,} planted near copies), {words:.0f} words on average")
    for mode in ("exact", "near"):
        r = run(mode, docs, args.threshold)
        print(f"--dedup {mode:5}: {r['seconds']:.1f} s, {r['docs_per_s']:,} docs/s ({r['mb_per_s']} MB/s); "
              f"dropped {r['exact']:,} exact, {r['near']:,} near")


if __name__ == "__main__":
    main()
