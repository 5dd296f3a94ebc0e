"""Padding variable-length examples into batches (the key-padding mask travels with them)."""

from __future__ import annotations

import torch


def pad_right(seqs: list[list[int]], pad_id: int, fill: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad id lists -> ids (B, T) and valid (B, T), True at real tokens; `fill` (default
    pad_id) is the value at padded positions (e.g. -100 for ignored labels).

    >>> ids, valid = pad_right([[5, 6, 7], [8]], pad_id=0)
    >>> ids.tolist(), valid.tolist()
    ([[5, 6, 7], [8, 0, 0]], [[True, True, True], [True, False, False]])
    """
    T = max(1, max(len(s) for s in seqs))
    ids = torch.full((len(seqs), T), pad_id if fill is None else fill, dtype=torch.long)
    valid = torch.zeros((len(seqs), T), dtype=torch.bool)
    for b, s in enumerate(seqs):
        ids[b, : len(s)] = torch.tensor(s, dtype=torch.long)
        valid[b, : len(s)] = True
    return ids, valid
