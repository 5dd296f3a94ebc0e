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


def length_grouped(lengths: torch.Tensor, n: int, generator: torch.Generator, groups: int = 16) -> torch.Tensor:
    """`n` indices into `lengths`, drawn uniformly with replacement, that make a batch of similar
    lengths (as transformers' `group_by_length` does): `groups` x `n` are drawn, sorted by length,
    and one of the `groups` runs of `n` is kept at random. Every index stays equally likely to be
    drawn; a batch pads to its own longest example, which is close to the rest, not to the longest
    of a random draw.

    >>> lengths = torch.tensor([3, 100, 4, 99, 5, 98])
    >>> batch = length_grouped(lengths, 2, torch.Generator().manual_seed(0), groups=3)
    >>> batch.shape, bool(lengths[batch].max() - lengths[batch].min() < 90)
    (torch.Size([2]), True)
    """
    pool = torch.randint(len(lengths), (n * groups,), generator=generator)
    pool = pool[torch.argsort(lengths[pool], stable=True)]
    g = int(torch.randint(groups, (1,), generator=generator))
    return pool[g * n: (g + 1) * n]
