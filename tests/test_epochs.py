"""--epochs: a run sized in passes over its training set. The length is the steps the passes take,
the table tasks see every training example once per pass (in a new order each pass, grouped by
length under --group-by-length), a stopped run resumes the same order exactly, and a resume whose
data would change the length is refused. Given with --max-steps, --max-steps sizes the run."""

import dataclasses
import math
import re

import pytest
import torch

from lmforge.api import load_model
from lmforge.cli import main
from lmforge.data.batching import EpochOrder
from lmforge.errors import ConfigError
from lmforge.runfile import TRAIN_CONFIG_FILE, read_run_file
from lmforge.tasks.classify import ClassifyConfig
from lmforge.train import TrainConfig, train
from lmforge.train.finetune import FinetuneConfig, finetune
from lmforge.train.config import FINETUNE_MAX_STEPS, MAX_STEPS
from lmforge.train.epochs import plan_steps

from .conftest import tiny_train_config, write_topics_csv


@pytest.mark.parametrize("n,per_step", [(10, 3), (12, 4), (5, 8)])
def test_every_pass_is_a_permutation_and_passes_differ(n, per_step):
    order = EpochOrder(n, seed=7, per_step=per_step)
    steps = math.ceil(4 * n / per_step)
    taken = torch.cat([order.take(s) for s in range(steps)])
    assert len(taken) == steps * per_step
    passes = [taken[e * n:(e + 1) * n] for e in range(4)]
    for p in passes:
        assert sorted(p.tolist()) == list(range(n))
    assert len({tuple(p.tolist()) for p in passes}) > 1                  # reshuffled each pass
    again = EpochOrder(n, seed=7, per_step=per_step)                     # a pure function of the step
    assert torch.equal(again.take(steps - 1), order.take(steps - 1))
    assert not torch.equal(EpochOrder(n, seed=8, per_step=per_step).take(0), order.take(0))


def test_grouped_passes_keep_every_example_and_batch_similar_lengths():
    lengths = torch.randint(1, 200, (640,), generator=torch.Generator().manual_seed(0))
    grouped = EpochOrder(640, seed=1, per_step=8, lengths=lengths)
    plain = EpochOrder(640, seed=1, per_step=8)
    steps = [grouped.take(s) for s in range(80)]
    assert sorted(torch.cat(steps).tolist()) == list(range(640))

    def spread(order_steps):
        return sum(int(lengths[s].max() - lengths[s].min()) for s in order_steps) / len(order_steps)
    assert spread(steps) < spread([plain.take(s) for s in range(80)]) / 4


def _classify(topics_csv, out, tiny_encoder_dir, **kw):
    kw = {"max_steps": None, **kw}                                    # the length: --epochs
    return tiny_train_config(topics_csv, out, task="classify", init_from=str(tiny_encoder_dir), batch_size=8,
                             eval_interval=10, lr=2e-3, task_options=ClassifyConfig(baseline=False), **kw)


def recording(seen: list):
    """wrap_task: records the training examples each step collates."""
    def wrap(task, config, tokenizer):
        collate = task.collate

        def recorded(split, indices):
            if split == "train":
                seen.append(indices.clone())
            return collate(split, indices)
        task.collate = recorded
        return task
    return wrap


def test_epochs_size_the_run_and_show_each_example_once_per_pass(tmp_path, topics_csv, tiny_encoder_dir, capsys):
    out, seen = tmp_path / "two-epochs", []
    summary = train(_classify(topics_csv, out, tiny_encoder_dir, epochs=2), wrap_task=recording(seen))
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("--epochs 2:"))
    n = int(re.search(r"([\d,]+) training examples", line).group(1).replace(",", ""))
    taken = torch.cat(seen)
    assert n == len(set(taken.tolist())) == max(taken.tolist()) + 1 >= 0.7 * 240     # the training split
    steps = math.ceil(2 * n / 8)
    assert summary["step"] == steps == len(seen) and f"{steps} steps" in line
    settings = read_run_file(out / TRAIN_CONFIG_FILE)
    assert settings["epochs"] == 2 and settings["max_steps"] == steps
    for e in range(2):
        assert sorted(taken[e * n:(e + 1) * n].tolist()) == list(range(n)), f"pass {e + 1}"


