"""Training runs read from their files only — nothing here talks to a training process, so runs
copied over from another machine read the same as runs training here.

A run is any directory under the folder (at any depth, the folder itself too) that holds
metrics.jsonl or train_config.yaml; its id is its path relative to the folder ('.' for the
folder itself). metrics.jsonl is read by byte offset: each call returns the whole lines written
after the offset and the offset to ask from next, so a page that polls gets each row once. A
torn last line (a row being written) is left for the next call; a file rewritten meanwhile (a
resumed run keeps only the rows up to its checkpoint, a fresh run starts a new file) is read
again from the start, and the reply says so (`reset`).

    folder = RunsFolder("runs")
    folder.runs()                                  # [{"id": "mine", "status": "running", "step": 420, ...}]
    part = folder.rows("mine", since=0)            # {"rows": [...], "next": 18734, "file": "...", "reset": False}
    folder.rows("mine", since=part["next"], file=part["file"])      # only what was written since
"""

from __future__ import annotations

import json
import os
import time
import zlib
from pathlib import Path
from typing import Any, Callable

from ..errors import ConfigError, ModelDirError
from ..modeldir import CONFIG_FILE, METRICS_FILE
from ..runfile import TRAIN_CONFIG_FILE
from ..safety import LOCK_FILE, confined

RECENT_S = 30            # a run whose metrics.jsonl changed this recently counts as running
MAX_CHUNK = 4 << 20      # bytes of metrics.jsonl per reply (a long run's file comes in several)
TAIL = 64 << 10          # bytes read from the end of metrics.jsonl for a run's summary


def is_run(path: Path) -> bool:
    return (path / METRICS_FILE).is_file() or (path / TRAIN_CONFIG_FILE).is_file()


def find_runs(root: Path) -> list[str]:
    """The ids of the runs under `root`, sorted (hidden directories, e.g. a writer's partial
    output, are skipped; symlinks are not followed)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if METRICS_FILE in filenames or TRAIN_CONFIG_FILE in filenames:
            found.append(Path(dirpath).relative_to(root).as_posix())
    return found


def parse_lines(data: bytes) -> tuple[list[dict], int]:
    """The JSON objects of whole lines, and how many lines were not one (skipped)."""
    rows, skipped = [], 0
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if isinstance(row, dict):
            rows.append(row)
        else:
            skipped += 1
    return rows, skipped


def read_rows(path: Path, since: int = 0, file: str | None = None, limit: int = MAX_CHUNK) -> dict[str, Any]:
    """The rows of the metrics file `path` in the whole lines after byte `since`. `file` is the
    identity an earlier reply gave: when the file was rewritten since (another identity, or
    shorter than `since`) it is read from the start and `reset` is true."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        return {"rows": [], "next": 0, "file": "", "reset": since > 0, "more": False, "skipped": 0}
    with f:
        size = os.fstat(f.fileno()).st_size
        ident = f"{os.fstat(f.fileno()).st_ino:x}-{zlib.crc32(f.readline(4096)):08x}"
        reset = since > size or bool(file) and file != ident
        start = 0 if reset else since
        f.seek(start)
        chunk = f.read(limit)
    end = chunk.rfind(b"\n") + 1
    if end == 0 and len(chunk) == limit:       # one line longer than a whole chunk: not a row, step over it
        return {"rows": [], "next": start + limit, "file": ident, "reset": reset, "more": True, "skipped": 1}
    rows, skipped = parse_lines(chunk[:end])
    return {"rows": rows, "next": start + end, "file": ident, "reset": reset, "more": len(chunk) == limit,
            "skipped": skipped}


def held_flocks() -> set[str]:
    """The files some process holds a flock on, as 'MAJOR:MINOR:INODE' (Linux's /proc/locks; empty
    elsewhere). Read, never tried: taking a run's lock to test it, even for an instant, could refuse
    a training run that starts at that instant."""
    try:
        text = Path("/proc/locks").read_text()
    except OSError:
        return set()
    return {parts[5] for parts in map(str.split, text.splitlines()) if len(parts) > 5 and parts[1] == "FLOCK"}


def flock_id(path: Path) -> str | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"


