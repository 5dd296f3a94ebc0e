"""Masked-LM inputs (BERT): select 15% of the tokens for prediction — of those, 80% become
<mask>, 10% a random token, 10% stay — with labels only on the selected positions. (ELECTRA's
generator input: 85% <mask>, none random, `mask_share=0.85, random_share=0.0`.)"""

from __future__ import annotations

import torch


def mask_tokens(ids: torch.Tensor, *, mask_id: int, vocab_size: int, special_ids: set[int] | list[int],
                mask_prob: float = 0.15, generator: torch.Generator | None = None, mask_share: float = 0.8,
                random_share: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking of ids (B, T) -> (inputs, labels). Each non-special token is selected with
    probability `mask_prob` (at least one per batch); a selected token becomes <mask> with
    probability `mask_share` (0.8), a random non-special token with `random_share` (0.1), and
    stays otherwise. labels hold the original id at selected positions and -100 (ignored) elsewhere."""
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
    inputs = torch.where(selected & (r < mask_share), torch.full_like(ids, mask_id), ids)
    inputs = torch.where(selected & (r >= mask_share) & (r < mask_share + random_share), random_ids, inputs)
    return inputs, labels
