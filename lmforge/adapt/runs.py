"""A LoRA run's directory: writing it, reading it back onto its base, merging it into a plain
model directory; and loading any model directory, a LoRA run's as its base with the adapters
merged in (`load_model`, `load_for_inference`: what `lmforge.load` and every verb load through).

A LoRA run (`lmforge finetune MODEL --lora-rank R`) writes a model directory without a full
copy of the weights:

    adapter.safetensors   the trainable tensors only (adapters + `--lora-train` modules)
    adapter_config.json   the LoRA settings, the base model's path and its fingerprints
    config.json, tokenizer files, metrics.jsonl, train_state/   as in every run

An adapter whose recorded base fingerprints differ from the base found is refused. The adapter
modules themselves (what A and B compute, how targets are chosen) are `lmforge.adapt.lora`;
whole model directories are read by `lmforge.loading`, which refuses a LoRA run's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

import torch
import torch.nn as nn

from ..config import ModelConfig
from ..errors import ModelDirError
from ..fileio import read_json
from ..loading import build_from_base, read_model_dir, resolve_device, resolve_dtype, write_model_dir
from ..loading import load_whole_model
from ..model import inference_layout
from ..modeldir import (ADAPTER_CONFIG, ADAPTER_FILE, CONFIG_FILE, WEIGHTS_FILE, check_model_dir, is_adapter_dir,
                        read_weights, write_json)
from ..safety import check_output
from ..tokenizers import Tokenizer
from .lora import LoRAConfig, apply_lora, merge_lora


# ------------------------------------------------------------------- any model directory
def load_model(path: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None,
               **config_overrides) -> tuple[nn.Module, ModelConfig, Tokenizer]:
    """(module, config, tokenizer) from an lmforge or Hugging Face model directory or a GGUF file
    (`lmforge.loading.load_whole_model`); a LoRA run's directory loads as its base model with the
    adapters merged in."""
    if not is_adapter_dir(path):
        return load_whole_model(path, device, dtype, **config_overrides)
    check_model_dir(Path(path), (CONFIG_FILE, ADAPTER_FILE))
    model, config, tokenizer, _ = load_lora_model(path, device=device, dtype=dtype, **config_overrides)
    return merge_lora(model).eval(), config, tokenizer


def load_for_inference(path: str | Path, device: str | torch.device = "auto", dtype: str | torch.dtype | None = None
                       ) -> tuple[nn.Module, ModelConfig, Tokenizer]:
    """`load_model` on the resolved device (the GPU when there is one), the weights laid out for
    fast inference there (`model.inference_layout`)."""
    dev = resolve_device(device)
    module, config, tokenizer = load_model(path, dev, dtype)
    return inference_layout(module, dev), config, tokenizer


# ----------------------------------------------------------------------- writing a run
def write_adapter_config(out: Path, cfg: LoRAConfig, base_dir: str | Path) -> None:
    base_dir = Path(base_dir)
    write_json(Path(out) / ADAPTER_CONFIG, {
        "lmforge_adapter": 1,
        "base_model": os.path.relpath(base_dir.resolve(), Path(out).resolve()),   # relative: move both together
        "base_config_sha256": config_sha256(ModelConfig.load(base_dir / CONFIG_FILE)),
        "base_weights_sha256": weights_fingerprint(base_dir),
        "lora": dataclasses.asdict(cfg),
    })


def config_sha256(config: ModelConfig) -> str:
    """Hash of the architecture (the dropout rates excluded: they do not change the weights' meaning)."""
    d = {k: v for k, v in config.to_dict().items() if k not in ("dropout", "attention_dropout")}
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def weights_fingerprint(model_dir: Path) -> str:
    """Hash of the weights file's size and first MiB (header + leading tensors): cheap, and
    different for any two trainings."""
    path = model_dir / WEIGHTS_FILE if (model_dir / WEIGHTS_FILE).is_file() else model_dir / ADAPTER_FILE
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    return hashlib.sha256(str(path.stat().st_size).encode() + head).hexdigest()[:16]


# ----------------------------------------------------------------------- reading a run
def read_adapter_config(adapter_dir: Path) -> dict:
    path = Path(adapter_dir) / ADAPTER_CONFIG
    if not path.is_file():
        raise ModelDirError(f"{adapter_dir} holds no LoRA adapters (no {ADAPTER_CONFIG}); give the --out directory "
                            f"of a LoRA fine-tuning (`lmforge finetune MODEL_DIR --lora-rank R --out DIR`)")
    info = read_json(path, "re-run the LoRA fine-tuning", ModelDirError)
    try:
        LoRAConfig(**info["lora"])
        if not isinstance(info["base_model"], str):
            raise TypeError("base_model is not a path")
        return info
    except (KeyError, TypeError) as e:
        raise ModelDirError(f"{path} is not a valid LoRA adapter config ({e}); re-run the LoRA fine-tuning") from e


def adapter_base(adapter_dir: Path, base: str | Path | None = None) -> Path:
    """The base model directory of an adapter, checked against the fingerprints it recorded."""
    adapter_dir = Path(adapter_dir)
    info = read_adapter_config(adapter_dir)
    if base is None and os.path.isabs(info["base_model"]):
        raise ModelDirError(f"{adapter_dir / ADAPTER_CONFIG} names its base by an absolute path, which lmforge never "
                            f"writes; pass the base model directory (`--base DIR`)")
    base_dir = Path(base) if base is not None else (adapter_dir / info["base_model"]).resolve()
    if not base_dir.is_dir():
        raise ModelDirError(f"the base model of the adapter in {adapter_dir} should be at {base_dir}, which does not "
                            f"exist; pass the base model directory (`--base DIR`)")
    if not all((base_dir / n).is_file() for n in (CONFIG_FILE, WEIGHTS_FILE)):
        raise ModelDirError(f"the base model of the adapter in {adapter_dir} should be at {base_dir}, which is not a "
                            f"model directory; pass the base model directory (`--base DIR`)")
    if config_sha256(ModelConfig.load(base_dir / CONFIG_FILE)) != info["base_config_sha256"]:
        raise ModelDirError(f"the adapter in {adapter_dir} was trained on a different base: {base_dir}/config.json "
                            f"does not match the config hash {info['base_config_sha256']} it recorded; pass the "
                            f"base model it was trained on")
    if weights_fingerprint(base_dir) != info["base_weights_sha256"]:
        raise ModelDirError(f"the adapter in {adapter_dir} was trained on different weights than those in "
                            f"{base_dir} (same architecture, weights fingerprint differs from "
                            f"{info['base_weights_sha256']}); pass the base model it was trained on")
    return base_dir


def load_lora_model(adapter_dir: str | Path, base: str | Path | None = None, device="cpu", dtype=None,
                    weights: dict[str, torch.Tensor] | None = None, **config_overrides):
    """(model with LoRALinear layers, the run's config, adapter tokenizer, LoRAConfig). The run's
    config is the base's plus any head the task added (trained and saved with the adapters).
    The adapters come from `weights` when given (a resumed checkpoint), else from
    adapter.safetensors."""
    adapter_dir = Path(adapter_dir)
    base_dir = adapter_base(adapter_dir, base)
    lora = LoRAConfig(**read_adapter_config(adapter_dir)["lora"])
    config = dataclasses.replace(ModelConfig.load(adapter_dir / CONFIG_FILE), **config_overrides)
    base_config, base_weights, _, source = read_model_dir(base_dir)
    model, new_head = build_from_base(config, base_config, base_weights, source)
    del base_weights
    device = torch.device(device)
    model = model.to(device=device, dtype=resolve_dtype(dtype, device))
    apply_lora(model, lora, train_also=new_head)
    if weights is None:
        weights, _ = read_weights(adapter_dir / ADAPTER_FILE)
    _load_adapter_weights(model, weights, str(adapter_dir / ADAPTER_FILE))
    return model, config, Tokenizer.load(adapter_dir), lora


def _load_adapter_weights(model: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> None:
    """Copy a run's saved tensors into the parameters `apply_lora` left trainable, which they must match."""
    expected = {n: p for n, p in model.named_parameters() if p.requires_grad}
    missing, unexpected = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
    bad = [n for n in set(expected) & set(tensors) if tensors[n].shape != expected[n].shape]
    if missing or unexpected or bad:
        raise ModelDirError(f"{source} does not match the LoRA settings in {ADAPTER_CONFIG}: missing {missing[:4]}, "
                            f"unexpected {unexpected[:4]}, wrong shape {bad[:4]}; the adapter file and its "
                            f"config come from different runs")
    with torch.no_grad():
        for n, t in tensors.items():
            expected[n].copy_(t)


# ----------------------------------------------------------------------- merging a run
def merge_adapter(adapter_dir: str | Path, out_dir: str | Path, base: str | Path | None = None,
                  overwrite: bool = False) -> Path:
    """Write base + merged adapters as a plain model directory (for export or quantization); never
    into the adapter or base directory, into one holding anything only with `overwrite`."""
    inputs = [("the adapter directory", adapter_dir), ("the base model", adapter_base(Path(adapter_dir), base))]
    check_output(out_dir, inputs=inputs, overwrite=overwrite, out_name="OUT_DIR")
    model, config, tokenizer, _ = load_lora_model(adapter_dir, base)
    return write_model_dir(out_dir, merge_lora(model), config, tokenizer, overwrite=overwrite, inputs=inputs)
