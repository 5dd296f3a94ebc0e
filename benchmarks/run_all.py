"""Run every speed benchmark for this machine (GPU shapes when CUDA is present, CPU shapes
otherwise) and collect the results in benchmarks/results/<machine>.jsonl.

    python benchmarks/run_all.py
"""

from __future__ import annotations

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


def main() -> None:
    gpu = torch.cuda.is_available()
    name = torch.cuda.get_device_name().replace(" ", "-") if gpu else "cpu"
    out = HERE / "results" / f"{name}-{time.strftime('%Y%m%d-%H%M')}.jsonl"
    failures = 0
    for cmd in GPU if gpu else CPU:
        full = [sys.executable, str(HERE / cmd[0]), *cmd[1:], "--json", str(out)]
        print("+", " ".join(cmd), flush=True)
        failures += subprocess.run(full, cwd=HERE).returncode != 0
    print(f"\nresults: {out}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
