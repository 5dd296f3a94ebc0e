"""Run files: `--config FILE.yaml`, `--print-config`, the saved `train_config.yaml` and what
`--resume` accepts; one list of options behind the CLI, the YAML and the Python API."""

import json

import yaml

from lmforge.cli import main
from lmforge.config import ModelOverridesConfig
from lmforge.quickstart import QUICKSTART_TRAINING, QuickstartConfig
from lmforge.train import TrainConfig

TINY = ["--preset", "gpt-tiny", "--context-length", "32", "--batch-size", "4", "--max-steps", "6", "--lr", "3e-3",
        "--warmup-steps", "2", "--eval-interval", "3", "--eval-iters", "1", "--log-interval", "1",
        "--sample-interval", "0", "--device", "cpu", "--no-progress"]


def losses(run) -> list[float]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["kind"] == "train"] + [r["val_loss"] for r in rows if "val_loss" in r]


def run_file(path, argv: list[str]) -> None:
    """The flags of `argv` as a YAML run file (`--max-steps 6` -> `max_steps: 6`)."""
    values, i = {}, 0
    while i < len(argv):
        key = argv[i].lstrip("-").replace("-", "_")
        if key.startswith("no_"):
            values[key[3:]], i = False, i + 1
        else:
            values[key], i = yaml.safe_load(argv[i + 1]), i + 2
    path.write_text(yaml.safe_dump(values))


def test_a_run_file_reproduces_the_run_of_the_same_flags(char_data, tmp_path, capsys):
    assert main(["train", "--data", str(char_data), "--out", str(tmp_path / "flags"), *TINY]) == 0
    run_file(tmp_path / "run.yaml", TINY)
    assert main(["train", "--data", str(char_data), "--out", str(tmp_path / "file"), "--config",
                 str(tmp_path / "run.yaml")]) == 0
    assert len(losses(tmp_path / "flags")) == 8 and losses(tmp_path / "flags") == losses(tmp_path / "file")
    saved = yaml.safe_load((tmp_path / "file" / "train_config.yaml").read_text())
    assert saved["batch_size"] == 4 and saved["context_length"] == 32 and saved["task"] == "clm"
    # the saved settings are themselves a run file: the same run again
    capsys.readouterr()
    assert main(["train", "--out", str(tmp_path / "again"), "--config", str(tmp_path / "file" / "train_config.yaml")]) == 0
    assert losses(tmp_path / "again") == losses(tmp_path / "file")


def test_flags_override_the_file_and_print_config_shows_the_result(tmp_path, capsys):
    (tmp_path / "run.yaml").write_text("batch-size: 3\nlr: 0.01\nn_layer: 2\ntask: mlm\nmask_prob: 0.2\n")
    assert main(["train", "--config", str(tmp_path / "run.yaml"), "--lr", "0.5", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["batch_size"] == 3 and printed["lr"] == 0.5 and printed["n_layer"] == 2
    assert printed["task"] == "mlm" and printed["mask_prob"] == 0.2 and "text_column" not in printed   # mlm's own


def test_bad_run_files_are_one_line_errors(tmp_path, capsys):
    cases = {"batchsize: 3\n": "unknown setting 'batchsize'; did you mean 'batch_size'?",
             "batch_size: [1, 2]\n": "batch_size must be a single value",
             "compile: 3\n": "compile must be true or false",
             "optimizer: sgd\n": "optimizer must be one of adamw, muon",
             "- a\n- b\n": "must be a mapping of settings",
             "lr: [\n": "is not valid YAML"}
    for i, (text, message) in enumerate(cases.items()):
        (tmp_path / f"{i}.yaml").write_text(text)
        assert main(["train", "--config", str(tmp_path / f"{i}.yaml")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("lmforge train: error: ") and message in err and len(err.splitlines()) == 1, err
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "pos.yaml").write_text("model_dir: runs/x\n")
    assert main(["generate", "runs/x", "--config", str(tmp_path / "pos.yaml")]) == 2
    assert "argument of the command line" in capsys.readouterr().err


def test_resume_refuses_a_flag_that_changes_the_training_unless_forced(char_data, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert main(["train", "--data", str(char_data), "--out", out, *TINY, "--stop-after", "3"]) == 0
    capsys.readouterr()
    assert main(["train", "--data", str(char_data), "--out", out, "--resume", "--batch-size", "8"]) == 2
    err = capsys.readouterr().err
    assert "would change batch_size from 4" in err and "--force" in err
    # no flags: the run's own train_config.yaml gives every setting, and the run finishes exactly
    assert main(["train", "--data", str(char_data), "--out", out, "--resume"]) == 0
    assert main(["train", "--data", str(char_data), "--out", str(tmp_path / "whole"), *TINY]) == 0
    assert losses(tmp_path / "run") == losses(tmp_path / "whole")
    assert main(["train", "--data", str(char_data), "--out", out, "--resume", "--max-steps", "8", "--force"]) == 0
    assert yaml.safe_load((tmp_path / "run" / "train_config.yaml").read_text())["max_steps"] == 8


def test_one_source_for_nested_options():
    cfg = QuickstartConfig()
    assert cfg.train.max_steps == QUICKSTART_TRAINING["max_steps"] and cfg.train.model.context_length == 128
    assert TrainConfig().model == ModelOverridesConfig() and ModelOverridesConfig(n_layer=2).given() == {"n_layer": 2}
