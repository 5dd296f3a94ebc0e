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
from typing import Any, Callable

import torch
import torch.nn as nn

from ..errors import ConfigError, ModelDirError
from ..modeldir import WEIGHTS_FILE, atomic_write, atomic_write_text, read_weights, read_weights_metadata, save_tensors
from .averaging import NoAverage

STATE_DIR = "train_state"


def state_path(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / STATE_DIR / f"step-{step:08d}.pt"


def sharded_state_path(out_dir: Path, step: int) -> Path:
    return Path(out_dir) / STATE_DIR / f"step-{step:08d}"


def best_paths(out_dir: Path, weights_file: str = WEIGHTS_FILE) -> tuple[Path, Path]:
    """Where a --keep-best run keeps the best evaluation's weights and its record (`selection.py`)."""
    return Path(out_dir) / STATE_DIR / f"best-{weights_file}", Path(out_dir) / STATE_DIR / "best.json"


def _delete_other_states(out_dir: Path, keep: Path, keep_step: int | None = None) -> None:
    """Delete the train states but `keep` (and the one of `keep_step`: the best evaluation's)."""
    kept = {keep} | ({state_path(out_dir, keep_step), sharded_state_path(out_dir, keep_step)}
                     if keep_step is not None else set())
    for old in (Path(out_dir) / STATE_DIR).glob("step-*"):
        if old not in kept:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)


def save_checkpoint(out_dir: Path, tensors: dict[str, torch.Tensor], step: int, state: dict[str, Any],
                    extra_metadata: dict[str, str] | None = None, weights_file: str = WEIGHTS_FILE,
                    keep_step: int | None = None) -> None:
    """Save the train state, then commit `tensors` (from `modeldir.state_dict_for_save`) as `weights_file`;
    older train states are deleted (but the one of `keep_step`)."""
    out_dir = Path(out_dir)
    path = state_path(out_dir, step)
    atomic_write(path, lambda tmp: torch.save(state, tmp))
    save_tensors(tensors, out_dir / weights_file, {"step": str(step), **(extra_metadata or {})})
    _delete_other_states(out_dir, path, keep_step)


def save_sharded_checkpoint(out_dir: Path, step: int, state: dict[str, Any], full_tensors: Any,
                            extra_metadata: dict[str, str] | None, weights_file: str, info,
                            keep_step: int | None = None) -> None:
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
        _delete_other_states(out_dir, final, keep_step)
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
        state: dict[str, Any] = {"sharded": str(sharded_state_path(out_dir, step)), "step": step}
        check_shards(sharded_state_path(out_dir, step))
    elif not path.is_file():
        raise ModelDirError(f"cannot resume: the weights are at step {step} but {path} is missing; the train state "
                            f"was deleted — start a new run, or fine-tune from these weights with --init-from")
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:                 # torch raises RuntimeError / UnpicklingError / EOFError on bad files
            raise ModelDirError(f"cannot resume: {path} is unreadable ({str(e).splitlines()[0][:120]}); it may be "
                                f"truncated or corrupted — the weights of step {step} are intact: start a new run "
                                f"from them with `--init-from {out_dir}` and a new --out") from None
        if not isinstance(state, dict) or not {"step", "optimizer", "data_rng", "torch_rng"} <= set(state):
            raise ModelDirError(f"cannot resume: {path} does not hold a train state; start a new run from the weights "
                                f"with `--init-from {out_dir}` and a new --out")
    weights, _ = read_weights(out_dir / weights_file)
    return weights, state, step


# ---- the train state of a run (what `Trainer` saves and resumes) ---------------------------------
def batch_shape(world_size: int, grad_accum: int, batch_size: int) -> torch.Tensor:
    """(processes, micro-batches, sequences per micro-batch): their product is the sequences per step."""
    return torch.tensor([world_size, grad_accum, batch_size])


def check_batch_shape(saved: torch.Tensor | None, current: torch.Tensor, out_dir: Path) -> None:
    """Resuming on another number of processes is exact only with the same sequences per step."""
    if saved is None:                 # a checkpoint from before the shape was recorded
        return
    (W0, A0, B0), (W, A, B) = saved.tolist(), current.tolist()
    if W0 * A0 * B0 == W * A * B:
        return
    fix = (f"pass --grad-accum {W0 * A0 * B0 // (W * B)}" if W0 * A0 * B0 % (W * B) == 0
           else f"pick --batch-size and --grad-accum with processes x grad-accum x batch-size = {W0 * A0 * B0}")
    raise ConfigError(f"the checkpoint in {out_dir} was trained with {W0} process(es) x --grad-accum {A0} x "
                      f"--batch-size {B0} = {W0 * A0 * B0} sequences per step, this run has {W} x {A} x {B} = "
                      f"{W * A * B}; {fix} to continue the same run")


