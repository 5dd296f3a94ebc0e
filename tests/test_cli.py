import json
import subprocess
import sys

import pytest

from lmforge.cli import build_parser, main


def test_help_lists_every_verb(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    for verb in ("quickstart", "prepare", "train", "generate", "eval", "presets"):
        assert verb in out


def test_train_flags_come_from_the_dataclass():
    from lmforge.train import TrainConfig
    parser = build_parser()
    ns = parser.parse_args(["train", "--max-steps", "7", "--no-progress", "--n-kv-head", "2"])
    assert ns.max_steps == 7 and ns.progress is False and ns.n_kv_head == 2
    sub = next(a for a in parser._actions if a.dest == "verb").choices["train"]
    dests = {a.dest for a in sub._actions}
    from lmforge.options import cli_fields
    assert set(cli_fields(TrainConfig)) <= dests                       # nested model overrides flattened
    assert {"context_length", "n_layer", "dropout", "attention_dropout"} <= dests and "model" not in dests


def test_user_errors_print_one_line_and_exit_2(capsys, tmp_path):
    assert main(["train", "--data", str(tmp_path / "none"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmforge train: error: data directory") and "Traceback" not in err
    assert main(["generate", str(tmp_path / "none"), "hi"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["eval", str(tmp_path)]) == 2
    assert "--text FILE" in capsys.readouterr().err


def test_presets_verb(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "gpt2-124m" in out and "124.5M" in out and "llama-1b" in out


def test_generate_json_and_prompt_file(tiny_model_dir, tmp_path, capsys):
    prompts = tmp_path / "p.txt"
    prompts.write_text("The \nA \n")
    assert main(["generate", str(tiny_model_dir), "--prompt-file", str(prompts), "--json", "--greedy",
                 "--max-new-tokens", "5", "--device", "cpu"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["prompt"] for r in rows] == ["The ", "A "] and all(r["finish_reason"] for r in rows)


def test_module_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "lmforge", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("lmforge ")
