"""Experiment tracking (`--report-to`): every tracker, read back through its own library's reader,
holds the scalars of metrics.jsonl at their steps, the samples as text and the run's settings
(train_config.yaml) as hyper-parameters, across a stop and a --resume; nothing goes to the network
(wandb offline, trackio and MLflow local); a missing library is a one-line error; without
--report-to no tracker writes anything; under torchrun only the main process reports."""

from __future__ import annotations

import html
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lmforge.cli import main
from lmforge.errors import ConfigError
from lmforge.runfile import read_run_file
from lmforge.train import TrainConfig, train
from lmforge.train.tracking import REPORT_TO_VALUES, TRACKERS, chosen, make_trackers

from .conftest import tiny_train_config

# every variable through which a user points a tracker elsewhere (a server, a Space, a login)
TRACKER_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME", "TRACKIO_SPACE_ID", "TRACKIO_SERVER_URL",
               "TRACKIO_PROJECT", "WANDB_MODE", "WANDB_API_KEY", "WANDB_DIR", "WANDB_PROJECT", "WANDB_BASE_URL")


def local_tracker_env(mp: pytest.MonkeyPatch, home: Path) -> None:
    """Trackers with no configuration of the user's: all local, their own stores under `home`."""
    for name in TRACKER_ENV:
        mp.delenv(name, raising=False)
    mp.setenv("NETRC", str(home / "no-netrc"))                   # no wandb login: lmforge picks offline
    mp.setenv("TRACKIO_DIR", str(home / "trackio"))
    for name in ("WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_CONFIG_DIR"):
        mp.setenv(name, str(home / name.lower()))


@pytest.fixture(scope="module")
def tracked(tmp_path_factory, char_data):
    """A run reporting to the four trackers: stopped after 4 of 6 steps, then resumed to the end.
    Returns (model directory, {(tag, step): value} of metrics.jsonl's train and eval rows, its texts)."""
    home = tmp_path_factory.mktemp("trackers")
    out = home / "run"
    with pytest.MonkeyPatch.context() as mp:
        local_tracker_env(mp, home)
        if "trackio" in sys.modules:                               # trackio reads TRACKIO_DIR when imported
            assert str(sys.modules["trackio"].utils.TRACKIO_DIR) == os.environ["TRACKIO_DIR"]
        cfg = dict(max_steps=6, eval_interval=3, sample_interval=3, sample_tokens=4, report_to=list(TRACKERS))
        train(tiny_train_config(char_data, out, stop_after=4, **cfg))
        train(tiny_train_config(char_data, out, resume=True, **cfg))
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        scalars = {(f"{r['kind']}/{k}", r["step"]): v for r in rows if r["kind"] in ("train", "eval")
                   for k, v in r.items() if k not in ("kind", "step")}
        texts = {r["step"]: r["text"] for r in rows if r["kind"] == "sample"}
        yield out, scalars, texts


def test_the_run_logged_what_the_trackers_are_checked_against(tracked):
    out, scalars, texts = tracked
    assert {step for _, step in scalars} == set(range(1, 7)) and sorted(texts) == [3, 6]
    assert {tag for tag, _ in scalars} >= {"train/loss", "train/lr", "train/tokens_per_s", "eval/val_loss",
                                           "eval/val_ppl"}


def test_tensorboard_event_files_hold_every_scalar_at_its_step(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2
    out, scalars, texts = tracked
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"scalars": 0, "tensors": 0})
    events.Reload()
    logged = {(tag, e.step): e.value for tag in events.Tags()["scalars"] for e in events.Scalars(tag)}
    assert logged.keys() == scalars.keys()
    for key, value in scalars.items():
        assert logged[key] == pytest.approx(value, rel=1e-6), key          # float32 in the event file
    samples = {e.step: e.tensor_proto.string_val[0].decode() for e in events.Tensors("samples/text_summary")}
    assert samples == {step: f"```\n{text}\n```" for step, text in texts.items()}
    start = events.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(start).session_start_info.hparams
    settings = read_run_file(out / "train_config.yaml")
    assert hparams["lr"].number_value == settings["lr"] == 3e-3
    assert hparams["preset"].string_value == "gpt-tiny" and hparams["report_to"].string_value == str(list(TRACKERS))


