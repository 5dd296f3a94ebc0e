"""FSDP2 (gloo, CPU), sharded checkpoints that reshard, activation checkpointing, a 2-"node" launch.

The reference for every distributed run is one process with 2 accumulated micro-batches: the same
8 sequences per step. fp32 on CPU; losses compared to 2e-5 (the metrics log rounds to 1e-6; the
sums run in another order), weights to 1e-5.
"""

import copy
import json
import os
import re
import shutil
import socket
import subprocess
import sys

import pytest
import torch

from lmforge.cli import main
from lmforge.config import get_preset
from lmforge.model import build_model
from lmforge.modeldir import ADAPTER_FILE, WEIGHTS_FILE, read_weights
from lmforge.train.distributed import activation_checkpointing, blocks_of

COMMON = ["--preset", "gpt-tiny", "--context-length", "32", "--batch-size", "4", "--max-steps", "6",
          "--eval-interval", "3", "--eval-iters", "3", "--log-interval", "1", "--sample-interval", "3",
          "--sample-tokens", "8", "--device", "cpu", "--no-progress", "--lr", "3e-3", "--warmup-steps", "2",
          "--optimizer", "adamw"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def _losses(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["kind"] == "train"], [r["val_loss"] for r in rows if r["kind"] == "eval"]


def _same_run(a, b, weights_file=WEIGHTS_FILE):
    (a_train, a_val), (b_train, b_val) = _losses(a), _losses(b)
    assert len(a_train) == len(b_train) == 6 and len(a_val) == len(b_val) == 2
    assert a_train == pytest.approx(b_train, abs=2e-5) and a_val == pytest.approx(b_val, abs=2e-5)
    wa, meta_a = read_weights(a / weights_file)
    wb, meta_b = read_weights(b / weights_file)
    assert meta_a["step"] == meta_b["step"] == "6" and wa.keys() == wb.keys()
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-5, rtol=1e-4)


def _torchrun(*args, timeout=300):
    done = subprocess.run([*TORCHRUN, *args], env=ENV, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, char_data):
    """One process, 2 accumulated micro-batches of 4, 6 steps straight."""
    out = tmp_path_factory.mktemp("fsdp") / "reference"
    assert main(["train", "--data", str(char_data), "--out", str(out), "--grad-accum", "2", *COMMON]) == 0
    return out


@pytest.mark.parametrize("preset", ["gpt-tiny", "bert-tiny", "seq2seq-tiny"])
def test_activation_checkpointing_gives_the_same_loss_and_gradients(preset):
    torch.manual_seed(0)
    plain = build_model(get_preset(preset, dropout=0.0))
    checkpointed = copy.deepcopy(plain)
    assert activation_checkpointing(checkpointed) == len(blocks_of(plain)) >= 2
    x = torch.randint(0, 200, (2, 16))

    def loss_and_grads(model):
        model.zero_grad()
        logits = model(x, x) if preset == "seq2seq-tiny" else model(x)
        loss = logits.float().logsumexp(-1).mean()
        loss.backward()
        return loss.detach(), {n: p.grad for n, p in model.named_parameters() if p.grad is not None}

    loss_a, grads_a = loss_and_grads(plain)
    loss_b, grads_b = loss_and_grads(checkpointed)
    torch.testing.assert_close(loss_a, loss_b, rtol=0, atol=0)
    assert grads_a.keys() == grads_b.keys() and len(grads_a) > 4
    for n in grads_a:
        torch.testing.assert_close(grads_a[n], grads_b[n], rtol=1e-6, atol=1e-7)


def test_activation_checkpointing_in_one_process_trains_the_same(tmp_path, char_data, reference):
    assert main(["train", "--data", str(char_data), "--out", str(tmp_path / "ac"), "--grad-accum", "2",
                 "--activation-checkpointing", *COMMON]) == 0
    _same_run(tmp_path / "ac", reference)


def test_strategy_errors(tmp_path, char_data, capsys):
    args = ["train", "--data", str(char_data), "--out", str(tmp_path / "x"), *COMMON]
    assert main([*args, "--strategy", "fsdp"]) == 2
    assert "processes started by torchrun" in capsys.readouterr().err
    assert main([*args, "--strategy", "fsdp", "--optimizer", "muon"]) == 2
    assert "--optimizer adamw with fsdp" in capsys.readouterr().err


