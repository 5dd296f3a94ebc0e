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
    ddp_train, ddp_val, one_train, one_val = _ddp_and_one(tmp_path, ["train", *common])
    assert len(ddp_train) == len(one_train) == 6
    assert ddp_train == pytest.approx(one_train, abs=2e-5)
    assert ddp_val == pytest.approx(one_val, abs=2e-5)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["classify", "seq2seq"])
def test_epochs_under_ddp_match_one_process(tmp_path, topics_csv, pairs_tsv, tiny_encoder_dir, task):
    """--epochs: both count 2 x 1 x 4 = 1 x 2 x 4 examples a step, and the ranks split each step's
    share of the shuffled pass as one process splits it into micro-batches. seq2seq evaluates one
    batch (rank 1 has none) on a model with buffers, which DDP broadcasts at every forward."""
    if task == "classify":
        args = ["finetune", str(tiny_encoder_dir), "--task", "classify", "--data", str(topics_csv), "--no-baseline",
                "--eval-iters", "2"]
    else:
        args = ["train", "--task", "seq2seq", "--preset", "seq2seq-tiny", "--data", str(pairs_tsv), "--source-column",
                "en", "--target-column", "zh", "--eval-iters", "1", "--eval-translations", "0", "--dropout", "0"]
    args += ["--batch-size", "4", "--epochs", "0.2", "--eval-interval", "3", "--log-interval", "1", "--device", "cpu",
             "--no-progress", "--warmup-steps", "2"]
    ddp_train, ddp_val, one_train, one_val = _ddp_and_one(tmp_path, args)
    steps = {"classify": 5, "seq2seq": 6}[task]                     # 0.2 x 192 or 240 training rows / 8 a step
    assert len(ddp_train) == len(one_train) == steps
    assert ddp_train == pytest.approx(one_train, abs=2e-5)
    assert ddp_val == pytest.approx(one_val, abs=2e-5)


def _ddp_and_one(tmp_path, args):
    """(train losses, val losses) of `lmforge ARGS` under torchrun with 2 processes x --grad-accum 1,
    then of one process with --grad-accum 2."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    ddp = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "lmforge", *args, "--out", str(tmp_path / "ddp"), "--grad-accum", "1"],
                         env=env, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    single = subprocess.run([sys.executable, "-m", "lmforge", *args, "--out", str(tmp_path / "one"),
                             "--grad-accum", "2"], env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    return (*_losses(tmp_path / "ddp"), *_losses(tmp_path / "one"))
