"""Reading a whole model directory into a module: where every load of weights ends.

An lmforge directory (config.json + model.safetensors + tokenizer), a Hugging Face one or a
GGUF file (converted through `lmforge.interop`'s key tables) becomes (module, config, tokenizer).
The module is built on the meta device and the tensors assigned, so weights are materialised
once; quantized configs get their int8 / int4 layers before the weights arrive; `resolve_device` /
`resolve_dtype` turn the user's "auto" into a place.

A LoRA run's directory holds adapters, not a whole model, and is refused here: `lmforge.adapt.runs`
reads it onto its base (through this module), and is what the verbs load any directory through.

    >>> resolve_dtype("auto", torch.device("cpu"))
    torch.float32
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch

from .config import ModelConfig
from .errors import ConfigError, LmforgeError, ModelDirError
from .interop import is_gguf_file, is_hf_dir, read_gguf, read_hf
from .model import build_model, new_head_prefixes
from .model.blocks import init_weights
from .model.quantized import swap_in_quantized
from .model.weights import load_weights_into
from .modeldir import CONFIG_FILE, WEIGHTS_FILE, check_model_dir, is_adapter_dir, read_weights, save_weights
from .tokenizers import Tokenizer

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise LmforgeError(f"dtype={dtype!r} is unknown; use auto, {', '.join(DTYPES)}")
    return DTYPES[dtype]


def resolve_device(name: str | torch.device) -> torch.device:
    """"auto": the GPU when there is one, else the CPU; a named device is checked to exist."""
    if isinstance(name, torch.device):
        return name
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} but no CUDA GPU is available; use --device cpu")
    return torch.device(name)


def build(config: ModelConfig) -> torch.nn.Module:
    """The model of `config` (on the current default device), with the int8 / int4 layers its
    `quantization` record lists."""
    model = build_model(config)
    if config.quantization:
        swap_in_quantized(model, config.quantization)
    return model


def read_model_dir(path: str | Path) -> tuple[ModelConfig, dict[str, torch.Tensor], Tokenizer, str]:
    """(config, weights, tokenizer, source name) of an lmforge model directory, a Hugging Face
    one or a GGUF file (converted through `lmforge.interop`'s key tables). Tensors are read, not
    yet placed."""
    path = Path(path)
    if is_gguf_file(path):
        config, weights, tokenizer, _ = read_gguf(path)
        return config, weights, tokenizer, str(path)
    if is_hf_dir(path):
        config, weights, tokenizer, _ = read_hf(path)
        return config, weights, tokenizer, str(path)
    if is_adapter_dir(path):
        raise ModelDirError(f"{path} holds LoRA adapters, not a whole model; merge them into their base first "
                            f"(`lmforge merge-lora {path} MERGED_DIR`) and use MERGED_DIR")
    path = check_model_dir(path, (CONFIG_FILE, WEIGHTS_FILE))
    weights, _ = read_weights(path / WEIGHTS_FILE)
    return ModelConfig.load(path / CONFIG_FILE), weights, Tokenizer.load(path), str(path / WEIGHTS_FILE)


def build_with_weights(config: ModelConfig, weights: dict[str, torch.Tensor], source: str,
                       optional: tuple[str, ...] = ()) -> torch.nn.Module:
    """The model of `config` holding `weights`, materialised once: built on the meta device, the
    tensors assigned. Parameters under `optional` prefixes (a new head) may be missing and are
    initialised as in a fresh model."""
    with torch.device("meta"):
        model = build(config)
    load_weights_into(model, weights, source, optional)
    for prefix in optional:                       # a new head is still on meta: initialise it as a fresh model would
        head = model.get_submodule(prefix.rstrip("."))
        if any(p.device.type == "meta" for p in head.parameters()):
            init_weights(head.to_empty(device="cpu"), config)
    _materialise_buffers(model)
    return model


def build_from_base(config: ModelConfig, base_config: ModelConfig, base_weights: dict[str, torch.Tensor],
                    source: str) -> tuple[torch.nn.Module, tuple[str, ...]]:
    """(the model of `config` holding a base model's weights, the prefixes of its new head).
    A head `config` adds to the base (`model.new_head_prefixes`: a classifier for other labels)
    takes none of the base's tensors and starts from a fresh model's initialisation."""
    new_head = new_head_prefixes(base_config, config)
    weights = {k: v for k, v in base_weights.items() if not (new_head and k.startswith(new_head))}
    return build_with_weights(config, weights, source, optional=new_head), new_head


def load_whole_model(path: str | Path, device: str | torch.device = "cpu", dtype: str | torch.dtype | None = None,
               **config_overrides: Any) -> tuple[torch.nn.Module, ModelConfig, Tokenizer]:
    """(module, config, tokenizer) from an lmforge or Hugging Face model directory or a GGUF
    file (`read_model_dir`); a LoRA run's directory is refused (`lmforge.adapt.runs.load_model`
    loads it, merged into its base)."""
    config, weights, tokenizer, source = read_model_dir(path)
    if config_overrides:
        config = dataclasses.replace(config, **config_overrides)
    model = build_with_weights(config, weights, source)
    del weights                        # the model owns the tensors now: a dtype cast below frees them one by one
    device = torch.device(device)
    model = model.to(device=device, dtype=resolve_dtype(dtype, device)).eval()
    return model, config, tokenizer


def _materialise_buffers(model: torch.nn.Module) -> None:
    """After building on meta and assigning loaded weights: compute the non-persistent buffers
    (RoPE / sinusoidal tables, via each module's `init_buffers`) and re-tie shared weights."""
    for module in model.modules():
        if hasattr(module, "init_buffers"):
            module.init_buffers()
    if hasattr(model, "tie_weights"):
        model.tie_weights()
    leftover = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.device.type == "meta"]
    assert not leftover, f"tensors left on the meta device after loading: {leftover}"


def write_model_dir(directory: str | Path, module: torch.nn.Module, config: ModelConfig, tokenizer: Tokenizer,
                    target_tokenizer: Tokenizer | None = None, *, overwrite: bool = False,
                    inputs: list[tuple[str, str | Path | None]] = ()) -> Path:
    """Write an lmforge model directory (config, weights, tokenizer, a seq2seq target tokenizer).
    It appears whole or not at all, never over one of `inputs`, over a directory holding anything
    only with `overwrite` (the output rule of `lmforge.safety`)."""
    from .data.pairs import TARGET_TOKENIZER_DIR
    from .safety import staged_output
    with staged_output(directory, inputs=inputs, overwrite=overwrite, out_name="the output directory") as d:
        config.save(d / CONFIG_FILE)
        save_weights(module, d / WEIGHTS_FILE)
        tokenizer.save(d)
        if target_tokenizer is not None and target_tokenizer is not tokenizer:
            target_tokenizer.save(d / TARGET_TOKENIZER_DIR)
    return Path(directory)
