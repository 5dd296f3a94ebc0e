"""A second labelled table from real text every Debian machine has offline: each package's
one-line synopsis (its `Description:`), labelled with its archive section (`Section:`, e.g.
`python`, `games`, `net`), from the apt lists' Packages files.

    sudo apt-get update                                   # the lists (they are there after any install)
    python examples/debian_sections_table.py --out debian_sections.tsv
    python benchmarks/pretrain_finetune.py --data debian_sections.tsv --out runs/bench-debian

The `--sections` most common sections are kept, at most `--per-section` packages each (drawn at
random, so that no section dwarfs the others), and synopses seen twice (a library and its -dev,
-doc siblings often share one) are kept once. The Packages files may be lz4-, xz- or gzip-compressed
or plain; lz4 needs the `lz4` program (Debian's `lz4` package).
"""

from __future__ import annotations

import argparse
import collections
import gzip
import lzma
import random
import re
import subprocess
import sys
from pathlib import Path

from lmforge.data.tables import write_table

APT_LISTS = Path("/var/lib/apt/lists")
STANZA_FIELD = re.compile(r"^(Package|Description|Section): (.*)$", flags=re.M)


def read_packages(path: Path) -> str:
    if path.suffix == ".lz4":
        return subprocess.run(["lz4cat", str(path)], capture_output=True, check=True).stdout.decode("utf-8", "replace")
    opener = {".xz": lzma.open, ".gz": gzip.open}.get(path.suffix, open)
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        return f.read()


def synopses(lists: Path) -> dict[str, tuple[str, str]]:
    """{package: (synopsis, section)} over every Packages file of `lists` (the last one wins)."""
    found = {}
    for path in sorted(lists.glob("*_Packages*")):
        for stanza in read_packages(path).split("\n\n"):
            fields = dict(STANZA_FIELD.findall(stanza))
            if {"Package", "Description", "Section"} <= fields.keys():
                section = fields["Section"].split("/")[-1]          # contrib/net -> net
                found[fields["Package"]] = (" ".join(fields["Description"].split()), section)
    return found


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="debian_sections.tsv")
    p.add_argument("--lists", default=str(APT_LISTS), help="the directory of the apt lists")
    p.add_argument("--sections", type=int, default=12, help="how many of the most common sections")
    p.add_argument("--per-section", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    found = synopses(Path(args.lists))
    if not found:
        sys.exit(f"--lists {args.lists}: no Packages file there; run `sudo apt-get update` first")
    seen, by_section = set(), collections.defaultdict(list)
    for package in sorted(found):
        text, section = found[package]
        if text.lower() not in seen:
            seen.add(text.lower())
            by_section[section].append(text)
    top = sorted(by_section, key=lambda s: -len(by_section[s]))[:args.sections]
    rng = random.Random(args.seed)
    rows = [(t, s) for s in top for t in rng.sample(by_section[s], min(args.per_section, len(by_section[s])))]
    rng.shuffle(rows)
    write_table(args.out, ["text", "label"], rows)        # TSV for .tsv, else CSV; whole or not at all
    counts = collections.Counter(s for _, s in rows)
    print(f"wrote {args.out}: {len(rows)} synopses of {len(found)} packages, {len(top)} sections: "
          + ", ".join(f"{s} {n}" for s, n in counts.most_common()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
