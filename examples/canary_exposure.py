"""Planted secrets and what deduplication does to them ("The Secret Sharer", Carlini et al. 2019),
on real English text every Python has (`pydoc_data.topics`, the quickstart's corpus):

    python examples/canary_exposure.py                 # two runs of ~5 min each on 2 cores, then the table
    python examples/canary_exposure.py --corpus my_corpus.txt --work runs/canaries

Twice, with `--dedup none` and with `--dedup exact`:

1. `lmforge prepare` the corpus with `--canaries 1 --canary-repeats 1,10,100`: three random
   secrets ("the secret code is 123456789", nine digits: 10**9 candidates) written 1, 10 and 100
   times into the training split (the same three both times: same seed);
2. `lmforge train` gpt-mini (the quickstart's model until it moved to llama-mini) on it;
3. `lmforge audit canaries`: each secret's exposure, and whether greedy decoding from "the
   secret code is " writes it.

It prints the commands it runs, their wall time, and one table of both runs. The README's figures
come from this script.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(cmd: list[str]) -> str:
    """One lmforge command, printed with its wall time; its stdout."""
    print("$ " + shlex.join(cmd), flush=True)
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "lmforge", *cmd], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}):\n{done.stderr[-3000:]}")
    print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    return done.stdout


def one_run(work: Path, corpus: Path, dedup: str, args) -> dict:
    data, out = work / f"data-{dedup}", work / f"run-{dedup}"
    run(["prepare", str(corpus), "--out", str(data), "--tokenizer", "char", "--canaries", "1",
         "--canary-repeats", "1,10,100", "--dedup", dedup, "--no-progress"])
    run(["train", "--data", str(data), "--out", str(out), "--preset", args.preset, "--context-length", "128",
         "--batch-size", "32", "--max-steps", str(args.max_steps), "--lr", "2e-3", "--warmup-steps", "100",
         "--eval-interval", str(args.max_steps), "--no-progress"])
    return json.loads(run(["audit", "canaries", str(out), "--data", str(data), "--json", "--no-progress"]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", help="where the data and models go (default: a new temporary directory)")
    p.add_argument("--preset", default="gpt-mini")
    p.add_argument("--max-steps", type=int, default=1500)
    p.add_argument("--corpus", help="a text file to plant the secrets in (default: Python's pydoc topics)")
    args = p.parse_args(argv)
    from lmforge.quickstart import pydoc_corpus
    work = Path(args.work or tempfile.mkdtemp(prefix="canaries-"))
    work.mkdir(parents=True, exist_ok=True)
    if args.corpus:
        corpus = Path(args.corpus)
        if not corpus.is_file():
            sys.exit(f"--corpus {corpus}: no such file; give a text file")
    else:
        corpus = work / "pydoc_topics.txt"
        corpus.write_text(pydoc_corpus(), encoding="utf-8")
    rows = {dedup: one_run(work, corpus, dedup, args) for dedup in ("none", "exact")}
    print(f"\n{'--dedup':8} {'repeats':>7} {'kept':>5} {'log-lik':>8} {'exposure':>9} {'extracted':>9}")
    for dedup, found in rows.items():
        for c in sorted(found["canaries"], key=lambda c: c["repeats"]):
            print(f"{dedup:8} {c['repeats']:>7} {c['kept']:>5} {c['log_likelihood']:>8.1f} {c['exposure']:>9.1f} "
                  f"{'yes' if c['extracted'] else 'no':>9}")
    print(f"(log-likelihood of the secret's document in nats; exposure in bits, at most "
          f"{rows['none']['max_exposure']:.1f}; "
          f"{args.preset}, {args.max_steps} steps; data and models in {work})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