def test_mlflow_store_holds_one_run_with_every_scalar_params_and_texts(tracked):
    from mlflow.tracking import MlflowClient
    out, scalars, texts = tracked
    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("lmforge").experiment_id])
    assert len(runs) == 1                                         # the resume continued the same run
    run = runs[0]
    assert run.info.status == "FINISHED" and run.info.run_name == str(out)
    logged = {(tag, m.step): m.value for tag in run.data.metrics for m in client.get_metric_history(run.info.run_id, tag)}
    assert logged == scalars
    assert run.data.params == {k: str(v) for k, v in read_run_file(out / "train_config.yaml").items()}
    for step, text in texts.items():
        path = client.download_artifacts(run.info.run_id, f"samples/step_{step:07d}.txt", str(out.parent))
        assert Path(path).read_text() == text
    assert (out / "mlartifacts").is_dir()                        # artifacts beside the store, not in the cwd


def test_trackio_store_holds_every_scalar_the_settings_and_texts(tracked):
    from trackio.sqlite_storage import SQLiteStorage
    out, scalars, texts = tracked
    assert SQLiteStorage.get_runs("lmforge") == [str(out)]        # the resume continued the run of that name
    logs = SQLiteStorage.get_logs("lmforge", str(out))
    logged = {(tag, log["step"]): log[tag] for log in logs for tag in log
              if isinstance(log[tag], (int, float)) and "/" in tag}
    assert logged == scalars
    samples = {log["step"]: log["samples"]["_value"] for log in logs if "samples" in log}
    assert samples == {step: f"```\n{text}\n```" for step, text in texts.items()}
    config = SQLiteStorage.get_run_config("lmforge", str(out))
    assert {k: config[k] for k in read_run_file(out / "train_config.yaml")} == read_run_file(out / "train_config.yaml")


def test_wandb_writes_offline_run_directories_with_every_scalar(tracked):
    out, scalars, texts = tracked
    run_id = json.loads((out / "tracking.json").read_text())["wandb"]
    parts = sorted((out / "wandb").glob("offline-run-*"))
    assert len(parts) == 2 and all(p.name.endswith(run_id) for p in parts)   # the resume kept the run's id
    history, config = {}, {}
    for part in parts:                                             # wandb's own reader of its .wandb log
        records = subprocess.run([str(Path(sys.executable).parent / "wandb"), "leet", "inspect", "--json",
                                  str(part / f"run-{run_id}.wandb")], capture_output=True, text=True, check=True)
        for record in map(json.loads, records.stdout.splitlines()):
            if record["type"] == "history":
                history[record["history"]["step"]["num"]] = record["history"]["item"]
            elif record["type"] == "run":
                config = record["run"]["config"]["update"]
    assert {(tag, step): history[step][tag] for tag, step in scalars} == scalars
    settings = read_run_file(out / "train_config.yaml")
    assert {k: config[k] for k in settings} == settings
    pages = {int(p.name.split("_")[1]): p.read_text() for p in out.glob("wandb/offline-run-*/files/media/html/samples_*")}
    assert pages == {step: f"<pre>{html.escape(text)}</pre>" for step, text in texts.items()}


