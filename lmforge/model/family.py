"""`FamilyModel`: what the decoder, the encoder and the seq2seq model share, once.

A family is built from one `ModelConfig` (checked against its `family`), assembles its parts in
`__init__`, then calls `finish_init()`: shared tables are tied (`tie_weights`, again after
loading weights) and every weight gets the GPT-2 init. `num_params` counts parameters, shared
ones once; without embeddings it leaves out the tables the family names in `lookup_tables`
(used only as lookups: no matmul FLOPs, as the MFU convention counts).
"""

from __future__ import annotations

import torch.nn as nn

from ..config import ModelConfig
from .blocks import init_weights
from .heads import lookup_params


class FamilyModel(nn.Module):
    family: str                   # the config.family this class builds

    def __init__(self, config: ModelConfig):
        super().__init__()
        assert config.family == self.family, f"{type(self).__name__} builds {self.family} configs"
        self.config = config

    def finish_init(self) -> None:
        """After the parts are built: tie the shared tables, then initialise every weight."""
        self.tie_weights()
        init_weights(self, self.config)

    def tie_weights(self) -> None:
        """Share tables between parts (each family says which); called again after loading weights."""

    def lookup_tables(self) -> list[nn.Module | None]:
        """The embedding tables used only as lookups (None entries are skipped)."""
        return []

    def num_params(self, embeddings: bool = True) -> int:
        """Parameters (shared ones once); without embeddings: minus the lookup-only tables."""
        n = sum(p.numel() for p in self.parameters())
        return n if embeddings else n - lookup_params(*self.lookup_tables())