@pytest.mark.slow
def test_fsdp_on_two_nodes_matches_one_process_and_resumes_on_one(tmp_path, char_data, reference, capsys):
    """Two torchrun launchers (--nnodes 2, one process each) meet at a c10d rendezvous on 127.0.0.1
    and train with FSDP for 3 steps; the sharded checkpoint then resumes on one process (2 -> 1)."""
    out = tmp_path / "two-nodes"
    port = _free_port()
    launchers = [subprocess.Popen([*TORCHRUN, "--nnodes", "2", "--nproc-per-node", "1", "--node-rank", str(rank),
                                   "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}",
                                   "--rdzv-id", "lmforge-test", "-m", "lmforge", "train", "--data", str(char_data),
                                   "--out", str(out), "--strategy", "fsdp", "--stop-after", "3", *COMMON],
                                  env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for rank in (0, 1)]
    for launcher in launchers:
        output, _ = launcher.communicate(timeout=300)
        assert launcher.returncode == 0, output[-3000:]
    shards = sorted(p.name for p in (out / "train_state" / "step-00000003").iterdir())
    assert shards == [".metadata", "__0_0.distcp", "__1_0.distcp"]

    # bad resumes: another number of sequences per step; a rank's shard missing
    broken = shutil.copytree(out, tmp_path / "broken")
    resume = ["train", "--data", str(char_data), "--resume", *COMMON]
    assert main([*resume, "--out", str(broken), "--grad-accum", "1"]) == 2
    assert "pass --grad-accum 2 to continue the same run" in capsys.readouterr().err
    (broken / "train_state" / "step-00000003" / "__1_0.distcp").unlink()
    capsys.readouterr()
    assert main([*resume, "--out", str(broken), "--grad-accum", "2"]) == 2
    assert re.search(r"missing __1_0.distcp .*copy the missing files back", capsys.readouterr().err)

    assert main([*resume, "--out", str(out), "--grad-accum", "2"]) == 0        # 2 processes -> 1
    _same_run(out, reference)
    assert [p.name for p in (out / "train_state").iterdir()] == ["step-00000006.pt"]


@pytest.mark.slow
def test_one_process_checkpoint_resumes_under_fsdp_on_two(tmp_path, char_data, reference):
    out = tmp_path / "one-then-two"
    assert main(["train", "--data", str(char_data), "--out", str(out), "--grad-accum", "2", "--stop-after", "3",
                 *COMMON]) == 0
    _torchrun("--standalone", "--nproc_per_node", "2", "-m", "lmforge", "train", "--data", str(char_data),
              "--out", str(out), "--strategy", "fsdp", "--resume", "--grad-accum", "1", *COMMON)
    _same_run(out, reference)
    assert [p.name for p in (out / "train_state").iterdir()] == ["step-00000006"]


@pytest.mark.slow
def test_encoder_classifier_with_lora_and_activation_checkpointing_under_fsdp(tmp_path, tiny_encoder_dir, topics_csv):
    """An encoder task (classify, with a new head) and LoRA adapters, through the same loop."""
    args = ["finetune", str(tiny_encoder_dir), "--task", "classify", "--no-keep-best", "--data", str(topics_csv), "--lora-rank", "4",
            "--batch-size", "4", "--max-steps", "6", "--eval-interval", "3", "--eval-iters", "2", "--log-interval",
            "1", "--device", "cpu", "--no-progress", "--lr", "3e-3", "--warmup-steps", "2", "--optimizer", "adamw"]
    assert main([*args, "--out", str(tmp_path / "one"), "--grad-accum", "2"]) == 0
    _torchrun("--standalone", "--nproc_per_node", "2", "-m", "lmforge", *args, "--out", str(tmp_path / "fsdp"),
              "--strategy", "fsdp", "--activation-checkpointing")
    _same_run(tmp_path / "fsdp", tmp_path / "one", ADAPTER_FILE)
    adapters, _ = read_weights(tmp_path / "fsdp" / ADAPTER_FILE)
    assert any(".lora_B." in k for k in adapters) and any(k.startswith("classifier.") for k in adapters)
    assert (tmp_path / "fsdp" / "classification_report.json").is_file()


def test_an_interrupted_sharded_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    from lmforge.train import checkpoint
    from lmforge.train.distributed import DistInfo
    one = DistInfo()

    def save(step):
        state = {"model": {"w": torch.full((4,), float(step))}, "counters": torch.tensor([step, 0])}
        checkpoint.save_sharded_checkpoint(tmp_path, step, state, lambda: {"w": torch.full((4,), float(step))},
                                           None, WEIGHTS_FILE, one)

    save(3)
    (tmp_path / "train_state" / ".step-00000006.partial").mkdir()         # a save killed while writing shards

    def killed(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(checkpoint, "save_tensors", killed)               # killed before the commit
    with pytest.raises(KeyboardInterrupt):
        save(6)
    monkeypatch.undo()
    weights, state, step = checkpoint.load_checkpoint(tmp_path)
    assert step == 3 and weights["w"].tolist() == [3.0] * 4 and state["sharded"].endswith("step-00000003")
    loaded = {"model": {"w": torch.zeros(4)}, "counters": torch.zeros(2, dtype=torch.long)}
    checkpoint.load_sharded_state(tmp_path / "train_state" / "step-00000003", loaded)
    assert loaded["model"]["w"].tolist() == [3.0] * 4 and loaded["counters"].tolist() == [3, 0]
    save(6)                                                                # the next save cleans up
    assert sorted(p.name for p in (tmp_path / "train_state").iterdir()) == ["step-00000006"]
    assert checkpoint.checkpoint_step(tmp_path) == 6
    assert read_weights(tmp_path / WEIGHTS_FILE)[0]["w"].tolist() == [6.0] * 4
