"""Whether a training run fits: a rough, deliberately generous estimate of the memory one
micro-batch needs, checked against what the device has free before the first step."""

from __future__ import annotations

import os

import torch

from ..config import ModelConfig
from ..errors import ConfigError
from ..model import num_params


def check_memory_fits(config: ModelConfig, batch_size: int, device: torch.device,
                      model: torch.nn.Module | None = None) -> int:
    """Refuse a configuration that cannot fit: weights + optimizer state (of the trainable
    parameters of `model`; None: all) + activations of one micro-batch (a rough, deliberately
    generous estimate) against the free memory. Returns the number of trainable parameters."""
    n = num_params(config)
    if model is None:
        n_trainable, trainable_fraction = n, 1.0
    else:
        n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        trainable_fraction = n_trainable / max(1, sum(p.numel() for p in model.parameters()))
    T, d, L, V = config.context_length, config.d_model, config.n_layer, config.padded_vocab_size
    act_bytes = 4 if device.type == "cpu" else 2
    attn = config.n_head * T * T * 4 * batch_size * L if device.type == "cpu" else 0  # math attention keeps scores
    need = n * 4 + n * trainable_fraction * 12 + batch_size * T * (16 * d * L * act_bytes + 3 * V * 4) + attn
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return n_trainable
    if need > free:
        raise ConfigError(f"batch_size={batch_size} x context {T} with {n / 1e6:.1f}M parameters needs about "
                          f"{need / 2**30:.1f} GiB but only {free / 2**30:.1f} GiB is free on {device}; lower "
                          f"--batch-size (raise --grad-accum to keep tokens per step) or --context-length")
    return n_trainable
