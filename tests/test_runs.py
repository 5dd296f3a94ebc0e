"""`lmforge runs`: the runs page. Reading runs from their files (found at any depth, rows by byte
offset, torn and rewritten files, the status, paths confined to the folder) through the app in
process; then the real thing: a training run and `lmforge runs` in subprocesses, the page in
Chromium gaining points while the run trains, and two runs overlaid."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from starlette.testclient import TestClient

from lmforge.cli import build_parser, main
from lmforge.runs import create_app
from lmforge.safety import RunLock

from .test_serve import CHROMIUM, browser_page, free_port

ROOT = Path(__file__).resolve().parents[1]


def write_run(path: Path, rows: list[dict], max_steps: int | None = None, age_s: float = 0.0) -> Path:
    """A run directory: train_config.yaml (when max_steps is given) and metrics.jsonl, last written age_s ago."""
    path.mkdir(parents=True, exist_ok=True)
    if max_steps is not None:
        (path / "train_config.yaml").write_text(yaml.safe_dump({"preset": "gpt-tiny", "task": "clm",
                                                                "max_steps": max_steps, "lr": 0.001}))
    (path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    then = time.time() - age_s
    for f in path.iterdir():
        os.utime(f, (then, then))
    return path


def train_rows(steps, loss0: float = 5.0) -> list[dict]:
    return [{"kind": "train", "step": s, "loss": loss0 - 0.1 * s, "lr": 0.001, "tokens": 256 * s,
             "tokens_per_s": 1000.0} for s in steps]


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "runs"
    write_run(root / "done", train_rows([1, 2, 3]) + [{"kind": "eval", "step": 3, "val_loss": 4.5, "val_ppl": 90.0}],
              max_steps=3, age_s=3600)
    write_run(root / "sweep" / "lr-high", train_rows([1, 2]), max_steps=10, age_s=7200)
    write_run(root / "sweep" / "fresh", train_rows([1]), max_steps=10)                  # written just now
    write_run(root / ".done.partial-123", train_rows([1]), max_steps=3)                 # a writer's temporary
    (root / "not-a-run").mkdir()
    (root / "not-a-run" / "config.json").write_text("{}")
    return root


@pytest.fixture
def client(folder) -> TestClient:
    return TestClient(create_app(folder))


def test_runs_are_found_at_any_depth_and_summarised(client, folder):
    listed = {r["id"]: r for r in client.get("/api/runs").json()["runs"]}
    assert sorted(listed) == ["done", "sweep/fresh", "sweep/lr-high"]
    done = listed["done"]
    assert (done["step"], done["max_steps"], done["loss"], done["val_loss"]) == (3, 3, 4.7, 4.5)
    assert (done["status"], done["task"], done["preset"]) == ("finished", "clm", "gpt-tiny")
    assert listed["sweep/lr-high"]["status"] == "stopped" and listed["sweep/fresh"]["status"] == "running"
    assert list(listed)[0] == "sweep/fresh"                                 # newest first
    assert client.get("/api/run", params={"run": "done"}).json()["settings"]["max_steps"] == 3
    single = TestClient(create_app(folder / "done")).get("/api/runs").json()["runs"]   # the folder is itself a run
    assert [(r["id"], r["name"]) for r in single] == [(".", "done")]


def test_rows_by_offset_torn_lines_and_rewritten_files(client, folder):
    path = folder / "sweep" / "fresh" / "metrics.jsonl"
    get = lambda **q: client.get("/api/rows", params={"run": "sweep/fresh", **q}).json()   # noqa: E731
    first = get(since=0)
    assert [r["step"] for r in first["rows"]] == [1] and first["next"] == path.stat().st_size
    line = json.dumps(train_rows([2])[0]) + "\n"
    with open(path, "a") as f:                  # a row being written: its first half
        f.write(line[:20])
    torn = get(since=first["next"], file=first["file"])
    assert torn["rows"] == [] and torn["next"] == first["next"] and not torn["reset"]
    with open(path, "a") as f:
        f.write(line[20:] + "not json\n[1, 2]\n")
    rest = get(since=torn["next"], file=torn["file"])
    assert [r["step"] for r in rest["rows"]] == [2] and rest["skipped"] == 2 and rest["next"] == path.stat().st_size
    assert get(since=rest["next"], file=rest["file"])["rows"] == []
    tmp = path.with_name(".metrics.jsonl.tmp")                # a resumed run rewrites the file (atomically)
    tmp.write_text("".join(json.dumps(r) + "\n" for r in train_rows([1], loss0=9.0) + train_rows([2, 3, 4, 5])))
    os.replace(tmp, path)
    again = get(since=rest["next"], file=rest["file"])
    assert again["reset"] and [r["step"] for r in again["rows"]] == [1, 2, 3, 4, 5]
    assert get(since=10**9)["reset"]                          # past the end: read from the start


def test_paths_outside_the_folder_are_refused(client, folder, tmp_path):
    outside = write_run(tmp_path / "elsewhere", train_rows([1]), max_steps=1)
    (folder / "link").symlink_to(outside)
    for run in ["../elsewhere", str(outside), "/etc", "link", "", "not-a-run", "missing", "done/../../elsewhere"]:
        for route in ("/api/rows", "/api/run"):
            reply = client.get(route, params={"run": run})
            assert reply.status_code == 404 and "no run" in reply.json()["error"]["message"], (route, run)
    for since in ("-1", "x", "1.5", "²"):
        assert client.get("/api/rows", params={"run": "done", "since": since}).status_code == 400
    assert client.get("/../../etc/passwd").status_code == 404
    assert "lmforge runs" in client.get("/").text and client.get("/health").json() == {"status": "ok"}


@pytest.mark.skipif(not Path("/proc/locks").exists(), reason="the run lock is read from Linux's /proc/locks")
def test_a_run_whose_lock_is_held_is_running(client, folder):
    status = lambda: {r["id"]: r["status"] for r in client.get("/api/runs").json()["runs"]}["sweep/lr-high"]  # noqa
    assert status() == "stopped"
    with RunLock(folder / "sweep" / "lr-high"):               # as a training process holds it
        assert status() == "running"
    assert status() == "stopped"


def test_the_verb_and_its_errors(capsys, tmp_path):
    ns = build_parser().parse_args(["runs"])
    assert (ns.dir, ns.host, ns.port) == ("runs", "127.0.0.1", 8100)
    assert main(["runs", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmforge runs: error: runs folder") and "does not exist" in err and "Traceback" not in err
    (tmp_path / "f").write_text("x")
    assert main(["runs", str(tmp_path / "f")]) == 2 and "is a file" in capsys.readouterr().err


# ---- the page in a browser, a run training ------------------------------------------------------------
SCREENSHOT = os.environ.get("LMFORGE_RUNS_SCREENSHOT")     # regenerate docs/runs.png: see docs/development.md


@contextlib.contextmanager
def background(*argv: str, cwd: Path):
    """`lmforge ARGV` running in `cwd` (its output in cwd/VERB.log) until the block ends, then stopped
    by SIGTERM: a training run saves its checkpoint and exits, the server closes."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    with open(cwd / f"{argv[0]}.log", "w") as log, \
            subprocess.Popen([sys.executable, "-m", "lmforge", *argv], env=env, stdout=log, stderr=subprocess.STDOUT,
                             cwd=cwd) as proc:
        try:
            yield proc
        finally:
            proc.terminate()                # leaving Popen's block waits for it to end


