"""Seeing a training run from outside the loop: a `RunObserver` is called at the run's named
points (start, each logged row, each evaluation with the model, each inspection step with the
model, each checkpoint, the end), so that experiment tracking and training-time inspection
(`inspection.py`) plug in without flags threaded through `Trainer.fit` (an example is in
`trainer.py`'s docstring). The run directory's own metrics.jsonl
and loss.png are written by one such observer (`RunFiles`), always the first: every row
metrics.jsonl gets, every observer gets, in the same order; the model card (README.md) is
refreshed by another (`CardFile`), always the last. Only the main process (rank 0 under
torchrun) calls observers; one that raises stops the run.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch.nn as nn

from ..card import refresh_card_after
from ..modeldir import LOSS_PLOT, METRICS_FILE, atomic_write_text
from ..viz.plots import plot_loss
from .config import TrainConfig


class RunObserver:
    """The points of a run an observer sees; each does nothing unless overridden."""

    def on_start(self, cfg: TrainConfig, step: int) -> None:
        """Before the first step: the run's `TrainConfig`, and the step it starts from (0 for a fresh
        run, the checkpoint's step for a resumed one)."""

    def on_log(self, row: dict[str, Any]) -> None:
        """Each row as metrics.jsonl gets it (shared by the observers: read it, do not change it):
        {"kind": "train" | "eval" | "sample" | "warning" | "baseline" | "inspect" | "best", "step": N, ...}
        ("best": at the end of a run that keeps its best evaluation, that evaluation's step as
        "best_step" and its metrics)."""

    def on_eval(self, step: int, model: nn.Module, metrics: dict[str, float]) -> None:
        """At each evaluation, just before its row is logged: the model, whole on this process (also
        under FSDP), in eval mode and under `torch.no_grad()` — where training-time inspection looks."""

    def on_inspect(self, step: int, model: nn.Module) -> dict[str, float]:
        """Every `--inspect-interval` steps (never when it is 0): the model, as in `on_eval`. What it
        returns (numbers by name) is logged as the step's {"kind": "inspect"} row, so metrics.jsonl,
        the trackers and the plots get it like any other row."""
        return {}

    def on_save(self, step: int, out: Path) -> None:
        """After the checkpoint of `step` is committed in the model directory `out`."""

    def on_end(self, summary: dict[str, Any]) -> None:
        """When `fit` returns (at max_steps, --stop-after or a Ctrl-C with its checkpoint): its summary.
        Not called when the run fails."""


class Observers(RunObserver):
    """Several observers as one, called in order."""

    def __init__(self, observers: Sequence[RunObserver]):
        self.observers = list(observers)

    def _each(self, point: str, *args: Any) -> None:
        for observer in self.observers:
            getattr(observer, point)(*args)

    def on_start(self, cfg: TrainConfig, step: int) -> None:
        self._each("on_start", cfg, step)

    def on_log(self, row: dict[str, Any]) -> None:
        self._each("on_log", row)

    def on_eval(self, step: int, model: nn.Module, metrics: dict[str, float]) -> None:
        self._each("on_eval", step, model, metrics)

    def on_inspect(self, step: int, model: nn.Module) -> dict[str, float]:
        values: dict[str, float] = {}
        for observer in self.observers:
            values.update(observer.on_inspect(step, model))
        return values

    def on_save(self, step: int, out: Path) -> None:
        self._each("on_save", step, out)

    def on_end(self, summary: dict[str, Any]) -> None:
        self._each("on_end", summary)


class RunFiles(RunObserver):
    """metrics.jsonl (one JSON object per line) and loss.png (redrawn at each checkpoint) in the
    model directory. Each step is logged once: a fresh run starts a fresh file, a resumed one first
    drops what was logged after its checkpoint."""

    def __init__(self, out: Path):
        self.path, self.plot = Path(out) / METRICS_FILE, Path(out) / LOSS_PLOT

    def on_start(self, cfg: TrainConfig, step: int) -> None:
        """Fresh run (step 0): remove the old file. Resumed at `step`: keep the rows up to that step;
        rows after it (logged by a run killed later) and a torn last line are dropped."""
        if not step or not self.path.is_file():
            self.path.unlink(missing_ok=True)
            return
        kept, torn = [], 0
        for line in self.path.read_bytes().decode("utf-8", "replace").splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                torn += 1
                continue
            if not (isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] > step):
                kept.append(line)
        if torn:
            warnings.warn(f"dropped {torn} torn line(s) from {self.path} (written when a run was killed)")
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def on_log(self, row: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def on_save(self, step: int, out: Path) -> None:
        plot_loss(self.path, self.plot)


class CardFile(RunObserver):
    """README.md, the model card (`lmforge.card`), refreshed when the run ends, from what the run
    recorded. A card that cannot be written (a malformed audit.json, a hand-written README.md) is a
    warning: the trained model is there either way."""

    def __init__(self, out: Path):
        self.out = Path(out)

    def on_end(self, summary: dict[str, Any]) -> None:
        refresh_card_after(self.out)
