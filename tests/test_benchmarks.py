"""The side-by-side speed scripts run end to end (`benchmarks/run_all.py --quick`: the CPU set
on tiny shapes) and report both frameworks and their ratio; the GPU suite runs its dry run. The
figures themselves are measured on a quiet machine and recorded in docs/performance.md, not
asserted here."""

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
    sys.path.insert(0, str(BENCHMARKS))
    import run_all
    assert done.stdout.count("ratio lmforge / transformers:") == len(run_all.CPU), done.stdout
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["title"].split()[0] for r in rows] == ["training", "masked-LM", "training"] + ["greedy"] * 5
    assert [(r["shapes"].get("compile"), r["shapes"]["dtype"]) for r in rows] == [
        (False, "float32"), (False, "float32"), (False, "float32"), ("default", "float32"), (False, "float32"),
        (True, "float32"), (False, "float32"), (False, "bfloat16")]
    assert [r["shapes"]["batch"] for r in rows[3:]] == [1, 1, 1, 4, 1]          # a batch: products on packed weights
    assert "lmforge's default: eager for" in done.stdout          # the default row ran until it compiled
    assert [r["shapes"]["dropout"] for r in rows[:3]] == [0.0, 0.0, 0.2]        # the third: the quickstart's regime
    for row in rows:
        assert set(row["best"]) == {"lmforge", "transformers"} and all(v > 0 for v in row["best"].values())


def test_run_all_names_every_benchmark():
    """Every script in benchmarks/ is run by run_all.py, or named there with the reason it is not."""
    sys.path.insert(0, str(BENCHMARKS))
    import run_all
    listed = {cmd[0] for cmd in run_all.CPU + run_all.GPU + run_all.STUDIES} | set(run_all.ELSEWHERE)
    assert {p.name for p in BENCHMARKS.glob("*.py")} == listed
    assert all((BENCHMARKS / script).exists() for script in listed)


