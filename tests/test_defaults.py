"""Training defaults come from one place (`lmforge.tasks.task_defaults`, `FINETUNE_DEFAULTS`,
`QUICKSTART_TRAINING`) for the CLI and the Python API; a collapsed run is reported, not finished
quietly."""

import json
import math

import pytest

from lmforge.cli import build_parser
from lmforge.options import from_args
from lmforge.quickstart import QUICKSTART_TRAINING, QuickstartConfig
from lmforge.tasks import DEFAULTS, TASK_DEFAULTS, task_defaults
from lmforge.train import TrainConfig
from lmforge.train.collapse import LossWatch
from lmforge.train.finetune import FINETUNE_DEFAULTS


def cli_config(*argv, cls=TrainConfig):
    ns = build_parser().parse_args(list(argv))
    return from_args(cls, ns)


@pytest.mark.parametrize("task", ["clm", "mlm", "classify", "seq2seq", "sft"])
def test_cli_and_python_api_take_the_same_task_defaults(task):
    api = TrainConfig(task=task)
    cli = cli_config("train", "--task", task)
    for name, value in task_defaults(task).items():
        assert getattr(api, name) == getattr(cli, name) == value, name
    assert api.optimizer == cli.optimizer == "muon"
    assert TrainConfig(task=task, lr=5e-4).lr == 5e-4                 # a value given wins
    assert cli_config("train", "--task", task, "--optimizer", "adamw").optimizer == "adamw"


def test_seq2seq_has_its_own_measured_defaults():
    assert TASK_DEFAULTS["seq2seq"]["lr"] != DEFAULTS["lr"]
    s2s = TrainConfig(task="seq2seq")
    assert (s2s.lr, s2s.muon_lr, s2s.batch_size, s2s.warmup_steps) == (2e-3, 0.01, 32, 50)
    clm = TrainConfig()
    assert (clm.lr, clm.muon_lr, clm.batch_size, clm.warmup_steps) == (1e-3, 0.02, 16, 100)


def test_finetune_and_quickstart_defaults_are_one_source():
    ft = cli_config("finetune", "runs/base", "--task", "classify")
    for name in ("muon_lr", "lr", "warmup_steps", "weight_decay"):
        assert getattr(ft, name) == FINETUNE_DEFAULTS[name], name
    assert ft.max_steps is None and ft.epochs is None             # `finetune` runs FINETUNE_MAX_STEPS then
    assert ft.optimizer == "muon"
    assert cli_config("finetune", "runs/base", "--strategy", "fsdp").optimizer == "adamw"
    qs_cli = cli_config("quickstart", cls=QuickstartConfig).train
    qs_api = QuickstartConfig().train
    for name, value in QUICKSTART_TRAINING.items():
        flat = getattr(qs_api.model if hasattr(qs_api.model, name) else qs_api, name)   # model overrides or run
        assert flat == value, name
    assert (qs_cli.optimizer, qs_cli.muon_lr, qs_cli.lr) == (qs_api.optimizer, qs_api.muon_lr, qs_api.lr) == \
        ("muon", 0.03, 2e-3)


def test_loss_watch_names_collapse_and_a_stuck_loss():
    ln2 = math.log(2)
    watch = LossWatch(constant_loss=ln2, check_from=20)
    said = [watch.update(step, 0.6935) for step in range(10, 110, 10)]
    alarms = [s for s in said if s]
    assert len(alarms) == 1 and "collapsed" in alarms[0] and "0.6931" in alarms[0] and "lower learning rate" in alarms[0]
    assert "collapsed" in watch.verdict()
    learning = LossWatch(constant_loss=ln2, check_from=20)
    for step in range(10, 110, 10):
        assert learning.update(step, ln2 * (1 - step / 200)) is None
    assert learning.verdict() is None
    stuck = LossWatch(constant_loss=None, check_from=20)
    msgs = [stuck.update(step, 5.0 + 0.001 * (step % 20)) for step in range(10, 110, 10)]
    assert any(m and "has not gone down since step 10" in m for m in msgs)
    recovered = LossWatch(constant_loss=ln2, check_from=0)
    said = [recovered.update(step, 0.694) for step in range(10, 60, 10)]
    said += [recovered.update(step, 0.2) for step in range(60, 160, 10)]
    assert [s.split(":")[0] for s in said if s] == ["warning at step 50", "note at step 60"]   # told once each
    assert "since the warning at step 50" in said[5] and "learning after all" in said[5]
    assert recovered.verdict() is None                        # warned on the way, but not at the end


def test_a_collapsed_classifier_is_reported(tmp_path, capsys):
    rows = ["text\tlabel"] + [f"{w} {i}\t{'pos' if w == 'good' else 'neg'}" for i in range(60) for w in ("good", "bad")]
    table = tmp_path / "t.tsv"
    table.write_text("\n".join(rows) + "\n")
    from lmforge.cli import main
    common = ["train", "--task", "classify", "--data", str(table), "--preset", "bert-tiny", "--tokenizer", "char",
              "--context-length", "16", "--batch-size", "8", "--max-steps", "120", "--log-interval", "5",
              "--eval-interval", "120", "--no-progress", "--device", "cpu"]
    out = tmp_path / "collapsed"
    assert main([*common, "--optimizer", "adamw", "--lr", "1", "--warmup-steps", "0", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "warning: the training loss is" in err and "no better than ignoring the input" in err
    assert "lower learning rate" in err
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "warning" and "collapsed" in r["message"] for r in rows)
    assert main([*common, "--out", str(tmp_path / "healthy")]) == 0          # the defaults learn: no warning
    assert "warning" not in capsys.readouterr().err
