"""The side-by-side speed scripts run end to end on tiny shapes and report both frameworks and
their ratio (the figures themselves are measured on a quiet machine, not asserted here)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TINY = ["--layers", "1", "--width", "32", "--heads", "2", "--rounds", "1", "--threads", "1", "--device", "cpu"]


def run_script(name: str, *args: str, out: Path) -> dict:
    done = subprocess.run([sys.executable, str(BENCHMARKS / name), *args, "--json", str(out)], cwd=BENCHMARKS,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert "ratio lmforge / transformers:" in done.stdout, done.stdout
    row = json.loads(out.read_text().splitlines()[-1])
    assert set(row["best"]) == {"lmforge", "transformers"} and all(v > 0 for v in row["best"].values())
    return row


@pytest.mark.slow
def test_train_speed_script(tmp_path):
    row = run_script("train_speed.py", *TINY, "--context", "16", "--batch", "2", "--steps", "2", "--warmup", "1",
                     out=tmp_path / "train.jsonl")
    assert row["unit"] == "tokens/s" and row["shapes"]["context"] == 16


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--compile"]], ids=["eager", "compiled"])
def test_decode_speed_script(tmp_path, extra):
    row = run_script("decode_speed.py", *TINY, "--context", "64", "--vocab", "64", "--prompt", "4", "--new", "8",
                     *extra, out=tmp_path / "decode.jsonl")
    assert row["shapes"]["new_tokens"] == 8 and row["shapes"]["compile"] == bool(extra)
