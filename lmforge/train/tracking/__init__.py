"""Experiment tracking: `--report-to tensorboard trackio mlflow wandb` (Hugging Face's flag and
values) sends the rows of metrics.jsonl and the run's settings to those trackers, each through
its own library (the optional extra `pip install "lmforge[tracking]"`). A tracker is a
`RunObserver` (`base.Tracker`), so the loop knows nothing of it; one module per backend,
each importing its library only when chosen. This module is the registry: the names, "none"
and "all", and `make_trackers`, which builds the chosen ones (a missing library is a one-line
error before the run touches its directory).

Where each writes, by default inside the model directory (OUT):

| --report-to  | where                                                                           |
|--------------|---------------------------------------------------------------------------------|
| tensorboard  | OUT/tensorboard/ (event files; a resume continues them, cut back to its step)    |
| trackio      | trackio's local store (TRACKIO_DIR, default ~/.cache/huggingface/trackio)       |
| mlflow       | sqlite:///OUT/mlflow.db + OUT/mlartifacts/, or MLFLOW_TRACKING_URI when set     |
| wandb        | OUT/wandb/, offline unless WANDB_MODE is set or wandb is logged in              |
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

from ...errors import ConfigError

# --report-to value (also the name of its library, and of its module here): its tracker class
TRACKERS: dict[str, str] = {"tensorboard": "TensorBoardTracker", "trackio": "TrackioTracker",
                            "mlflow": "MLflowTracker", "wandb": "WandbTracker"}
REPORT_TO_VALUES = ("none", "all", *TRACKERS)
EXTRA = 'pip install "lmforge[tracking]"'


def check_report_to(values: Any) -> str | None:
    """What is wrong with a `report_to` value (None when fine): the check of TrainConfig.report_to."""
    if not isinstance(values, (list, tuple)) or not all(isinstance(v, str) for v in values):
        return "must be a list of tracker names"
    unknown = [v for v in values if v not in REPORT_TO_VALUES]
    if unknown:
        return f"names no tracker ({', '.join(unknown)}); use {', '.join(REPORT_TO_VALUES)}"
    if len(values) > 1 and ("none" in values or "all" in values):
        return "gives none or all together with other trackers; give one of them alone"
    return None


def installed(name: str) -> bool:
    """Whether the library of tracker `name` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):            # ValueError: a module in sys.modules without a spec
        return False


def chosen(report_to: list[str]) -> list[str]:
    """The trackers `report_to` names: "none" (or nothing) none, "all" every one whose library is
    installed (as Hugging Face's `report_to="all"`), else the names given, once each."""
    if list(report_to) == ["all"]:
        found = [name for name in TRACKERS if installed(name)]
        if not found:
            raise ConfigError(f"--report-to all found no tracking library installed; {EXTRA}")
        return found
    return list(dict.fromkeys(name for name in report_to if name != "none"))


def make_trackers(report_to: list[str], out: str | Path) -> list[Any]:
    """The `base.Tracker` observers of the chosen trackers for the model directory `out`; each
    imports its library here, so a missing one fails now, with the extra to install."""
    return [getattr(importlib.import_module(f".{name}", __name__), TRACKERS[name])(Path(out))
            for name in chosen(report_to)]
