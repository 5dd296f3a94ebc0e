"""Keep the best, not the last: which evaluation of a run is best on the validation metric
(`Task.selection`: val_macro_f1 for classification, val_loss otherwise), and early stopping when
it has not improved for `patience` evaluations.

A fine-tune on a small table overfits: its validation score peaks, then falls while the
training loss keeps going down. With `--keep-best` (the default for classify) the trainer keeps
the checkpoint of the best evaluation beside the latest one (`Checkpointer.keep_best`) and, when
the run ends, makes it the model directory's weights (`Checkpointer.restore_best`); `--patience N`
ends the run N evaluations after the last improvement. Which evaluation was best survives a
resume (train_state/best.json); the patience count restarts at the resume.

    >>> best = BestEvaluation("val_loss", "min", patience=2)
    >>> [best.update(step, {"val_loss": v}) for step, v in [(10, 3.0), (20, 2.5), (30, 2.6), (40, 2.7)]]
    [True, True, False, False]
    >>> best.step, best.out_of_patience()
    (20, True)
"""

from __future__ import annotations

import math
from typing import Any


class BestEvaluation:
    """The best evaluation so far on `metric` ("max": higher is better; "min": lower), and the
    evaluations since it (for `patience`; None: never stop early)."""

    def __init__(self, metric: str, mode: str, patience: int | None = None):
        assert mode in ("min", "max"), mode
        self.metric, self.mode, self.patience = metric, mode, patience
        self.step: int | None = None
        self.value: float | None = None
        self.metrics: dict[str, float] = {}          # every metric of the best evaluation
        self.stale = 0                                # evaluations since the best

    def update(self, step: int, metrics: dict[str, float]) -> bool:
        """Record the evaluation of `step`; whether it is the new best (the first one always is; a
        tie is not an improvement, so the earlier, shorter-trained weights stay)."""
        value = metrics.get(self.metric)
        if value is None or not math.isfinite(value):
            self.stale += 1
            return False
        better = self.value is None or (value > self.value if self.mode == "max" else value < self.value)
        if better:
            self.step, self.value, self.metrics, self.stale = step, float(value), dict(metrics), 0
        else:
            self.stale += 1
        return better

    def out_of_patience(self) -> bool:
        return self.patience is not None and self.stale >= self.patience

    def state(self) -> dict[str, Any]:
        """What train_state/best.json holds."""
        return {"step": self.step, "metric": self.metric, "value": self.value, "metrics": self.metrics}

    def load(self, state: dict[str, Any], resume_step: int) -> None:
        """Continue from a saved `state()` (ignored when it is of another metric or after `resume_step`)."""
        step = state.get("step")
        if state.get("metric") == self.metric and isinstance(step, int) and step <= resume_step:
            self.step, self.value, self.metrics = step, state["value"], dict(state.get("metrics") or {})

    def message(self) -> str:
        return (f"early stop: {self.metric} has not improved for {self.stale} evaluations (--patience "
                f"{self.patience}); the best, {self.value:.4f}, was at step {self.step}")
