"""Resumable checkpoints in the model directory.

    model.safetensors                 weights; metadata {"step": N} — the commit point (a LoRA run
                                      commits adapter.safetensors instead: `weights_file`)
    train_state/step-00000N.pt        optimizer state, RNG states, counters (tensors and plain
                                      Python values only: loaded with torch.load(weights_only=True))

A save writes the train state first, then atomically replaces model.safetensors, then
deletes older train states. An interrupted save therefore always leaves a weights file whose
step has a matching train state.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ..errors import ModelDirError
from ..modeldir import WEIGHTS_FILE, atomic_write, read_weights, read_weights_metadata, save_tensors

STATE_DIR = "train_state"


def state_path(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / STATE_DIR / f"step-{step:08d}.pt"


def save_checkpoint(out_dir: Path, tensors: dict[str, torch.Tensor], step: int, state: dict[str, Any],
                    extra_metadata: dict[str, str] | None = None, weights_file: str = WEIGHTS_FILE) -> None:
    """Save the train state, then commit `tensors` (from `modeldir.state_dict_for_save`) as `weights_file`."""
    out_dir = Path(out_dir)
    path = state_path(out_dir, step)
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    save_tensors(tensors, out_dir / weights_file, {"step": str(step), **(extra_metadata or {})})
    for old in (out_dir / STATE_DIR).glob("step-*.pt"):
        if old != path:
            old.unlink(missing_ok=True)


def checkpoint_step(out_dir: Path, weights_file: str = WEIGHTS_FILE) -> int | None:
    path = Path(out_dir) / weights_file
    if not path.is_file():
        return None
    step = read_weights_metadata(path).get("step")
    return int(step) if step is not None else None


def load_checkpoint(out_dir: Path, weights_file: str = WEIGHTS_FILE) -> tuple[dict[str, torch.Tensor],
                                                                              dict[str, Any], int]:
    """(weights, train state, step) of the last complete checkpoint in `out_dir`."""
    out_dir = Path(out_dir)
    step = checkpoint_step(out_dir, weights_file)
    if step is None:
        raise ModelDirError(f"cannot resume: {out_dir / weights_file} is missing or records no training step; "
                            f"start a new run without --resume (or with a new --out)")
    path = state_path(out_dir, step)
    if not path.is_file():
        raise ModelDirError(f"cannot resume: the weights are at step {step} but {path} is missing; the train state "
                            f"was deleted — start a new run, or fine-tune from these weights with --init-from")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:                 # torch raises RuntimeError / UnpicklingError / EOFError on bad files
        raise ModelDirError(f"cannot resume: {path} is unreadable ({str(e).splitlines()[0][:120]}); it may be "
                            f"truncated or corrupted — the weights of step {step} are intact: start a new run from "
                            f"them with `--init-from {out_dir}` and a new --out") from None
    if not isinstance(state, dict) or not {"step", "optimizer", "data_rng", "torch_rng"} <= set(state):
        raise ModelDirError(f"cannot resume: {path} does not hold a train state; start a new run from the weights "
                            f"with `--init-from {out_dir}` and a new --out")
    weights, _ = read_weights(out_dir / weights_file)
    return weights, state, step
