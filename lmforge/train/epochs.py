"""A run's length: `--max-steps N` optimizer steps, or `--epochs E` passes over the training set,
as transformers' `num_train_epochs` and litgpt's `train.epochs` size one (given both, --max-steps
wins, as in transformers). The task counts what one pass holds (`Task.train_examples`) and orders
the examples (`Task.epoch_order`); the steps E passes take become the run's max_steps, which
`train_config.yaml` records and the schedule decays over."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path

from ..errors import ConfigError
from ..runfile import TRAIN_CONFIG_FILE, read_run_file
from ..tasks import Task
from .config import MAX_STEPS, TrainConfig


def steps_for_epochs(epochs: float, examples: int, per_step: int) -> int:
    """Optimizer steps that take `epochs` passes over `examples` at `per_step` a step (a last partial
    step counts; at least one).

    >>> steps_for_epochs(3, 1000, 32), steps_for_epochs(0.5, 1000, 32), steps_for_epochs(0.01, 10, 32)
    (94, 16, 1)
    """
    return max(1, math.ceil(epochs * examples / per_step))


def plan_steps(cfg: TrainConfig, task: Task) -> TrainConfig:
    """`cfg` with its max_steps: as given, else what --epochs take, else MAX_STEPS. A resumed run
    must come to the length it was planned with (other data or another batch would move the
    schedule under it), unless --force."""
    if cfg.max_steps is not None:
        return cfg
    steps = MAX_STEPS if cfg.epochs is None else _epoch_steps(cfg, task)
    saved = Path(cfg.out) / TRAIN_CONFIG_FILE
    planned = read_run_file(saved).get("max_steps") if cfg.resume and saved.is_file() else None
    if planned is not None and planned != steps and not cfg.force:
        how = f"--epochs {cfg.epochs:g} of this --data take" if cfg.epochs is not None else "without --max-steps it has"
        raise ConfigError(f"{how} {steps:,} steps, but {cfg.out} was planned for {planned:,} (max_steps in "
                          f"{saved.name}); give --max-steps {planned} to continue it as planned, or --force to change "
                          f"its length")
    return dataclasses.replace(cfg, max_steps=steps)


def _epoch_steps(cfg: TrainConfig, task: Task) -> int:
    examples = task.train_examples()
    if examples is None:
        raise ConfigError(f"task {task.name} cannot count its training examples, so --epochs cannot size the run; "
                          f"give --max-steps instead")
    per_step = int(os.environ.get("WORLD_SIZE", "1")) * cfg.grad_accum * cfg.batch_size
    steps = steps_for_epochs(cfg.epochs, examples, per_step)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"--epochs {cfg.epochs:g}: {examples:,} training examples, {per_step:,} per step: {steps:,} steps")
    return steps