def _sharded_train_state(model, optimizer, data_gen: torch.Generator, step: int, tokens: int,
                         shape: torch.Tensor, rng_key: str) -> dict[str, Any]:
    """One rank's DCP train state: model and optimizer (sharded under FSDP), counters, data order,
    and this rank's RNG under `rng_key`."""
    from torch.distributed.checkpoint.state_dict import get_state_dict
    model_state, optim_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optimizer": optim_state, "counters": torch.tensor([step, tokens]),
             "batch_shape": shape, "data_rng": data_gen.get_state(), rng_key: torch.get_rng_state()}
    if torch.cuda.is_available():
        state[f"cuda_{rng_key}"] = torch.cuda.get_rng_state()
    return state


def save_train_state(out_dir: Path, strategy, model, optimizer, data_gen: torch.Generator, step: int, tokens: int,
                     shape: torch.Tensor, weights: Any, extra_metadata: dict[str, str] | None,
                     weights_file: str, keep_step: int | None = None,
                     extra_state: dict[str, Any] | None = None) -> None:
    """Every rank: checkpoint the run at `step`, as a DCP directory under a sharding `strategy`, else
    as a .pt file from rank 0. `weights()` gives the tensors of `weights_file` (on rank 0; it gathers);
    `extra_state` joins the .pt train state (the raw weights under --ema-decay, which fsdp refuses)."""
    info = strategy.info
    if strategy.sharded:
        assert not extra_state, "a sharded train state keeps no extra state"
        state = _sharded_train_state(model, optimizer, data_gen, step, tokens, shape, f"rng_rank{info.rank}")
        save_sharded_checkpoint(out_dir, step, state, weights, extra_metadata, weights_file, info, keep_step)
        return
    from .distributed import barrier
    tensors = weights()
    if info.is_main:
        state = {"step": step, "tokens": tokens, "optimizer": optimizer.state_dict(),
                 "data_rng": data_gen.get_state(), "torch_rng": torch.get_rng_state(),
                 "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                 "batch_shape": shape, **(extra_state or {})}
        save_checkpoint(out_dir, tensors, step, state, extra_metadata, weights_file, keep_step)
    barrier(info)


def resume_train_state(state: dict[str, Any], strategy, model, optimizer, data_gen: torch.Generator,
                       shape: torch.Tensor, out_dir: Path) -> tuple[int, int]:
    """Load a train state (a DCP directory or a .pt file, whichever strategy wrote it) into this
    run's (sharded or whole) model and optimizer; returns (step, tokens)."""
    if "sharded" in state:
        from torch.distributed.checkpoint.state_dict import set_state_dict
        path = Path(state["sharded"])
        keys = sharded_keys(path)
        rng_key = f"rng_rank{strategy.info.rank}"
        rng_key = rng_key if rng_key in keys else "rng_rank0"           # more ranks than the run had
        loaded = _sharded_train_state(model, optimizer, data_gen, 0, 0, shape.clone(), rng_key)   # filled in place
        if f"cuda_{rng_key}" not in keys:
            loaded.pop(f"cuda_{rng_key}", None)
        load_sharded_state(path, loaded)
        check_batch_shape(loaded["batch_shape"], shape, out_dir)
        set_state_dict(model, optimizer, model_state_dict=loaded["model"], optim_state_dict=loaded["optimizer"])
        data_gen.set_state(loaded["data_rng"])
        torch.set_rng_state(loaded[rng_key])
        if f"cuda_{rng_key}" in loaded:
            torch.cuda.set_rng_state(loaded[f"cuda_{rng_key}"])
        step, tokens = loaded["counters"].tolist()
        return int(step), int(tokens)
    check_batch_shape(state.get("batch_shape"), shape, out_dir)
    if strategy.sharded:        # a DDP / one-process checkpoint: shard its whole optimizer state
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
        from .distributed import optimizer_state_by_name
        set_optimizer_state_dict(model, optimizer, optimizer_state_by_name(model, optimizer, state["optimizer"]),
                                 options=StateDictOptions(full_state_dict=True))
    else:
        optimizer.load_state_dict(state["optimizer"])
    data_gen.set_state(state["data_rng"])
    torch.set_rng_state(state["torch_rng"])
    if state.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])
    return int(state["step"]), int(state["tokens"])