def test_tensorboard_resume_drops_what_a_killed_run_logged_after_its_checkpoint(tmp_path):
    """A run killed at step 5 after its checkpoint of step 4: the resume writes 5 and 6 again, once each."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from lmforge.train.tracking.tensorboard import TensorBoardTracker
    first = TensorBoardTracker(tmp_path)
    first.start("run", {"lr": 0.1}, 0)
    for step in range(1, 6):
        first.on_log({"kind": "train", "step": step, "loss": float(step)})
    first.close()
    resumed = TensorBoardTracker(tmp_path)
    resumed.start("run", {"lr": 0.1}, 4)
    for step in (5, 6):
        resumed.on_log({"kind": "train", "step": step, "loss": 10.0 * step})
    resumed.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("train/loss")] == [(1, 1), (2, 2), (3, 3), (4, 4), (5, 50), (6, 60)]


@pytest.mark.parametrize("name", list(TRACKERS))
def test_a_missing_tracker_library_is_a_one_line_error(name, monkeypatch, tmp_path, capsys, char_data):
    monkeypatch.setitem(sys.modules, name, None)                   # `import name` (its library) now fails
    message = f'--report-to {name} needs the {name} package: pip install "lmforge[tracking]"'
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        make_trackers([name], tmp_path)
    out = tmp_path / "run"
    code = main(["train", "--data", str(char_data), "--out", str(out), "--preset", "gpt-tiny", "--max-steps", "2",
                 "--device", "cpu", "--no-progress", "--report-to", "tensorboard", name])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and message in err, err
    assert not out.exists()                                        # refused before the run touched --out


def test_report_to_values(monkeypatch, capsys, tmp_path, char_data):
    assert TrainConfig(report_to="wandb").report_to == ["wandb"]    # a single name, as Hugging Face takes it
    assert chosen([]) == chosen(["none"]) == [] and chosen(["wandb", "wandb", "mlflow"]) == ["wandb", "mlflow"]
    assert chosen(["all"]) == list(TRACKERS)                      # every one installed (the test extra has them)
    monkeypatch.setitem(sys.modules, "wandb", None)
    assert chosen(["all"]) == ["tensorboard", "trackio", "mlflow"]
    for bad, problem in ((["tensorbord"], "names no tracker (tensorbord); use " + ", ".join(REPORT_TO_VALUES)),
                         (["none", "wandb"], "gives none or all together with other trackers")):
        with pytest.raises(ConfigError, match=rf"^report_to=.* {re.escape(problem)}"):
            TrainConfig(report_to=bad)
    code = main(["train", "--data", str(char_data), "--out", str(tmp_path / "x"), "--report-to", "tensorbord"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "names no tracker (tensorbord)" in err


def test_no_tracker_writes_without_report_to(tiny_model_dir):
    names = {p.name for p in tiny_model_dir.iterdir()}
    assert not names & {"tensorboard", "mlflow.db", "mlartifacts", "wandb", "tracking.json"}
    assert read_run_file(tiny_model_dir / "train_config.yaml")["report_to"] == []


@pytest.mark.slow
def test_only_the_main_process_reports_under_torchrun(tmp_path, char_data):
    """Two processes (gloo): one event file, each step once."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                           "-m", "lmforge", "train", "--data", str(char_data), "--out", str(out), "--preset",
                           "gpt-tiny", "--context-length", "32", "--batch-size", "2", "--max-steps", "2",
                           "--eval-interval", "2", "--eval-iters", "1", "--log-interval", "1", "--sample-interval",
                           "0", "--device", "cpu", "--no-progress", "--report-to", "tensorboard"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(list((out / "tensorboard").iterdir())) == 1
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2] and len(events.Scalars("eval/val_loss")) == 1


def test_a_run_that_never_checkpointed_is_replaced_with_its_trackers_files(tmp_path):
    """What the trackers write at the start is part of a started run: a new run may replace it."""
    from lmforge.train.outdir import claim_out
    out = tmp_path / "run"
    for name in ("tensorboard", "mlartifacts", "wandb"):
        (out / name).mkdir(parents=True)
    for name in ("train_config.yaml", "metrics.jsonl", "mlflow.db", "tracking.json"):
        (out / name).write_text("")
    claim_out(TrainConfig(data=str(tmp_path / "data"), out=str(out))).release()
    assert [p.name for p in out.iterdir() if not p.name.startswith(".")] == []


def test_wandb_is_offline_unless_logged_in(tmp_path, monkeypatch):
    from lmforge.train.tracking.wandb import logged_in
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_BASE_URL", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "netrc"))
    assert not logged_in()
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password 0123456789\n")
    (tmp_path / "netrc").chmod(0o600)
    assert logged_in()                                             # `wandb login` keeps its key there
    monkeypatch.setenv("NETRC", str(tmp_path / "none"))
    monkeypatch.setenv("WANDB_API_KEY", "0123456789")
    assert logged_in()
