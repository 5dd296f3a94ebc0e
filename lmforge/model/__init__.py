"""Model families assembled from the shared blocks in `blocks.py`.

`build_model(config)` picks the family's class from `FAMILIES`: decoder (GPT, Llama),
encoder (BERT) and seq2seq (the original Transformer), all assembled from `blocks.py` plus the
shared heads in `heads.py`.
"""

from __future__ import annotations

from typing import Callable

import torch.nn as nn

from ..config import ModelConfig
from ..errors import ConfigError
from .decoder import DecoderLM
from .encoder import EncoderModel
from .seq2seq import Seq2SeqLM

FAMILIES: dict[str, Callable[[ModelConfig], nn.Module]] = {"decoder": DecoderLM, "encoder": EncoderModel,
                                                           "seq2seq": Seq2SeqLM}


def build_model(config: ModelConfig) -> nn.Module:
    if config.family not in FAMILIES:
        raise ConfigError(f"no model is registered for family {config.family!r}; "
                          f"known: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[config.family](config)


__all__ = ["build_model", "DecoderLM", "EncoderModel", "Seq2SeqLM", "FAMILIES"]