# ---- the trainer's part -----------------------------------------------------------------------------
def saved_names(model: nn.Module, names: Any) -> list[str]:
    """`names` (state dict keys, in order) without the second name of a tied parameter
    (safetensors stores shared tensors once; loading ties them again)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    seen: set[int] = set()
    out = []
    for name in names:
        if name in params:
            if id(params[name]) in seen:
                continue
            seen.add(id(params[name]))
        out.append(name)
    return out


class Checkpointer:
    """The checkpoints of one training run (every rank calls it): `resume(state)` loads a train
    state into the model, optimizer and data generator; `save(step, tokens)` commits them at `step`
    and tells the observers (`on_save`). `names_to_save(model)` picks the state-dict entries that
    `weights_file` stores (None: all; a LoRA run keeps its adapters). `saved_at`: the last step
    saved (or resumed from). `keep_best(step, record)` keeps the checkpoint of `step` (saved) beside
    the later ones, `restore_best()` makes it the run's checkpoint again (`selection.py`).
    `average` (`averaging.py`): what a save commits (the weight average under --ema-decay) and
    keeps in the train state, and what a resume restores."""

    def __init__(self, out: Path, strategy, model: nn.Module, optimizer, data_gen: torch.Generator,
                 shape: torch.Tensor, *, names_to_save: Callable[[nn.Module], set[str]] | None,
                 extra_metadata: dict[str, str], weights_file: str, observers, average: Any = None):
        self.out, self.strategy, self.model, self.optimizer = Path(out), strategy, model, optimizer
        self.average = average if average is not None else NoAverage()
        self.data_gen, self.shape, self.names_to_save = data_gen, shape, names_to_save
        self.extra_metadata, self.weights_file, self.observers = extra_metadata, weights_file, observers
        self.saved_at = 0
        self.best_step: int | None = None        # the kept best checkpoint (its train state is not deleted)

    def resume(self, state: dict[str, Any]) -> tuple[int, int]:
        """Load `state` (from `load_checkpoint`); returns (step, tokens)."""
        step, tokens = resume_train_state(state, self.strategy, self.model, self.optimizer, self.data_gen, self.shape,
                                          self.out)
        self.average.load(state, str(state_path(self.out, step)))
        self.saved_at = step
        return step, tokens

    def save(self, step: int, tokens: int) -> None:
        extra_state = self.average.state()                  # the model shows the average from here
        save_train_state(self.out, self.strategy, self.model, self.optimizer, self.data_gen, step, tokens, self.shape,
                         self._weights, self.extra_metadata, self.weights_file, self.best_step, extra_state)
        self.saved_at = step
        self.observers.on_save(step, self.out)

    def read_best(self) -> dict[str, Any]:
        """The best evaluation a resumed run had kept (train_state/best.json; {} when none or its weights are gone)."""
        import json
        weights, record = best_paths(self.out, self.weights_file)
        try:
            state = json.loads(record.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if not weights.is_file() or not isinstance(state, dict):
            return {}
        self.best_step = state.get("step")
        return state

    def keep_best(self, step: int, record: dict[str, Any]) -> None:
        """Every rank: the checkpoint just saved at `step` is the best so far; keep a copy of its
        weights and its train state until a better one comes (rank 0 writes)."""
        assert self.saved_at == step, (self.saved_at, step)
        self.best_step = step
        if self.strategy.info.is_main:
            import json
            weights, path = best_paths(self.out, self.weights_file)
            atomic_write(weights, lambda tmp: shutil.copyfile(self.out / self.weights_file, tmp))
            atomic_write_text(path, json.dumps(record))

    def restore_best(self) -> None:
        """Every rank: make the kept best checkpoint the run's (its weights committed as `weights_file`,
        the later train states deleted) and load its weights into the model."""
        from .distributed import barrier
        step, (weights, _) = self.best_step, best_paths(self.out, self.weights_file)
        assert step is not None
        if self.strategy.info.is_main:
            atomic_write(self.out / self.weights_file, lambda tmp: shutil.copyfile(weights, tmp))
            keep = sharded_state_path(self.out, step) if self.strategy.sharded else state_path(self.out, step)
            _delete_other_states(self.out, keep)
        barrier(self.strategy.info)
        tensors, _ = read_weights(weights)
        if self.strategy.sharded:
            from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict
            set_model_state_dict(self.model, tensors, options=StateDictOptions(full_state_dict=True, strict=False))
        else:
            self.model.load_state_dict(tensors, strict=False)   # tied second names and a LoRA run's base are absent
        self.saved_at = step
        self.observers.on_save(step, self.out)

    def _weights(self) -> dict[str, torch.Tensor]:
        """What `weights_file` stores: contiguous CPU tensors on rank 0 (gathered under FSDP), {} elsewhere."""
        full = self.strategy.full_state_dict(self.model)
        if not self.strategy.info.is_main:
            return {}
        names = saved_names(self.model, full)
        if self.names_to_save is not None:
            keep = self.names_to_save(self.model)
            names = [n for n in names if n in keep]
        return {n: full[n].detach().to("cpu").contiguous() for n in names}
