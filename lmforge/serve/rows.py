"""The scheduler's batched KV cache: per layer, one preallocated buffer of `max_batch` rows x the
context (and for an encoder-decoder a second one, the cross attention's keys and values of each
row's source, with a per-row source mask). A step runs on views of the rows and slots in use
(`use`); a row is copied into a hole left by a finished sequence (`move`), so the running rows
stay packed at the top."""

from __future__ import annotations

import torch

from ..model.kv_cache import KVCache


class _RowsView:
    """Rows r0..r1 and slots 0..S-1 of a layer's cache: what `Attention` sees for one step
    (a view, so writes land in the shared buffer)."""

    update = KVCache.update

    def __init__(self, k_cache: torch.Tensor, v_cache: torch.Tensor):
        self.k_cache, self.v_cache = k_cache, v_cache


class RowCache:
    """The buffers of `stack`'s blocks (the blocks that decode), allocated at the first step."""

    def __init__(self, module, stack, max_batch: int, seq2seq: bool):
        self.module, self.stack, self.max_batch, self.seq2seq = module, stack, max_batch, seq2seq
        self.caches: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self.cross: list[tuple[torch.Tensor, torch.Tensor]] = []     # seq2seq: per layer, every row's source
        self.source_valid: torch.Tensor | None = None                  # seq2seq: (rows, context) real source slots

    def ensure(self) -> None:
        if self.caches is not None:
            return
        self.module.clear_cache()           # caches an earlier `generate` kept go: the rows below replace them
        p = next(self.module.parameters())
        c = self.module.config
        # one slot more than the context: a compiled step's slots in use are never the whole buffer's
        shape = (self.max_batch, c.kv_heads, c.context_length + 1, c.head_dim)

        def buffers() -> list[tuple[torch.Tensor, torch.Tensor]]:
            return [(torch.zeros(shape, dtype=p.dtype, device=p.device),
                     torch.zeros(shape, dtype=p.dtype, device=p.device)) for _ in self.stack.blocks]
        self.caches = buffers()
        if self.seq2seq:
            self.cross = buffers()
            self.source_valid = torch.zeros((self.max_batch, c.context_length), dtype=torch.bool, device=p.device)

    def use(self, r0: int, r1: int, slots: int, source_slots: int = 0) -> None:
        """Rows r0..r1, slots 0..slots-1 (and source slots) are what the next forward sees."""
        for block, (k, v) in zip(self.stack.blocks, self.caches):
            block.attn.kv_cache = _RowsView(k[r0:r1, :, :slots], v[r0:r1, :, :slots])
        for block, (k, v) in zip(self.stack.blocks, self.cross):
            block.cross_attn.memory_kv = (k[r0:r1, :, :source_slots], v[r0:r1, :, :source_slots])

    def drop_views(self) -> None:
        for block in self.stack.blocks:
            block.attn.kv_cache = None
            if block.cross_attn is not None:
                block.cross_attn.memory_kv = None

    def move(self, src: int, dst: int, length: int, source_length: int) -> None:
        """Row src's first `length` slots (and source) into row dst."""
        for k, v in self.caches:
            k[dst, :, :length] = k[src, :, :length]
            v[dst, :, :length] = v[src, :, :length]
        for k, v in self.cross:
            k[dst, :, :source_length] = k[src, :, :source_length]
            v[dst, :, :source_length] = v[src, :, :source_length]
        if self.source_valid is not None:
            self.source_valid[dst] = self.source_valid[src]
