"""Masked-LM pretraining (task `mlm`, BERT): windows of the prepared shards, each starting with
<bos> (the [CLS] position), with 15% of the tokens selected for prediction — of those, 80%
become <mask>, 10% a random token, 10% stay — and the loss only on the selected positions.

Training masks draw from the global torch RNG, which the checkpoint saves, so `--resume` is
exact; validation masks come from a generator seeded by the batch, so every evaluation scores
the same masked positions.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import ModelConfig
from ..data.mlm import mask_tokens
from ..data.shards import load_splits
from ..errors import ConfigError
from ..options import option, validate
from .base import Task, token_entropy


@dataclass
class MLMConfig:
    mask_prob: float = option(0.15, "masked LM: fraction of tokens selected for prediction (of those, 80%% become "
                                    "<mask>, 10%% a random token, 10%% stay)")

    def __post_init__(self) -> None:
        validate(self)
        if not 0.0 < self.mask_prob < 1.0:
            raise ConfigError(f"mask_prob={self.mask_prob} must be in (0, 1)")



class MaskedLMTask(Task):
    name = "mlm"
    reports_perplexity = True        # exp of the masked-token cross-entropy

    def __init__(self, data_dir: str | Path, context_length: int, tokenizer, options: MLMConfig | None = None):
        if tokenizer.mask_id is None:
            raise ConfigError(f"the tokenizer of {data_dir} has no mask token (it predates <mask>); prepare the data "
                              f"again with `lmforge prepare ... --tokenizer wordpiece` (or bpe / char)")
        self.options = options or MLMConfig()
        self.bos = tokenizer.bos_id
        self.T = context_length - (self.bos is not None)                # window tokens after <bos>
        self.mask_id, self.vocab_size = tokenizer.mask_id, tokenizer.vocab_size
        self.special = tokenizer.special_ids
        self.data = load_splits(data_dir, self.T + 1, f"the context length {context_length}")

    def frozen(self, config) -> tuple[str, ...]:
        return ("pooler.", "classifier.")

    def sample(self, split: str, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(len(self.data[split]) - self.T + 1, (n,), generator=generator)

    def train_examples(self) -> int:
        return len(self.data["train"]) // self.T

    def collate(self, split: str, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        data = self.data[split]
        rows = torch.from_numpy(np.stack([data[i: i + self.T] for i in indices.tolist()]).astype(np.int64))
        if self.bos is not None:
            rows = torch.cat([torch.full((len(rows), 1), self.bos, dtype=torch.long), rows], dim=1)
        gen = None if split == "train" else torch.Generator().manual_seed(int(indices.sum()) * 7919 + len(indices))
        inputs, labels = self.mask(rows, gen)
        return {"x": inputs, "labels": labels}

    def mask(self, rows: torch.Tensor, gen: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(inputs, labels) of windows (B, T): BERT's masking (`data.mlm.mask_tokens`)."""
        return mask_tokens(rows, mask_id=self.mask_id, vocab_size=self.vocab_size, special_ids=self.special,
                           mask_prob=self.options.mask_prob, generator=gen)

    def constant_loss(self) -> float:
        return token_entropy(self.data["train"])

    def loss(self, model, batch):
        selected = batch["labels"] != -100
        logits = model(batch["x"], select=selected)                     # (N, V): only the selected positions
        return F.cross_entropy(logits.float(), batch["labels"][selected])


def build(cfg, config: ModelConfig, tokenizer) -> MaskedLMTask:
    if config.family != "encoder":
        raise ConfigError(f"task mlm needs an encoder model, but this one is a {config.family}; pick an "
                          f"encoder preset (bert-tiny, bert-mini, bert-base)")
    return MaskedLMTask(cfg.data, config.context_length, tokenizer, cfg.options_for(MLMConfig))
