"""The model directory: config.json + model.safetensors + tokenizer files (+ train_state/).

Every write is atomic (temp file in the same directory, fsync, rename), so an interrupted
save leaves the previous file intact. Weights are only ever safetensors.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .errors import ModelDirError

CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"
ADAPTER_FILE, ADAPTER_CONFIG = "adapter.safetensors", "adapter_config.json"   # a LoRA run's directory
METRICS_FILE, LOSS_PLOT = "metrics.jsonl", "loss.png"     # what a training run logs, and its plot of that
AUDIT_FILE = "audit.json"            # what the audits found (lmforge.audit.findings), read by the model card


def is_adapter_dir(path: str | Path) -> bool:
    """Whether `path` is a LoRA run's directory (adapters on a base, not a whole model: `lmforge.adapt.runs`)."""
    return (Path(path) / ADAPTER_CONFIG).is_file()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()    # what open() would give a new file (mkstemp alone gives 0600)


def atomic_write(path: Path, write_fn) -> None:
    """Call write_fn(tmp_path) then rename tmp over `path` (same filesystem, so atomic)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write_fn(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, FILE_MODE)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def state_dict_for_save(model: nn.Module) -> dict[str, torch.Tensor]:
    """Contiguous CPU tensors, tied weights stored once (safetensors refuses shared storage). Tied
    means the same view of the same storage: a loaded model's weights may all be views of one
    block (`model.huge_pages`)."""
    seen: dict[tuple, str] = {}
    out: dict[str, torch.Tensor] = {}
    for name, t in model.state_dict().items():
        key = (t.data_ptr(), t.shape, t.stride(), t.dtype) if t.device.type != "meta" else (id(t),)
        if key in seen and t.numel() > 0:
            continue  # a tied copy (e.g. lm_head.weight = tok_emb.weight)
        seen[key] = name
        out[name] = t.detach().to("cpu").contiguous()
    return out


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    save_tensors(state_dict_for_save(model), path, metadata)


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str] | None = None) -> None:
    """Atomically write `tensors` (contiguous CPU tensors, no two the same) as safetensors; a view of
    a larger storage (a loaded model's weights in one block) is copied out first."""
    from safetensors.torch import save_file
    tensors = {k: t if t.untyped_storage().nbytes() == t.nbytes else t.clone() for k, t in tensors.items()}
    atomic_write(Path(path), lambda tmp: save_file(tensors, tmp, metadata={"format": "pt", **(metadata or {})}))


def read_weights(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import safe_open
    path = Path(path)
    if not path.is_file():
        raise ModelDirError(f"no weights at {path}; train a model into this directory or check the path")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            return {k: f.get_tensor(k) for k in f.keys()}, meta
    except Exception as e:
        raise ModelDirError(f"{path} is not a valid safetensors file ({e}); it may be truncated or corrupted — "
                            f"restore it or train again (an interrupted save never overwrites it)") from e


def read_weights_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except Exception as e:
        raise ModelDirError(f"{path} is not a valid safetensors file ({e})") from e


def check_finite(tensors: dict[str, torch.Tensor], source: str) -> None:
    """Refuse weights holding NaN or inf (a corrupted file, or a run that diverged): such a model
    would generate empty text and score NaN without saying why. Checked in slices, so no tensor
    is copied whole."""
    for name, t in tensors.items():
        if not t.is_floating_point() or t.device.type == "meta":
            continue
        flat = t.reshape(-1)
        for piece in flat.split(1 << 22):
            if not bool(torch.isfinite(piece).all()):
                bad = int((~torch.isfinite(flat)).sum())
                raise ModelDirError(f"{source}: tensor {name!r} holds {bad} non-finite value(s) (NaN or inf); the "
                                    f"file is corrupted or the training diverged — restore it, or use an earlier "
                                    f"checkpoint")


def check_model_dir(path: Path, need: tuple[str, ...] = (CONFIG_FILE, WEIGHTS_FILE)) -> Path:
    path = Path(path)
    if not path.exists():
        raise ModelDirError(f"model directory {path} does not exist; train one with `lmforge train --out {path}` "
                            f"or `lmforge quickstart`")
    if not path.is_dir():
        raise ModelDirError(f"{path} is a file, not a model directory (config.json, model.safetensors, "
                            f"tokenizer.json)")
    missing = [n for n in need if not (path / n).is_file()]
    if missing:
        found = sorted(p.name for p in path.iterdir())
        raise ModelDirError(f"model directory {path} is missing {', '.join(missing)} (found: {found or 'nothing'}); "
                            f"it is not a complete lmforge model directory — re-run training or "
                            f"`lmforge import` for a Hugging Face checkpoint")
    return path


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(Path(path), json.dumps(obj, indent=2) + "\n")
