"""A sentiment table from real reviews, offline: the movie-review snippets (Rotten Tomatoes
sentences, the Pang & Lee sentence-polarity texts) that the VADER authors had rated by people,
shipped inside the `vaderSentiment` source package on PyPI (MIT licence). Each snippet is labelled
`positive` or `negative` by the sign of its mean human rating (-4 to +4); the few rated exactly 0
are left out.

    pip download --no-deps --no-binary :all: vaderSentiment==3.3.2 -d .     # the sdist, from PyPI
    python examples/sentiment_table.py --sdist vaderSentiment-3.3.2.tar.gz --out movie_sentiment.tsv
    python examples/pretrain_finetune_topics.py --data movie_sentiment.tsv --out runs/recipe-sentiment

The source package also carries Amazon product-review, tweet and New York Times editorial
snippets rated the same way (`--snippets amazon|tweets|nyt`).
"""

from __future__ import annotations

import argparse
import collections
import io
import random
import sys
import tarfile
from pathlib import Path

from lmforge.data.tables import write_table

FETCH = "give the source package: pip download --no-deps --no-binary :all: vaderSentiment==3.3.2"
SNIPPETS = {"movie": "movieReviewSnippets", "amazon": "amazonReviewSnippets", "tweets": "tweets",
            "nyt": "nytEditorialSnippets"}


def ground_truth(sdist: Path, name: str) -> str:
    """The text of `<name>_GroundTruth.txt` inside the sdist's nested `hutto_ICWSM_2014.tar.gz`."""
    with tarfile.open(sdist) as outer:
        inner = next((m for m in outer.getmembers() if m.name.endswith("hutto_ICWSM_2014.tar.gz")), None)
        if inner is None:
            raise ValueError(f"--sdist {sdist}: no additional_resources/hutto_ICWSM_2014.tar.gz inside; {FETCH}")
        with tarfile.open(fileobj=io.BytesIO(outer.extractfile(inner).read())) as data:
            member = next((m for m in data.getmembers() if m.name.endswith(f"/{name}_GroundTruth.txt")), None)
            if member is None:
                raise ValueError(f"--sdist {sdist}: no {name}_GroundTruth.txt in its hutto_ICWSM_2014.tar.gz")
            return data.extractfile(member).read().decode("utf-8", "replace")


def labelled(text: str) -> list[tuple[str, str]]:
    """Rows `id <tab> mean rating <tab> snippet` -> (snippet, positive|negative); rating 0 is left out."""
    rows = []
    for line in text.splitlines():
        parts = line.strip().split("\t", 2)
        try:
            rating = float(parts[1]) if len(parts) == 3 and parts[2].strip() else 0.0
        except ValueError:                          # not a rated row
            continue
        if rating > 0 or rating < 0:                # 0 (neutral) and NaN are left out
            rows.append((" ".join(parts[2].split()), "positive" if rating > 0 else "negative"))
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sdist", required=True, help="vaderSentiment-3.3.2.tar.gz, the source package from PyPI")
    p.add_argument("--out", default="movie_sentiment.tsv")
    p.add_argument("--snippets", choices=sorted(SNIPPETS), default="movie")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    args = p.parse_args(argv)
    out = Path(args.out)
    if out.exists() and not args.overwrite:
        print(f"error: --out {out} exists; pass --overwrite to replace it", file=sys.stderr)
        return 2
    try:
        rows = labelled(ground_truth(Path(args.sdist), SNIPPETS[args.snippets]))
    except (OSError, tarfile.TarError, ValueError) as e:
        why = (str(e) if isinstance(e, ValueError) else
               f"--sdist {args.sdist}: {e.strerror or e}" if isinstance(e, OSError) else
               f"--sdist {args.sdist}: not a .tar.gz archive; {FETCH}")
        print(f"error: {why}", file=sys.stderr)
        return 2
    seen, unique = set(), []
    for text, label in rows:                        # a snippet rated twice is kept once
        if text.lower() not in seen:
            seen.add(text.lower())
            unique.append((text, label))
    random.Random(args.seed).shuffle(unique)
    write_table(out, ["text", "label"], unique)             # whole or not at all
    counts = collections.Counter(label for _, label in unique)
    print(f"wrote {out}: {len(unique)} {args.snippets} snippets: "
          + ", ".join(f"{s} {n}" for s, n in counts.most_common()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
