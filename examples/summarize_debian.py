"""Summarization on real text that every Debian machine has: each package's long description is
a document and its one-line synopsis is the summary.

    sudo apt-get -o Acquire::Languages=en update      # optional: ~60k descriptions instead of the installed ones
    python examples/summarize_debian.py               # tables, both models, the held-out ROUGE beside the lead's

1. the table: the long descriptions of the apt lists' Translation-en files (every package of the
   archive, after the update above) or else of /var/lib/dpkg/status (the installed packages);
   paragraphs one per line, cut to --max-words words; packages whose description starts with
   the same paragraph (a library and its -dev, -doc, ... siblings) fall in the same split, so the
   held-out test set (--test documents) holds no sibling of a training document;
2. an encoder-decoder trained from scratch with `lmforge train --task seq2seq --metric rouge`;
3. a decoder: `lmforge prepare` + `lmforge train` on the training documents, then
   `lmforge finetune --task sft` on document -> summary conversations (`--eval-replies`);
4. `lmforge eval MODEL --pairs test.jsonl`: each model's ROUGE on the held-out documents, and
   the lead baseline's (the document's first sentence).

The figures of docs/summarization.md come from this script on 2 CPU cores (OMP_NUM_THREADS=2);
it prints the commands it runs, their wall and CPU time, and the table of scores.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import resource
import shlex
import subprocess
import sys
import time
from pathlib import Path

APT_LISTS = Path("/var/lib/apt/lists")
DPKG_STATUS = Path("/var/lib/dpkg/status")
# "Description: synopsis" then the long description, one space-indented line each; " ." ends a paragraph
ENTRY = re.compile(r"^Description(?:-en)?: (.*)\n((?: .*(?:\n|$))+)", flags=re.M)


def description_files() -> list[Path]:
    """The Translation-en files of the apt lists (all the archive's descriptions), else dpkg's status."""
    found = sorted(APT_LISTS.glob("*_i18n_Translation-en*")) if APT_LISTS.is_dir() else []
    return found or [DPKG_STATUS]


def read_apt_file(path: Path) -> str:
    """A file of the apt lists, decompressed by apt itself (lz4, gz, xz: whatever apt stored)."""
    if path.suffix in (".lz4", ".gz", ".xz", ".bz2", ".zst"):
        return subprocess.run(["/usr/lib/apt/apt-helper", "cat-file", str(path)], check=True, capture_output=True,
                              text=True).stdout
    return path.read_text(encoding="utf-8", errors="replace")


def descriptions(text: str, max_words: int) -> list[tuple[str, str]]:
    """(document, summary) of every entry: the long description's paragraphs one per line (cut to
    `max_words` words), the synopsis."""
    pairs = []
    for match in ENTRY.finditer(text):
        paragraphs, lines = [], []
        for line in match[2].splitlines():
            if line.strip() == ".":
                paragraphs.append(" ".join(lines))
                lines = []
            else:
                lines.append(line.strip())
        paragraphs.append(" ".join(lines))
        words, kept = 0, []
        for p in filter(None, paragraphs):
            room = max_words - words
            if room <= 0:
                break
            kept.append(" ".join(p.split()[:room]))
            words += len(p.split())
        summary = match[1].strip()
        if kept and summary:
            pairs.append(("\n".join(kept), summary))
    return list(dict.fromkeys(pairs))


def split_by_first_paragraph(pairs: list[tuple[str, str]], n_test: int, seed: int
                             ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(train, test): whole groups of descriptions that share their first paragraph go to one side."""
    groups: dict[str, list[tuple[str, str]]] = {}
    for pair in pairs:
        groups.setdefault(pair[0].split("\n", 1)[0], []).append(pair)
    keys = sorted(groups)
    random.Random(seed).shuffle(keys)
    train, test = [], []
    for key in keys:
        (test if len(test) < n_test else train).extend(groups[key])
    return train, test


def write_tables(args, data: Path) -> dict[str, int]:
    files = description_files()
    pairs = [p for f in files for p in descriptions(read_apt_file(f), args.max_words)]
    pairs = list(dict.fromkeys(pairs))
    train, test = split_by_first_paragraph(pairs, args.test, args.seed)
    data.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", train), ("test", test)):
        with open(data / f"{name}.jsonl", "w", encoding="utf-8") as f:
            for document, summary in rows:
                f.write(json.dumps({"document": document, "summary": summary}, ensure_ascii=False) + "\n")
    with open(data / "train_chats.jsonl", "w", encoding="utf-8") as f:
        for document, summary in train:
            f.write(json.dumps({"messages": [{"role": "user", "content": document},
                                             {"role": "assistant", "content": summary}]}, ensure_ascii=False) + "\n")
    (data / "train_documents.txt").write_text("\n\n".join(d for d, _ in train) + "\n", encoding="utf-8")
    print(f"{len(pairs)} descriptions from {', '.join(str(f) for f in files)}: {len(train)} train, {len(test)} test "
          f"-> {data}")
    return {"descriptions": len(pairs), "train": len(train), "test": len(test)}