def wait_for_health(url: str, proc: subprocess.Popen, log: Path) -> None:
    import urllib.request
    deadline = time.time() + 60
    while time.time() < deadline:
        assert proc.poll() is None, f"lmforge runs exited:\n{log.read_text()}"
        with contextlib.suppress(OSError):
            with urllib.request.urlopen(url + "/health", timeout=1):
                return
        time.sleep(0.2)
    raise AssertionError("lmforge runs did not answer /health within 60 s")


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (/usr/bin/chromium); "
                                                   ".ci/run installs it with apt-get")
def test_the_page_follows_a_training_run_and_overlays_two(tmp_path, char_data, tiny_model_dir):
    shutil.copytree(tiny_model_dir, tmp_path / "runs" / "done")         # a finished run, copied over
    url = f"http://127.0.0.1:{free_port()}"
    with background("train", "--data", str(char_data), "--out", "runs/live", "--preset", "gpt-tiny",
                    "--max-steps", "100000", "--context-length", "32", "--batch-size", "8", "--log-interval", "1",
                    "--eval-interval", "25", "--eval-iters", "1", "--sample-interval", "25", "--sample-tokens", "24",
                    "--inspect-interval", "5", "--no-progress", "--device", "cpu", cwd=tmp_path) as training, \
            background("runs", "runs", "--port", url.rsplit(":", 1)[1], cwd=tmp_path) as server:
        wait_for_health(url, server, tmp_path / "runs.log")
        with browser_page(url + "/#live", width=1280, height=900) as (page, requested):
            points = "(+(document.getElementById('chart-loss')?.dataset.points ?? 0))"
            page.wait_for_function(f"{points} >= 3", timeout=60_000)
            before = page.evaluate(points)
            page.wait_for_function(f"{points} >= {before + 5}", timeout=30_000)     # the curve grows, live
            assert training.poll() is None, "the run ended before the page saw it train"
            assert page.inner_text("tr[data-run='live'] .status") == "running"
            assert page.get_attribute("#chart-loss", "data-runs") == "1"
            page.click("tr[data-run='done'] input")                                  # overlay the finished run
            page.wait_for_function("document.getElementById('chart-loss').dataset.runs === '2'")
            drawn = {line.get_attribute("data-run") for line in page.query_selector_all("#chart-loss polyline")}
            assert drawn == {"live", "done"}
            assert page.locator("#chart-tokens_per_s polyline").count() == 2
            page.wait_for_selector("#chart-induction_L1 polyline")                  # train --inspect-interval's rows
            if SCREENSHOT:                                     # the docs' picture: a run with a longer curve
                page.wait_for_function(f"{points} >= 400", timeout=120_000)
                page.wait_for_selector("#samples .item")
            shot = Path(SCREENSHOT) if SCREENSHOT else tmp_path / "runs.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 10_000
            assert all(u.startswith(url) for u in requested)                        # nothing from the internet
