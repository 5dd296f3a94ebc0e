"""Run every benchmark for this machine (GPU shapes when CUDA is present, CPU shapes otherwise)
and collect the results in benchmarks/results/<machine>-<time>.jsonl.

    python benchmarks/run_all.py
    python benchmarks/run_all.py --quick     # the side-by-side set on tiny shapes, one round: checks that it runs

The side-by-side set (`CPU` / `GPU`: lmforge against `transformers`, one ratio each) runs first,
then the longer studies (`STUDIES`); `ELSEWHERE` names the scripts that need something this
command cannot supply, and why (a test checks that every script in benchmarks/ is in one of them).
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).parent

CPU = [
    ["train_speed.py"],                                            # 4 x 128, context 64, batch 12, fp32
    ["train_speed.py", "--bert-mini"],                             # masked LM, 4 x 256, context 128, batch 32
    ["train_speed.py", "--context", "128", "--batch", "32", "--vocab", "1024", "--dropout", "0.2"],  # the quickstart's
    ["decode_speed.py"],                                           # 6 x 384, vocab 8192, batch 1, fp32: the default
    ["decode_speed.py", "--no-compile"],                           # the eager step
    ["decode_speed.py", "--compile"],                              # the compiled step from the first call
    ["decode_speed.py", "--no-compile", "--batch", "4"],             # a batch: products on packed weights
    ["decode_speed.py", "--dtype", "bfloat16", "--no-compile"],
]
GPU = [
    ["train_speed.py", "--gpt2-124m", "--compile"],
    ["train_speed.py", "--gpt2-124m", "--compile", "--layers", "24", "--width", "1024", "--heads", "16",
     "--batch", "8"],                                              # GPT-2 350M shapes
    ["decode_speed.py", "--gpt2-124m", "--compile"],
    ["decode_speed.py", "--llama-1b", "--compile"],
    ["decode_speed.py", "--llama-1b", "--compile", "--batch", "8"],
    ["decode_speed.py", "--llama-1b", "--compile", "--batch", "32"],
]
# longer studies, after the side-by-side set (not in --quick: the slow ones have tests of their own)
STUDIES = [
    ["decode_profile.py"],                                         # where a decode step's time goes
    ["decode_profile.py", "--bits", "8", "--compile"],
    ["quantized_decode.py"],                                       # fp32 / int8 / int4 (lmforge, torchao), eager and compiled
    ["gguf_llamacpp.py"],                                          # against llama.cpp (when llama-cpp-python is there)
    ["gguf_llamacpp.py", "--compile"],                             # the same with lmforge's compiled decode step
    ["long_generation.py"],
    ["serve_throughput.py"],
    ["serve_pressure.py"],
    ["serve_inspect.py"],                                          # the batch beside inspections
    ["memory.py"],
    ["quality.py"],
    ["muon_vs_adamw.py"],
]
ELSEWHERE = {"gpu_suite.py": "a GPU lease's one command (docs/performance.md)",
             "adapt_compress_kjv.py": "needs a corpus: --corpus FILE",
             "serve_lm_eval.py": "needs lm-eval and a trained model directory",
             "dedup.py": "reads the data kit: --kit ../shared/data",
             "pretrain_finetune.py": "equal-CPU arms of 20 minutes each: run it alone, one arm per process",
             "common.py": "helpers", "run_all.py": "this command"}
NEEDS = {"gguf_llamacpp.py": "llama_cpp"}                            # skipped, with a line, when not installed
# --quick: shapes small enough that the whole set runs in seconds (the figures mean nothing)
TINY_TRAIN = ["--layers", "1", "--width", "32", "--heads", "2", "--context", "16", "--vocab", "64", "--batch", "2",
              "--steps", "2", "--warmup", "1", "--rounds", "1"]
QUICK = {"train_speed.py": TINY_TRAIN,
         "decode_speed.py": ["--layers", "1", "--width", "32", "--heads", "2", "--context", "64", "--vocab", "64",
                             "--prompt", "4", "--new", "8", "--rounds", "1", "--auto-after", "0.2"]}


SHAPE_FLAGS = {"--bert-mini": "--mlm"}                             # a preset shape flag -> the same task, any shape


def quick(cmd: list[str]) -> list[str]:
    """A side-by-side command on tiny shapes."""
    return [cmd[0], *(SHAPE_FLAGS.get(a, a) for a in cmd[1:]), *QUICK[cmd[0]]]


def help_text(script: str) -> str:
    return (HERE / script).read_text()


def run(cmd: list[str], out: Path | None) -> bool:
    """Run one benchmark (appending its rows to `out` when it takes --json); True when it failed."""
    full = [sys.executable, str(HERE / cmd[0]), *cmd[1:], *(["--json", str(out)] if out else [])]
    print("+", " ".join(cmd), flush=True)
    return subprocess.run(full, cwd=HERE).returncode != 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny shapes, one round (the CPU set, wherever it runs)")
    p.add_argument("--out", default=None, help="results file (default: benchmarks/results/<machine>-<time>.jsonl)")
    args = p.parse_args()
    gpu = torch.cuda.is_available() and not args.quick
    name = torch.cuda.get_device_name().replace(" ", "-") if gpu else "cpu"
    out = Path(args.out) if args.out else HERE / "results" / f"{name}-{time.strftime('%Y%m%d-%H%M')}.jsonl"
    failures = 0
    for cmd in GPU if gpu else CPU:
        if args.quick:
            cmd = [*quick(cmd), "--device", "cpu"]
        failures += run(cmd, out)
    for cmd in [] if args.quick else STUDIES:
        if NEEDS.get(cmd[0]) and importlib.util.find_spec(NEEDS[cmd[0]]) is None:
            print(f"- {' '.join(cmd)}: skipped ({NEEDS[cmd[0]]} is not installed)", flush=True)
            continue
        failures += run(cmd, out if "--json" in help_text(cmd[0]) else None)
    print(f"\nresults: {out}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
