"""The side-by-side speed scripts run end to end (`benchmarks/run_all.py --quick`: the CPU set
on tiny shapes) and report both frameworks and their ratio. The figures themselves are
measured on a quiet machine and recorded in docs/performance.md, not asserted here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.slow
def test_run_all_quick_runs_every_cpu_benchmark(tmp_path):
    out = tmp_path / "results.jsonl"
    done = subprocess.run([sys.executable, str(BENCHMARKS / "run_all.py"), "--quick", "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("ratio lmforge / transformers:") == 4, done.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["title"].split()[0] for r in rows] == ["training", "greedy", "greedy", "greedy"]
    assert [(r["shapes"].get("compile"), r["shapes"]["dtype"]) for r in rows] == [
        (False, "float32"), (False, "float32"), (True, "float32"), (False, "bfloat16")]
    for row in rows:
        assert set(row["best"]) == {"lmforge", "transformers"} and all(v > 0 for v in row["best"].values())


@pytest.mark.slow
def test_quality_benchmark_compares_with_the_transformers_trainer(tmp_path):
    """benchmarks/quality.py end to end on a tiny budget: both frameworks train, both are scored
    by the same function on the same windows, and the ratio is printed."""
    done = subprocess.run([sys.executable, str(BENCHMARKS / "quality.py"), "--preset", "gpt-tiny", "--minutes", "0.02",
                           "--batch-size", "4", "--eval-windows", "8"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    assert "transformers Trainer (AdamW)" in out and "lmforge (Muon, its defaults)" in out, out
    losses = [float(line.split()[-2]) for line in out.splitlines()
              if line.startswith(("transformers Trainer", "lmforge (Muon"))]
    assert len(losses) == 2 and all(0 < v < 10 for v in losses)
    assert "val-loss ratio lmforge / transformers:" in out


@pytest.mark.slow
def test_serve_throughput_benchmark_runs_both_servers(tmp_path):
    """benchmarks/serve_throughput.py --quick: lmforge serve at 1, 4 and 16 streaming clients,
    and `transformers serve` beside it when its command is installed (it is with the test extra)."""
    out = tmp_path / "rows.json"
    done = subprocess.run([sys.executable, str(BENCHMARKS / "serve_throughput.py"), "--quick", "--json", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = json.loads(out.read_text())
    ours = [r for r in rows if r["server"] == "lmforge serve"]
    assert [r["clients"] for r in ours] == [1, 4, 16] and all(r["tokens"] == 8 * 8 for r in ours), done.stdout
    assert all(r["tokens_per_s"] > 0 and r["ttft_p50"] <= r["ttft_p95"] for r in ours)
    if shutil.which("transformers"):
        assert "ratio lmforge / transformers serve --continuous-batching at 16 clients:" in done.stdout, done.stdout


@pytest.mark.slow
def test_serve_pressure_benchmark_holds_every_promise(tmp_path):
    """benchmarks/serve_pressure.py --quick against a real server: the storm, the slow reader,
    the slow senders, SIGTERM mid-stream and memory over 400 requests each hold what they promise."""
    done = subprocess.run([sys.executable, str(BENCHMARKS / "serve_pressure.py"), "--quick"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
    assert done.stdout.count("\nPASS ") == 5 and "pressure: 5 of 5 held" in done.stdout, done.stdout
