"""What every tracker shares: a `Tracker` is a `RunObserver` that turns the rows metrics.jsonl
gets into scalars and texts, and the run's settings (train_config.yaml) into hyper-parameters;
a backend says only how to start, log a scalar row, log a text, flush and close.

Names, the same for every backend: a train or eval row's numbers are scalars named
`{kind}/{key}` at the row's step (`train/loss`, `train/lr`, `train/tokens_per_s`, `train/mfu`,
`eval/val_loss`, `eval/val_ppl`, `eval/val_accuracy`, ...; a run that keeps its best evaluation
ends with `best/best_step` and that evaluation's `best/val_...` at its last step); sample rows are
the text `samples`, warning rows the text `warnings`. A backend that keeps a run across a resume (MLflow, W&B) finds
its run id in OUT/tracking.json.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from ...errors import ConfigError
from ...modeldir import atomic_write_text
from ...options import flat_settings
from ...runfile import TRAIN_CONFIG_FILE, read_run_file
from ..config import TrainConfig
from ..observers import RunObserver
from . import EXTRA

TRACKING_FILE = "tracking.json"          # {tracker: its run's id}, so that a resumed run continues it
TEXT_ROWS = {"sample": ("samples", "text"), "warning": ("warnings", "message")}   # kind: (text name, field)


def require(name: str) -> Any:
    """Import the library of `--report-to name` (of the same name); missing: a one-line error naming the extra."""
    try:
        return importlib.import_module(name)
    except ImportError:
        raise ConfigError(f"--report-to {name} needs the {name} package: {EXTRA} (or pip install {name})") from None


def row_scalars(row: dict[str, Any]) -> dict[str, float]:
    """The numbers of a train or eval row, named `{kind}/{key}`."""
    return {f"{row['kind']}/{k}": v for k, v in row.items()
            if k not in ("kind", "step") and isinstance(v, (int, float)) and not isinstance(v, bool)}


def run_settings_of(cfg: TrainConfig, out: Path) -> dict[str, Any]:
    """The run's settings as train_config.yaml holds them (task options and LoRA included), or the
    TrainConfig's own when the run has no such file (a `Trainer` built by hand)."""
    path = out / TRAIN_CONFIG_FILE
    return read_run_file(path) if path.is_file() else flat_settings(cfg)


def saved_id(out: Path, name: str) -> Any:
    """What tracker `name` saved in OUT/tracking.json (None when nothing)."""
    try:
        return json.loads((out / TRACKING_FILE).read_text(encoding="utf-8")).get(name)
    except (OSError, ValueError, AttributeError):
        return None


def save_id(out: Path, name: str, value: Any) -> None:
    path = out / TRACKING_FILE
    try:
        saved = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        saved = {}
    atomic_write_text(path, json.dumps({**saved, name: value}, indent=2) + "\n")


class Tracker(RunObserver):
    """One tracker of a run in the model directory `out`, its library imported (`self.library`).
    `start(run name, settings, step)` opens its run (`step` > 0: a resumed run, continued where the
    backend can), `scalars(step, values)` and `text(name, step, text)` log, `flush()` at each
    checkpoint, `close()` at the end."""

    name = ""                                    # the --report-to value, the name of the library it needs

    def __init__(self, out: Path):
        self.out = Path(out)
        self.library = require(self.name)        # here, on every process: a missing one fails before the run

    def on_start(self, cfg: TrainConfig, step: int) -> None:
        self.start(cfg.out, run_settings_of(cfg, self.out), step)

    def on_log(self, row: dict[str, Any]) -> None:
        if row["kind"] in TEXT_ROWS:
            name, field = TEXT_ROWS[row["kind"]]
            self.text(name, row["step"], str(row[field]))
        elif values := row_scalars(row):
            self.scalars(row["step"], values)

    def on_save(self, step: int, out: Path) -> None:
        self.flush()

    def on_end(self, summary: dict[str, Any]) -> None:
        self.close()

    def start(self, run_name: str, settings: dict[str, Any], step: int) -> None:
        raise NotImplementedError

    def scalars(self, step: int, values: dict[str, float]) -> None:
        raise NotImplementedError

    def text(self, name: str, step: int, text: str) -> None:
        raise NotImplementedError

    def flush(self) -> None:
        """Make what was logged durable (default: nothing to do)."""

    def close(self) -> None:
        raise NotImplementedError