@pytest.mark.parametrize("epochs", [None, 1])
def test_max_steps_sizes_the_run_and_epochs_order_it(tmp_path, topics_csv, tiny_encoder_dir, epochs):
    seen = []
    summary = train(_classify(topics_csv, tmp_path / "steps", tiny_encoder_dir, max_steps=30, epochs=epochs),
                    wrap_task=recording(seen))
    assert summary["step"] == len(seen) == 30
    first = torch.cat(seen)[:192].tolist()                              # a pass: the 192 training rows
    if epochs is None:
        assert len(set(first)) < 192                                    # drawn at random: repeats within a pass
    else:
        assert sorted(first) == list(range(192))                        # --epochs: in passes, whatever the length


def test_an_epochs_run_resumes_exactly(tmp_path, topics_csv, tiny_encoder_dir):
    kw = dict(epochs=1.5, dropout=0.1)
    straight = train(_classify(topics_csv, tmp_path / "straight", tiny_encoder_dir, **kw))
    assert train(_classify(topics_csv, tmp_path / "stopped", tiny_encoder_dir, stop_after=13, **kw))["stopped"]
    resumed = train(_classify(topics_csv, tmp_path / "stopped", tiny_encoder_dir, resume=True, **kw))
    assert resumed["step"] == straight["step"] and straight["val_loss"] == resumed["val_loss"]
    a, b = load_model(tmp_path / "straight")[0], load_model(tmp_path / "stopped")[0]
    for (name, p), q in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(p, q), name


def test_a_resume_on_data_that_changes_the_length_is_refused(tmp_path, topics_csv, tiny_encoder_dir):
    out = tmp_path / "run"
    assert train(_classify(topics_csv, out, tiny_encoder_dir, epochs=1, stop_after=2))["stopped"]
    bigger = write_topics_csv(tmp_path / "bigger.csv", n=400)
    with pytest.raises(ConfigError, match=r"--epochs 1 of this --data take \d+ steps, but .* was planned for"):
        train(_classify(bigger, out, tiny_encoder_dir, epochs=1, resume=True))


def test_a_shard_task_counts_windows_of_the_context(tmp_path, char_data):
    from lmforge.data.shards import load_splits
    summary = train(tiny_train_config(char_data, tmp_path / "clm", epochs=0.5, max_steps=None))
    windows = (len(load_splits(char_data, 33, "")["train"]) - 1) // 32
    assert summary["step"] == math.ceil(0.5 * windows / 8)


class Counted:
    name, in_passes = "counted", True

    def __init__(self, n):
        self.n = n

    def train_examples(self):
        return self.n


def test_the_length_is_max_steps_else_the_epochs_else_the_default(tmp_path):
    cfg = TrainConfig(out=str(tmp_path / "o"), batch_size=32)
    assert plan_steps(cfg, Counted(1000)).max_steps == MAX_STEPS == 1000
    assert plan_steps(dataclasses.replace(cfg, epochs=3), Counted(1000)).max_steps == 94       # ceil(3000 / 32)
    assert plan_steps(dataclasses.replace(cfg, epochs=3, grad_accum=2), Counted(1000)).max_steps == 47
    assert plan_steps(dataclasses.replace(cfg, epochs=3, max_steps=10), Counted(1000)).max_steps == 10  # as transformers
    with pytest.raises(ConfigError, match="cannot count its training examples"):
        plan_steps(dataclasses.replace(cfg, epochs=1), Counted(None))


def test_finetune_without_a_length_runs_its_own_default(tmp_path, topics_csv, tiny_encoder_dir):
    out = tmp_path / "ft"
    cfg = _classify(topics_csv, out, tiny_encoder_dir, stop_after=1)
    assert finetune(FinetuneConfig(str(tiny_encoder_dir), task="classify"), cfg)["stopped"]
    assert read_run_file(out / TRAIN_CONFIG_FILE)["max_steps"] == FINETUNE_MAX_STEPS == 500


def test_the_cli_refuses_a_bad_epochs_value(tmp_path, topics_csv, tiny_encoder_dir, capsys):
    code = main(["finetune", str(tiny_encoder_dir), "--task", "classify", "--data", str(topics_csv),
                 "--out", str(tmp_path / "o"), "--epochs", "0"])
    err = capsys.readouterr().err
    assert code == 2 and "epochs=0.0 must be greater than 0" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