def flat(settings: dict, prefix: str = "") -> dict[str, Any]:
    """Nested settings as one level: {"model": {"n_layer": 2}} -> {"model.n_layer": 2}.

    >>> flat({"lr": 0.001, "model": {"n_layer": 2}})
    {'lr': 0.001, 'model.n_layer': 2}
    """
    out = {}
    for key, value in settings.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _read_yaml(path: Path) -> dict:
    import yaml
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    return flat(values) if isinstance(values, dict) else {}


def _read_json(path: Path) -> dict:
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return {}
    return flat(values) if isinstance(values, dict) else {}


def _read_tail(path: Path) -> list[dict]:
    """The rows in the last TAIL bytes (the first line there may be cut: it is skipped)."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(max(0, size - TAIL))
        data = f.read()
    data = data[:data.rfind(b"\n") + 1]
    return parse_lines(data)[0]


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _last(rows: list[dict], kind: str, key: str) -> Any:
    return next((r[key] for r in reversed(rows) if r.get("kind") == kind and key in r), None)


class RunsFolder:
    """The runs under one folder; what it parses (settings, a summary's tail) is kept until the
    file changes."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            what = "is a file" if self.root.exists() else "does not exist"
            raise ConfigError(f"runs folder {self.root} {what}; give the folder that holds your runs (the --out "
                              f"directories of `lmforge train`), e.g. `lmforge runs runs/`")
        self._cache: dict[tuple[Path, str], tuple[tuple[int, int], Any]] = {}

    def _cached(self, path: Path, read: Callable[[Path], Any], default: Any) -> Any:
        """read(path), again only when the file changed; `default` when it is absent (a run being
        removed meanwhile included)."""
        try:
            st = path.stat()
            key, hit = (st.st_mtime_ns, st.st_size), self._cache.get((path, read.__name__))
            if hit is None or hit[0] != key:
                hit = self._cache[(path, read.__name__)] = (key, read(path))
        except OSError:
            return default
        return hit[1]

    def run_dir(self, run_id: str) -> Path | None:
        """The directory of run `run_id`, or None when it is not a run inside the folder (an
        absolute path, a path through '..' or a symlink out of it, a directory with no run files)."""
        try:
            path = confined(self.root, run_id, "run")
        except ModelDirError:
            return None
        return path if is_run(path) else None

    def runs(self) -> list[dict[str, Any]]:
        """A summary of every run, newest first."""
        held, now = held_flocks(), time.time()
        found = [self.summary(run_id, held, now) for run_id in find_runs(self.root)]
        return sorted(found, key=lambda s: -s["updated"])

    def summary(self, run_id: str, held: set[str], now: float) -> dict[str, Any]:
        """What the list of runs shows of one: name, task, model, steps, last losses, status."""
        path = self.root / run_id
        settings, model = self.settings(run_id), self.model(run_id)
        tail = self._cached(path / METRICS_FILE, _read_tail, [])
        step = max((r["step"] for r in tail if isinstance(r.get("step"), int)), default=0)
        max_steps = settings.get("max_steps")
        updated = max(_mtime(path / METRICS_FILE), _mtime(path / TRAIN_CONFIG_FILE))
        if flock_id(path / LOCK_FILE) in held:
            status = "running"                 # its training process holds the run lock
        elif isinstance(max_steps, int) and step >= max_steps:
            status = "finished"
        else:
            status = "running" if now - updated < RECENT_S else "stopped"
        shape = f"{model['n_layer']} layers x {model['d_model']}" if "n_layer" in model and "d_model" in model else ""
        return {"id": run_id, "name": self.root.resolve().name if run_id == "." else run_id,
                "task": settings.get("task", "clm"), "preset": settings.get("preset"), "family": model.get("family"),
                "shape": shape, "step": step, "max_steps": max_steps, "loss": _last(tail, "train", "loss"),
                "val_loss": _last(tail, "eval", "val_loss"), "status": status, "updated": updated}

    def settings(self, run_id: str) -> dict[str, Any]:
        """train_config.yaml, one level deep ({} when absent or unreadable)."""
        return self._cached(self.root / run_id / TRAIN_CONFIG_FILE, _read_yaml, {})

    def model(self, run_id: str) -> dict[str, Any]:
        """config.json: the model's shape ({} when absent or unreadable)."""
        return self._cached(self.root / run_id / CONFIG_FILE, _read_json, {})

    def rows(self, run_id: str, since: int = 0, file: str | None = None) -> dict[str, Any]:
        return read_rows(self.root / run_id / METRICS_FILE, since, file)