@pytest.mark.slow
def test_decode_profile_sorts_a_step_into_its_parts():
    done = subprocess.run([sys.executable, str(BENCHMARKS / "decode_profile.py"), "--new", "4", "--bits", "8"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    for part in ("GEMV", "attention", "other model ops", "Python and dispatch"):
        assert part in done.stdout, done.stdout


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
    """benchmarks/serve_throughput.py --quick: lmforge serve (eager, and its default) at 1, 4 and
    16 streaming clients, and `transformers serve` beside it when its command is installed (it is with the test extra)."""
    out = tmp_path / "rows.json"
    done = subprocess.run([sys.executable, str(BENCHMARKS / "serve_throughput.py"), "--quick", "--json", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = json.loads(out.read_text())
    for name in ("lmforge serve --no-compile", "lmforge serve"):          # the eager step, and the default
        ours = [r for r in rows if r["server"] == name]
        assert [r["clients"] for r in ours] == [1, 4, 16] and all(r["tokens"] == 8 * 8 for r in ours), done.stdout
        assert all(r["tokens_per_s"] > 0 and r["ttft_p50"] <= r["ttft_p95"] for r in ours)
    assert "ratio lmforge / lmforge serve --no-compile at 1 clients:" in done.stdout, done.stdout
    if shutil.which("transformers"):
        assert "ratio lmforge / transformers serve --continuous-batching at 16 clients:" in done.stdout, done.stdout


# nanoGPT is not on PyPI: a stand-in train.py that prints its iteration lines (10 ms each)
FAKE_NANOGPT_TRAIN = """import sys
settings = dict(arg[2:].split("=", 1) for arg in sys.argv[1:])
for i in range(int(settings["max_iters"]) + 1):
    print(f"iter {i}: loss 5.0000, time 10.00ms, mfu 1.00%")
"""


def errors(entry) -> list:
    """The "error" values anywhere in a results entry."""
    if not isinstance(entry, dict):
        return []
    return ([entry["error"]] if "error" in entry else []) + [e for v in entry.values() for e in errors(v)]


@pytest.mark.slow
def test_gpu_suite_dry_run_reports_every_part(tmp_path):
    """benchmarks/gpu_suite.py --dry-run: every part's code runs on CPU on tiny shapes, and the JSON
    holds every entry of every part, each with figures or the reason it has none (CUDA, vLLM). The
    fake nanoGPT's 10 ms per iteration of 2 x 32 tokens must read back as 6,400 tokens/s, and one
    process under FSDP and activation checkpointing must not change the losses of the plain loop."""
    nanogpt = tmp_path / "nanogpt"
    nanogpt.mkdir()
    (nanogpt / "train.py").write_text(FAKE_NANOGPT_TRAIN)
    (nanogpt / "model.py").write_text("")
    (nanogpt / "configurator.py").write_text("")
    out = tmp_path / "suite.json"
    done = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_suite.py"), "--dry-run", "--nanogpt", str(nanogpt),
                           "--json", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    r = json.loads(out.read_text())
    figures = {"env": ["versions", "missing"], "train": ["lmforge", "nanogpt"],
               "decode": ["model", "batch_1", "batch_2"],
               "correctness": ["bf16_vs_fp32_loss", "greedy_vs_transformers", "greedy_vs_transformers_fp32"],
               "memory": ["plain", "activation_checkpointing", "fsdp"], "serve": ["lmforge"]}
    for part, keys in figures.items():
        jobs = [v for k, v in r[part].items() if k.endswith("_job")]
        assert jobs and all(job["rc"] == 0 for job in jobs), (part, jobs)
        for key in keys:
            assert "skipped" not in r[part][key] and not errors(r[part][key]), (part, key, r[part][key])
    assert "needs CUDA" in r["env"]["ceilings"]["skipped"]
    assert "vLLM serves on GPUs" in r["serve"]["vllm"]["skipped"] and "skipped" in r["env"]["vllm"]
    assert r["train"]["nanogpt"]["tokens_per_s"] == 6400.0 and r["train"]["lmforge"]["tokens_per_s"] > 0
    for run in ("plain", "activation_checkpointing", "fsdp"):
        assert "needs CUDA" in r["memory"][run]["peak_cuda_GiB"]["skipped"]
        assert r["memory"][run]["losses"] == pytest.approx(r["memory"]["plain"]["losses"], rel=1e-4)
    for batch in (1, 2):
        row = r["decode"][f"batch_{batch}"]
        assert min(row["tokens_per_s"].values()) > 0 and "needs CUDA" in row["bandwidth_limit"]["skipped"]
    loss = r["correctness"]["bf16_vs_fp32_loss"]
    assert loss["steps"] == 6 and loss["pass"] is True
    greedy = r["correctness"]["greedy_vs_transformers"]
    assert len(greedy["lmforge"]) == len(greedy["transformers"]) == 8 and greedy["prefill_logits_rel_error"] < 0.05
    fp32 = r["correctness"]["greedy_vs_transformers_fp32"]
    assert fp32["equal"] is True and fp32["prefill_logits_rel_error"] < 1e-4 and r["summary"]["greedy_equal"]["float32"]
    for clients, row in r["serve"]["lmforge"].items():
        assert row["tokens"] == 8 * row["requests"] and row["tokens_per_s"] > 0, (clients, row)
    assert set(r["summary"]) >= {"train_lmforge_over_nanogpt", "fsdp_over_plain_tokens_per_s", "greedy_equal"}


@pytest.mark.slow
def test_serve_pressure_benchmark_holds_every_promise(tmp_path):
    """benchmarks/serve_pressure.py --quick against a real server: the storm, the slow reader,
    the slow senders, SIGTERM mid-stream and memory over 800 requests (measured from the 400th)
    each hold what they promise."""
    done = subprocess.run([sys.executable, str(BENCHMARKS / "serve_pressure.py"), "--quick"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-3000:]
    assert done.stdout.count("\nPASS ") == 5 and "pressure: 5 of 5 held" in done.stdout, done.stdout
