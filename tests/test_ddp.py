"""torchrun + DDP (gloo, CPU): 2 processes x 1 micro-batch == 1 process x 2 accumulated micro-batches."""

import json
import os
import subprocess
import sys

import pytest


def _losses(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["kind"] == "train"], [r["val_loss"] for r in rows if r["kind"] == "eval"]


@pytest.mark.slow
@pytest.mark.parametrize("extra", [[], ["--ema-decay", "0.5"]], ids=["plain", "weight-average"])
def test_two_process_ddp_matches_one_process_with_accumulation(tmp_path, char_data, extra):
    """With --ema-decay the evaluations see the average, which every rank keeps alike."""
    common = ["--data", str(char_data), "--preset", "gpt-tiny", "--context-length", "32", "--batch-size", "4",
              "--max-steps", "6", "--eval-interval", "3", "--eval-iters", "2", "--log-interval", "1",
              "--sample-interval", "0", "--device", "cpu", "--no-progress", "--lr", "3e-3", "--warmup-steps", "2",
              *extra]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "lmforge", "train", "--out", str(tmp_path / "ddp"), "--grad-accum", "1", *common],
                         env=env, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = subprocess.run([sys.executable, "-m", "lmforge", "train", "--out", str(tmp_path / "one"),
                             "--grad-accum", "2", *common], env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp_train, ddp_val = _losses(tmp_path / "ddp")
    one_train, one_val = _losses(tmp_path / "one")
    assert len(ddp_train) == len(one_train) == 6
    assert ddp_train == pytest.approx(one_train, abs=2e-5)
    assert ddp_val == pytest.approx(one_val, abs=2e-5)
