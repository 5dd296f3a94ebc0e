"""Resumable checkpoints in the model directory.

    model.safetensors                 weights; metadata {"step": N} — the commit point (a LoRA run
                                      commits adapter.safetensors instead: `weights_file`)
    train_state/step-00000N.pt        one process or DDP: optimizer state, RNG states, counters
                                      (tensors and plain Python values only: loaded with
                                      torch.load(weights_only=True))
    train_state/step-00000N/          FSDP: a `torch.distributed.checkpoint` directory that every
                                      rank writes its shards into (`__R_0.distcp`, `.metadata`):
                                      model, optimizer, counters, data order, each rank's RNG

A save writes the train state first (an FSDP one into `.step-00000N.partial/`, renamed once
every rank has finished), then atomically replaces model.safetensors (under FSDP gathered to
rank 0), then deletes older train states. An interrupted save therefore always leaves a
weights file whose step has a complete train state. A DCP train state loads on any number of
processes, with or without FSDP (torch.distributed.checkpoint reshards on load); a `.pt` one
loads under FSDP too (`distributed.optimizer_state_by_name`).
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelDirError
from ..modeldir import WEIGHTS_FILE, atomic_write, read_weights, read_weights_metadata, save_tensors

STATE_DIR = "train_state"


def state_path(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / STATE_DIR / f"step-{step:08d}.pt"


def sharded_state_path(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / STATE_DIR / f"step-{step:08d}"


def _delete_other_states(out_dir: Path, keep: Path) -> None:
    for old in (Path(out_dir) / STATE_DIR).glob("step-*"):
        if old != keep:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)


def save_checkpoint(out_dir: Path, tensors: dict[str, torch.Tensor], step: int, state: dict[str, Any],
                    extra_metadata: dict[str, str] | None = None, weights_file: str = WEIGHTS_FILE) -> None:
    """Save the train state, then commit `tensors` (from `modeldir.state_dict_for_save`) as `weights_file`."""
    out_dir = Path(out_dir)
    path = state_path(out_dir, step)
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    save_tensors(tensors, out_dir / weights_file, {"step": str(step), **(extra_metadata or {})})
    _delete_other_states(out_dir, path)


def save_sharded_checkpoint(out_dir: Path, step: int, state: dict[str, Any], full_tensors: Any,
                            extra_metadata: dict[str, str] | None, weights_file: str, info) -> None:
    """Every rank: write `state` (DTensors: each rank its shards) as the DCP directory of `step`;
    then rank 0 commits the tensors `full_tensors()` returns there (called on every rank: it
    gathers) as `weights_file`. `info`: the run's `DistInfo`."""
    import torch.distributed.checkpoint as dcp
    from .distributed import barrier
    out_dir = Path(out_dir)
    final = sharded_state_path(out_dir, step)
    partial = final.with_name(f".{final.name}.partial")
    if info.is_main:
        shutil.rmtree(partial, ignore_errors=True)              # left by a save that was interrupted
        partial.parent.mkdir(parents=True, exist_ok=True)
    barrier(info)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*assuming the intent is to save in a single process")
        dcp.save(state, checkpoint_id=partial)
    tensors = full_tensors()
    barrier(info)                                               # every rank's shards are on disk
    if info.is_main:
        if final.exists() and checkpoint_step(out_dir, weights_file) != step:
            shutil.rmtree(final)                                 # left by a save killed before its commit
        if final.exists():                                       # the committed step saved again (Ctrl-C at once)
            shutil.rmtree(partial)
        else:
            partial.rename(final)
        save_tensors(tensors, out_dir / weights_file, {"step": str(step), **(extra_metadata or {})})
        _delete_other_states(out_dir, final)
    barrier(info)


def check_shards(path: Path) -> None:
    """Refuse a DCP directory with a missing file (e.g. one rank's shard was not copied back)."""
    from torch.distributed.checkpoint import FileSystemReader
    if not (path / ".metadata").is_file():
        raise ModelDirError(f"cannot resume: {path} has no .metadata (it is not a complete sharded checkpoint); "
                            f"restore the directory as it was written, or start a new run")
    storage = FileSystemReader(str(path)).read_metadata().storage_data or {}
    files = sorted({info.relative_path for info in storage.values()})
    missing = [f for f in files if not (path / f).is_file()]
    if missing:
        raise ModelDirError(f"cannot resume: {path} is missing {', '.join(missing)} (shards written by "
                            f"{len(files)} ranks: {', '.join(files)}); copy the missing files back from the machine "
                            f"that wrote them, or fine-tune from the weights with --init-from")


def load_sharded_state(path: Path, state: dict[str, Any]) -> None:
    """Fill `state` (DTensors or whole tensors, any number of ranks) in place from a DCP directory."""
    import torch.distributed.checkpoint as dcp
    check_shards(path)
    with warnings.catch_warnings():      # one process without a process group is a supported way to load
        warnings.filterwarnings("ignore", message=".*assuming the intent is to load in a single process")
        dcp.load(state, checkpoint_id=path)


def sharded_keys(path: Path) -> set[str]:
    """The flattened keys a DCP directory holds (e.g. "rng_rank1")."""
    from torch.distributed.checkpoint import FileSystemReader
    return set(FileSystemReader(str(path)).read_metadata().state_dict_metadata)


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
    if sharded_state_path(out_dir, step).is_dir():                  # FSDP: loaded by the trainer, after sharding
        state: dict[str, Any] = {"sharded": str(sharded_state_path(out_dir, step))}
        check_shards(sharded_state_path(out_dir, step))
    elif not path.is_file():
        raise ModelDirError(f"cannot resume: the weights are at step {step} but {path} is missing; the train state "
                            f"was deleted — start a new run, or fine-tune from these weights with --init-from")
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    weights, _ = read_weights(out_dir / weights_file)
    return weights, state, step
