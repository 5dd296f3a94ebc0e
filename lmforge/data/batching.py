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


class EpochOrder:
    """The training examples in shuffled passes (epochs), as a pure function of the step: pass e
    is a permutation of range(n) drawn from (seed, e), and step s takes the `per_step` positions
    from s x per_step of the passes laid end to end. Every example is seen once per pass; a resumed
    run continues the same order with nothing saved; every rank computes the same indices. With
    `lengths`, each pass is grouped by length as `length_grouped` groups a draw: runs of `groups` x
    `per_step` examples of the pass are sorted by length and cut into steps, in a random order.

    >>> order = EpochOrder(5, seed=0, per_step=2)
    >>> first_pass = order.take(0).tolist() + order.take(1).tolist() + order.take(2).tolist()[:1]
    >>> sorted(first_pass)
    [0, 1, 2, 3, 4]
    """

    def __init__(self, n: int, seed: int, per_step: int, lengths: torch.Tensor | None = None, groups: int = 16):
        self.n, self.seed, self.per_step, self.lengths, self.groups = n, seed, per_step, lengths, groups
        self._passes: dict[int, torch.Tensor] = {}

    def take(self, step: int) -> torch.Tensor:
        """The `per_step` example indices (int64) of optimizer step `step` (0-based)."""
        start = step * self.per_step
        parts = []
        for e in range(start // self.n, (start + self.per_step - 1) // self.n + 1):
            lo, hi = max(start, e * self.n) - e * self.n, min(start + self.per_step, (e + 1) * self.n) - e * self.n
            parts.append(self._pass(e)[lo:hi])
        return torch.cat(parts)

    def _pass(self, e: int) -> torch.Tensor:
        if e not in self._passes:
            self._passes = {k: v for k, v in self._passes.items() if k >= e - 1}     # keep the pass a step straddles
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + e)
            order = torch.randperm(self.n, generator=gen)
            if self.lengths is not None:
                order = self._grouped(order, gen)
            self._passes[e] = order
        return self._passes[e]

    def _grouped(self, order: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        k, runs = self.per_step, []
        for chunk in order.split(k * self.groups):
            chunk = chunk[torch.argsort(self.lengths[chunk], stable=True)]
            steps = chunk.split(k)
            runs += [steps[i] for i in torch.randperm(len(steps), generator=gen).tolist()]
        return torch.cat(runs)
