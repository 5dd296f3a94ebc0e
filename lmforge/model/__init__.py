"""Model families assembled from the shared blocks in `blocks.py`.

`build_model(config)` picks the family's class from `FAMILIES`; each family module registers
itself there (decoder here; encoder and seq2seq in their own modules).
"""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

from ..config import ModelConfig
from ..errors import ConfigError
from .decoder import DecoderLM

FAMILIES: dict[str, Callable[[ModelConfig], nn.Module]] = {"decoder": DecoderLM}


def build_model(config: ModelConfig) -> nn.Module:
    if config.family not in FAMILIES:
        raise ConfigError(f"no model is registered for family {config.family!r}; "
                          f"known: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[config.family](config)


__all__ = ["build_model", "DecoderLM", "FAMILIES"]
