"""LoRA runs: the adapter directory a LoRA fine-tune writes, and merging it into its base.

The adapter modules themselves (`LoRAConfig`, `LoRALinear`, `apply_lora`, `merge_lora`) live in
`lmforge.model.lora` (how targets are chosen and what A and B compute); reading an adapter
directory back is `lmforge.loading.load_lora_model`.

A LoRA run (`lmforge finetune MODEL --lora-rank R`) writes a model directory without a full
copy of the weights:

    adapter.safetensors   the trainable tensors only (adapters + `--lora-train` modules)
    adapter_config.json   the LoRA settings, the base model's path and its fingerprints
    config.json, tokenizer files, metrics.jsonl, train_state/   as in every run

`lmforge.load` (so every verb) loads it as the base with the adapters merged in; an adapter
whose recorded base fingerprints differ from the base found is refused.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from ..config import ModelConfig
from ..loading import (adapter_base, config_sha256, is_adapter_dir, load_lora_model, read_adapter_config,
                       weights_fingerprint, write_model_dir)
from ..model.lora import (ALIASES, LoRAConfig, LoRALinear, apply_lora, load_adapter_weights, merge_lora,
                          resolve_targets, trainable_state_dict)
from ..modeldir import ADAPTER_CONFIG, ADAPTER_FILE, CONFIG_FILE, write_json

__all__ = ["ADAPTER_CONFIG", "ADAPTER_FILE", "ALIASES", "LoRAConfig", "LoRALinear", "adapter_base", "apply_lora",
           "config_sha256", "is_adapter_dir", "load_adapter_weights", "load_lora_model", "merge_adapter", "merge_lora",
           "read_adapter_config", "resolve_targets", "trainable_state_dict", "weights_fingerprint",
           "write_adapter_config"]


def write_adapter_config(out: Path, cfg: LoRAConfig, base_dir: str | Path) -> None:
    base_dir = Path(base_dir)
    write_json(Path(out) / ADAPTER_CONFIG, {
        "lmforge_adapter": 1,
        "base_model": os.path.relpath(base_dir.resolve(), Path(out).resolve()),   # relative: move both together
        "base_config_sha256": config_sha256(ModelConfig.load(base_dir / CONFIG_FILE)),
        "base_weights_sha256": weights_fingerprint(base_dir),
        "lora": dataclasses.asdict(cfg),
    })


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path, base: str | Path | None = None,
                  overwrite: bool = False) -> Path:
    """Write base + merged adapters as a plain model directory (for export or quantization); never
    into the adapter or base directory, into one holding anything only with `overwrite`."""
    from ..safety import check_output
    inputs = [("the adapter directory", adapter_dir), ("the base model", adapter_base(Path(adapter_dir), base))]
    check_output(out_dir, inputs=inputs, overwrite=overwrite, out_name="OUT_DIR")
    model, config, tokenizer, _ = load_lora_model(adapter_dir, base)
    return write_model_dir(out_dir, merge_lora(model), config, tokenizer, overwrite=overwrite, inputs=inputs)
