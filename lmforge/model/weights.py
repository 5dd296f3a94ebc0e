"""Weights in and out of a built model: which parameters are shared (tied), assigning a
checkpoint's tensors with errors that name the key, and swapping one layer for another."""

from __future__ import annotations

import torch
import torch.nn as nn

from ..errors import ModelDirError
from ..modeldir import check_finite


def shared_parameters(model: nn.Module) -> set[int]:
    """ids of the parameters that two or more module attributes share (a tied embedding and
    output head)."""
    count: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        count[id(p)] = count.get(id(p), 0) + 1
    return {i for i, n in count.items() if n > 1}


def load_weights_into(model: nn.Module, tensors: dict[str, torch.Tensor], source: str,
                      optional: tuple[str, ...] = ()) -> None:
    """Copy `tensors` into `model`, naming any missing, unexpected or mis-shaped key. Keys
    starting with an `optional` prefix may be missing (a new head keeps its initialisation)."""
    expected = model.state_dict()
    params = dict(model.named_parameters(remove_duplicate=False))
    shared = shared_parameters(model)
    tied = {n for n in expected if n not in tensors and n in params and id(params[n]) in shared}
    missing = sorted(n for n in set(expected) - set(tensors) - tied if not (optional and n.startswith(optional)))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise ModelDirError(f"{source} does not match the model in config.json: missing {missing[:5]}"
                            f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}"
                            f"{' ...' if len(unexpected) > 5 else ''}; the config and weights come from "
                            f"different models")
    for name, t in tensors.items():
        if tuple(t.shape) != tuple(expected[name].shape):
            raise ModelDirError(f"{source}: tensor {name!r} has shape {tuple(t.shape)} but the model expects "
                                f"{tuple(expected[name].shape)}; the config and weights come from different models")
    check_finite(tensors, source)
    model.load_state_dict(tensors, strict=False, assign=any(p.device.type == "meta" for p in model.parameters()))


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put `new` where the submodule called `name` (e.g. "transformer.blocks.0.attn.qkv") is
    (how quantization and LoRA swap layers in)."""
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)
