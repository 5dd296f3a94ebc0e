"""Run every speed benchmark for this machine (GPU shapes when CUDA is present, CPU shapes
otherwise) and collect the results in benchmarks/results/<machine>-<time>.jsonl.

    python benchmarks/run_all.py
    python benchmarks/run_all.py --quick     # tiny shapes, one round: checks that everything runs
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).parent

CPU = [
    ["train_speed.py"],                                            # 4 x 128, context 64, batch 12, fp32
    ["decode_speed.py"],                                           # 6 x 384, vocab 8192, batch 1, fp32
    ["decode_speed.py", "--compile"],
    ["decode_speed.py", "--dtype", "bfloat16"],
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
# --quick: shapes small enough that the whole set runs in seconds (the figures mean nothing)
QUICK = {"train_speed.py": ["--layers", "1", "--width", "32", "--heads", "2", "--context", "16", "--vocab", "64",
                            "--batch", "2", "--steps", "2", "--warmup", "1", "--rounds", "1"],
         "decode_speed.py": ["--layers", "1", "--width", "32", "--heads", "2", "--context", "64", "--vocab", "64",
                             "--prompt", "4", "--new", "8", "--rounds", "1"]}


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
            cmd = [*cmd, *QUICK[cmd[0]], "--device", "cpu"]
        full = [sys.executable, str(HERE / cmd[0]), *cmd[1:], "--json", str(out)]
        print("+", " ".join(cmd), flush=True)
        failures += subprocess.run(full, cwd=HERE).returncode != 0
    print(f"\nresults: {out}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
