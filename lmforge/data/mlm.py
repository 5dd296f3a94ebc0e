"""Masked-LM pretraining batches (BERT): windows of the prepared shards, each starting with
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

from ..errors import ConfigError
from ..options import option, validate
from ..train.objective import Objective
from .shards import load_splits


@dataclass
class MLMOptions:
    mask_prob: float = option(0.15, "masked LM: fraction of tokens selected for prediction (of those, 80%% become "
                                    "<mask>, 10%% a random token, 10%% stay)")

    def __post_init__(self) -> None:
        validate(self)
        if not 0.0 < self.mask_prob < 1.0:
            raise ConfigError(f"mask_prob={self.mask_prob} must be in (0, 1)")


def mask_tokens(ids: torch.Tensor, *, mask_id: int, vocab_size: int, special_ids: set[int] | list[int],
                mask_prob: float = 0.15, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking of ids (B, T) -> (inputs, labels). Each non-special token is selected with
    probability `mask_prob` (at least one per batch); a selected token becomes <mask> with
    probability 0.8, a random non-special token with 0.1, and stays with 0.1. labels hold the
    original id at selected positions and -100 (ignored) elsewhere."""
    special = torch.tensor(sorted(special_ids), dtype=ids.dtype)
    candidate = ~torch.isin(ids, special)
    u = torch.rand(ids.shape, generator=generator)
    selected = (u < mask_prob) & candidate
    if not selected.any() and candidate.any():                      # never a batch with nothing to predict
        selected.view(-1)[torch.where(candidate.view(-1), u.view(-1), 2.0).argmin()] = True
    labels = torch.where(selected, ids, torch.full_like(ids, -100))
    r = torch.rand(ids.shape, generator=generator)
    allowed = torch.ones(vocab_size, dtype=torch.bool)
    allowed[special[special < vocab_size]] = False
    allowed_ids = allowed.nonzero().squeeze(1)
    random_ids = allowed_ids[torch.randint(len(allowed_ids), ids.shape, generator=generator)]
    inputs = torch.where(selected & (r < 0.8), torch.full_like(ids, mask_id), ids)
    inputs = torch.where(selected & (r >= 0.8) & (r < 0.9), random_ids, inputs)
    return inputs, labels


class MaskedLMObjective(Objective):
    name = "mlm"
    reports_perplexity = True        # exp of the masked-token cross-entropy

    def __init__(self, data_dir: str | Path, context_length: int, tokenizer, options: MLMOptions | None = None):
        if tokenizer.mask_id is None:
            raise ConfigError(f"the tokenizer of {data_dir} has no mask token (it predates <mask>); prepare the data "
                              f"again with `lmforge prepare ... --tokenizer wordpiece` (or bpe / char)")
        self.options = options or MLMOptions()
        self.bos = tokenizer.bos_id
        self.T = context_length - (self.bos is not None)                # window tokens after <bos>
        self.mask_id, self.vocab_size = tokenizer.mask_id, tokenizer.vocab_size
        self.special = tokenizer.special_ids
        self.data = load_splits(data_dir, self.T + 1, f"the context length {context_length}")

    def frozen(self, config) -> tuple[str, ...]:
        return ("pooler.", "classifier.")

    def sample(self, split: str, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(len(self.data[split]) - self.T + 1, (n,), generator=generator)

    def collate(self, split: str, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        data = self.data[split]
        rows = torch.from_numpy(np.stack([data[i: i + self.T] for i in indices.tolist()]).astype(np.int64))
        if self.bos is not None:
            rows = torch.cat([torch.full((len(rows), 1), self.bos, dtype=torch.long), rows], dim=1)
        gen = None if split == "train" else torch.Generator().manual_seed(int(indices.sum()) * 7919 + len(indices))
        inputs, labels = mask_tokens(rows, mask_id=self.mask_id, vocab_size=self.vocab_size,
                                     special_ids=self.special, mask_prob=self.options.mask_prob, generator=gen)
        return {"x": inputs, "labels": labels}

    def loss(self, model, batch):
        selected = batch["labels"] != -100
        logits = model(batch["x"], select=selected)                     # (N, V): only the selected positions
        return F.cross_entropy(logits.float(), batch["labels"][selected])
