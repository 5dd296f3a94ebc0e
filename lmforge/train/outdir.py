"""The output rule of a training run (see `lmforge.safety`): --out is never one of the run's
inputs; --resume continues the run in it; a new run needs it new, empty, left by a run that never
checkpointed, or --overwrite. `claim_out` checks it and takes the directory's lock."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from ..data.pairs import TARGET_TOKENIZER_DIR
from ..errors import ConfigError, ModelDirError
from ..modeldir import ADAPTER_CONFIG, ADAPTER_FILE, CONFIG_FILE, LOSS_PLOT, METRICS_FILE, WEIGHTS_FILE
from ..runfile import TRAIN_CONFIG_FILE
from ..safety import LOCK_FILE, RunLock, check_not_input, check_output, clean_temp_files, contents
from ..tokenizers.base import TOKENIZER_CONFIG_FILE, TOKENIZER_FILE
from . import checkpoint
from .config import TrainConfig
from .tracking.base import TRACKING_FILE
from .tracking.mlflow import MLFLOW_ARTIFACTS, MLFLOW_DB
from .tracking.tensorboard import TENSORBOARD_DIR
from .tracking.wandb import WANDB_DIR


def _run_inputs(cfg: TrainConfig, extra: list[tuple[str, str | None]]) -> list[tuple[str, str | None]]:
    inputs = [("--data", cfg.data), ("--init-from", cfg.init_from), *extra]
    table_tokenizer = getattr(cfg.task_options, "tokenizer", None)
    if isinstance(table_tokenizer, str) and Path(table_tokenizer).is_dir():
        inputs.append(("--tokenizer", table_tokenizer))
    return inputs


# what a run writes before its first checkpoint (a directory holding only these lost nothing if replaced)
RUN_START_FILES = {TRAIN_CONFIG_FILE, CONFIG_FILE, TOKENIZER_FILE, TOKENIZER_CONFIG_FILE, ADAPTER_CONFIG,
                   TARGET_TOKENIZER_DIR, METRICS_FILE, LOSS_PLOT, checkpoint.STATE_DIR,
                   TRACKING_FILE, TENSORBOARD_DIR, MLFLOW_DB, MLFLOW_ARTIFACTS, WANDB_DIR}   # --report-to's


def _aborted_run(out: Path) -> bool:
    """A directory a training run started and never checkpointed (killed or failed early)."""
    if not (out / TRAIN_CONFIG_FILE).is_file():
        return False
    names = {p.name for p in out.iterdir() if p.name != LOCK_FILE and not p.name.endswith(".tmp")}
    return names <= RUN_START_FILES


def claim_out(cfg: TrainConfig, inputs: list[tuple[str, str | None]] = ()) -> RunLock | None:
    """The output rule for a training run (see `lmforge.safety`), then its lock. --out is never an
    input; --resume continues the run in it; a fresh run needs it new, empty, left by a run that
    never checkpointed, or --overwrite (which empties it). Returns the held lock (None off rank 0)."""
    if int(os.environ.get("RANK", "0")) != 0:          # under torchrun, rank 0 checks and locks for all
        return None
    out = Path(cfg.out)
    inputs = _run_inputs(cfg, list(inputs))
    _check_out(cfg, out, inputs)                        # before the lock: a refusal leaves --out untouched
    lock = RunLock(out).acquire()
    try:
        _check_out(cfg, out, inputs)                    # again: another run may have finished meanwhile
        if cfg.resume:
            clean_temp_files(out)                       # what a killed run's interrupted writes left
        elif contents(out):                             # --overwrite, or a never-checkpointed run: start afresh
            for p in out.iterdir():
                if p.name != LOCK_FILE:
                    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
    except BaseException:
        lock.release()
        raise
    return lock


def _check_out(cfg: TrainConfig, out: Path, inputs: list[tuple[str, str | None]]) -> None:
    check_not_input(out, inputs, "--out")
    if cfg.resume:
        if not (out / CONFIG_FILE).is_file():
            raise ModelDirError(f"cannot resume: {out} holds no run (no config.json); drop --resume to start one")
        return
    for weights_file in (WEIGHTS_FILE, ADAPTER_FILE):
        if not cfg.overwrite and (out / weights_file).is_file() and \
                (step := checkpoint.checkpoint_step(out, weights_file)) is not None:
            raise ConfigError(f"{out} already holds a trained model (step {step}); pass --resume to continue "
                              f"it, --overwrite to start over in it, or a new --out")
    check_output(out, inputs=inputs, overwrite=cfg.overwrite or _aborted_run(out), out_name="--out")