def run(cmd: list[str]) -> dict[str, float]:
    """Run a command (printed first); its wall time and CPU time (user + system, children)."""
    print("\n$ " + shlex.join(cmd), flush=True)
    before, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
    subprocess.run(cmd, check=True)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return {"wall_s": time.perf_counter() - t0, "cpu_s": cpu}


def evaluate(model: Path, test: Path, args) -> dict:
    """`lmforge eval MODEL --pairs test.jsonl`: the model's ROUGE and the lead baseline's."""
    cmd = ["lmforge", "eval", str(model), "--pairs", str(test), "--source-column", "document", "--target-column",
           "summary", "--batch-size", "32", "--device", args.device]
    print("\n$ " + shlex.join(cmd), flush=True)
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    print(json.dumps(result))
    return result


def train_seq2seq(args, data: Path, out: Path) -> dict[str, float]:
    return run(["lmforge", "train", "--task", "seq2seq", "--data", str(data / "train.jsonl"),
                "--source-column", "document", "--target-column", "summary", "--metric", "rouge",
                "--preset", args.seq2seq_preset, "--tokenizer", "bpe", "--vocab-size", str(args.vocab_size),
                "--context-length", "128", "--val-fraction", "0.005", "--test-fraction", "0",
                "--max-steps", str(args.seq2seq_steps), "--eval-interval", str(args.seq2seq_steps // 2),
                "--eval-translations", "64", "--test-beams", "4", "--no-repeat-ngram-size", "3",
                "--device", args.device, "--out", str(out), *(["--overwrite"] if args.overwrite else [])])


def train_decoder(args, data: Path, base: Path, out: Path) -> dict[str, float]:
    overwrite = ["--overwrite"] if args.overwrite else []
    times = [run(["lmforge", "prepare", str(data / "train_documents.txt"), "--out", str(data / "clm"),
                  "--vocab-size", str(args.vocab_size), *overwrite]),
             run(["lmforge", "train", "--data", str(data / "clm"), "--preset", args.decoder_preset,
                  "--context-length", "192", "--max-steps", str(args.pretrain_steps), "--eval-interval",
                  str(args.pretrain_steps), "--device", args.device, "--out", str(base), *overwrite]),
             run(["lmforge", "finetune", str(base), "--task", "sft", "--data", str(data / "train_chats.jsonl"),
                  "--max-steps", str(args.sft_steps), "--eval-interval", str(args.sft_steps // 2),
                  "--eval-replies", "64", "--device", args.device, "--out", str(out), *overwrite])]
    return {k: sum(t[k] for t in times) for k in times[0]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/debian-summaries", help="directory for the tables and the models")
    p.add_argument("--only", choices=("table", "seq2seq", "decoder"), help="build the tables, or train one family")
    p.add_argument("--test", type=int, default=500, help="held-out documents")
    p.add_argument("--max-words", type=int, default=80, help="documents are cut to this many words")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vocab-size", type=int, default=8000)
    p.add_argument("--seq2seq-preset", default="seq2seq-mini")
    p.add_argument("--seq2seq-steps", type=int, default=600)
    p.add_argument("--decoder-preset", default="gpt-mini")
    p.add_argument("--pretrain-steps", type=int, default=400)
    p.add_argument("--sft-steps", type=int, default=250)
    p.add_argument("--device", default="cpu")
    p.add_argument("--overwrite", action="store_true", help="replace the models of an earlier run")
    args = p.parse_args(argv)
    out = Path(args.out)
    data = out / "data"
    write_tables(args, data)
    if args.only == "table":
        return 0
    rows = []
    if args.only in (None, "seq2seq"):
        t = train_seq2seq(args, data, out / "seq2seq")
        rows.append((f"{args.seq2seq_preset} (seq2seq, {args.seq2seq_steps} steps)", evaluate(out / "seq2seq",
                                                                                           data / "test.jsonl", args), t))
    if args.only in (None, "decoder"):
        t = train_decoder(args, data, out / "decoder-base", out / "decoder-sft")
        rows.append((f"{args.decoder_preset} ({args.pretrain_steps} clm + {args.sft_steps} sft steps)",
                     evaluate(out / "decoder-sft", data / "test.jsonl", args), t))
    print(f"\nheld-out test set ({rows[0][1]['pairs']} documents), ROUGE F-measure (rouge-score, Porter stemming):")
    print(f"| {'summarizer':<44} | ROUGE-1 | ROUGE-2 | ROUGE-L | train wall | train CPU |")
    lead = rows[0][1]["lead"]
    print(f"| {'lead baseline (first sentence)':<44} | {lead['rouge1']:7.2f} | {lead['rouge2']:7.2f} | "
          f"{lead['rougeL']:7.2f} |            |           |")
    for name, s, t in rows:
        print(f"| {name:<44} | {s['rouge1']:7.2f} | {s['rouge2']:7.2f} | {s['rougeL']:7.2f} | "
              f"{t['wall_s'] / 60:7.1f} min | {t['cpu_s'] / 60:6.1f} min |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
