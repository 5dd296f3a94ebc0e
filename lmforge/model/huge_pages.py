"""A loaded model's weights in one block of memory backed by 2 MiB pages (Linux), for decoding.

A batch-1 decode step reads every weight once per token, so on a CPU it streams the whole model
from memory. With 4 KiB pages that stream crosses a page every 4 KiB: a TLB miss each time (the
6 x 384 CPU anchor's 58 MB are 14,000 pages, far more than the TLB holds) and a stop for the
hardware prefetchers, which do not follow a stream across a page boundary. Linux gives a
process 2 MiB pages where it asks for them (`madvise(MADV_HUGEPAGE)`; most distributions set
transparent huge pages to "madvise", so PyTorch's own allocations get 4 KiB pages). On the
project's 2-core EPYC the compiled fp32 decode step of the anchor ran at 1.22x the tokens/s with
its weights on 2 MiB pages (12 rounds alternating in one process, each faster: 553-636 against
426-552 tokens/s; 1.19x in 10 of 10 rounds of another run), the eager step at 1.09x (10 of 10),
with the same greedy tokens. Quantized models are left as they are: their int8 or int4 weights
(15 and 7 MB for the anchor) mostly stay in the CPU's 32 MB cache between tokens, and in one
block their compiled steps were slower, not faster: 0.88-0.91x for int8 (0.76x in one block of
4 KiB pages) and 0.93x for int4, against PyTorch's own allocations (10 rounds each).

`weights_on_huge_pages(model)` copies every parameter and buffer (not the KV caches, which a
run sets up later) into one anonymous mapping advised for huge pages, storage by storage: tied
weights stay tied, strides (the column-major layouts of `inference_layout`) stay as they were,
and each old storage is freed as soon as it is copied, so memory does not double. Values, names,
shapes and the state dict are unchanged; the tensors become views of the one mapping
(`modeldir.save_tensors` copies such views out before writing). Where the kernel refuses the
advice (another OS, huge pages turned off) the copy still costs nothing more than a copy.
`LMFORGE_HUGE_PAGES=0` leaves the weights where PyTorch allocated them.
"""

from __future__ import annotations

import mmap
import os

import torch
import torch.nn as nn

HUGE_PAGE = 2 << 20
OFF = "LMFORGE_HUGE_PAGES"       # =0: leave the weights where PyTorch allocated them
_ALIGN = 64                      # bytes between storages in the mapping: a cache line


def _weights(model: nn.Module) -> list[torch.Tensor]:
    return [t for name, t in (*model.named_parameters(), *model.named_buffers()) if "kv_cache" not in name]


def _round_up(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def on_huge_pages(model: nn.Module) -> bool:
    """Whether the model's weights already lie in one mapping placed by `weights_on_huge_pages`."""
    mapping = model.__dict__.get("_huge_pages")
    if mapping is None:
        return False
    start, end = mapping.data_ptr(), mapping.data_ptr() + mapping.numel()
    return all(start <= t.data_ptr() < end for t in _weights(model) if t.numel())


def weights_on_huge_pages(model: nn.Module) -> nn.Module:
    """Move the weights of a CPU model into one mapping backed by 2 MiB pages (see the module doc);
    a model on another device, with tensor subclasses (FSDP's DTensors), with quantized weight
    matrices (integer tensors: see the module doc), of less than a huge page of weights, already
    moved, or with LMFORGE_HUGE_PAGES=0 is left as it is."""
    tensors = _weights(model)
    if not tensors or any(t.device.type != "cpu" or type(t) not in (torch.Tensor, nn.Parameter) for t in tensors) \
            or any(t.dim() == 2 and not t.is_floating_point() for t in tensors) \
            or on_huge_pages(model) or not hasattr(mmap, "MADV_HUGEPAGE") or os.environ.get(OFF) == "0":
        return model                            # (a sharded DTensor keeps the storage its mesh gave it)
    users: dict[int, tuple[torch.UntypedStorage, list[torch.Tensor]]] = {}     # per storage: the tensors on it
    for t in tensors:
        users.setdefault(t.untyped_storage().data_ptr(), (t.untyped_storage(), []))[1].append(t)
    size = sum(_round_up(storage.nbytes(), _ALIGN) for storage, _ in users.values())
    if size < HUGE_PAGE:
        return model
    region = mmap.mmap(-1, _round_up(size, HUGE_PAGE) + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    block = torch.frombuffer(region, dtype=torch.uint8)         # keeps the mapping alive
    skip = (-block.data_ptr()) % HUGE_PAGE
    try:
        region.madvise(mmap.MADV_HUGEPAGE, skip, _round_up(size, HUGE_PAGE))
    except OSError:                                             # huge pages off: still one block
        pass
    block, at = block[skip: skip + size], 0
    while users:                                # popped, so each old storage is freed once copied
        storage, on_it = users.popitem()[1]
        space = block[at: at + storage.nbytes()]
        space.copy_(torch.empty(0, dtype=torch.uint8).set_(storage))
        for t in on_it:
            typed = space.view(t.dtype)
            t.data = typed.as_strided(t.shape, t.stride(), typed.storage_offset() + t.storage_offset())
        at += _round_up(storage.nbytes(), _ALIGN)
    model.__dict__["_huge_pages"] = block
    return model
