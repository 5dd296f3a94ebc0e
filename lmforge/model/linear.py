"""`Linear`: `nn.Linear` whose few-row product inside a compiled CPU decode step is a sum over
the inputs, and `fused_gemv`, the test of when to write it so (shared with the quantized layers);
eagerly, a loaded model's products run on weights packed for oneDNN or split over the threads.

A batch-1 decode step multiplies one vector by every weight matrix. MKL's GEMV does it on one
thread however many there are (10-27 GB/s from DRAM on this project's 2-core EPYC); written as
`(x * W).sum(-1)` on row-major weights, inductor turns it into a vectorised dot-product loop
parallel over the outputs, fused with the ops around it (19-42 GB/s on 2 threads). On the CPU
anchor's Llama 6 x 384 (`benchmarks/decode_profile.py`'s model) the compiled decode step went from
229 to 588 tokens/s on 2 threads in a side-by-side run (450-560 in later runs of the day; 198 to
259 on 1 thread), with the same greedy tokens.

Eagerly (decoding: no gradient), the same one-row product on T >= 2 threads is a batched product
over T blocks of the weight's rows (`split_gemv`: `torch.bmm` of (T, out/T, in) views of the
row-major weight), which PyTorch runs one block per thread: 39-43 GB/s through the CPU anchor's
55 MB of weights against 15 GB/s for `F.linear` on column-major weights, and eager decoding
185 -> 311 tokens/s (2.12x transformers) with the same tokens. So `model.inference_layout` keeps
float32 weights row-major on two threads or more, and column-major (which suit MKL's one-thread
GEMV) on one; the compiled step lays them out row-major first (`row_major_layout`).

Products of two rows or more (a batch, a server's running rows, a prompt) by a loaded model's
float32 weights, and bf16 products from one row (`inference_layout` marks its Linears: `packs`;
bf16: 39 against 79 us a matrix for PyTorch's bf16 `F.linear`) run on a copy of each weight
packed once into oneDNN's blocked layout (`packed_product`; PyTorch's own
`mkldnn._reorder_linear_weight` / `_linear_pointwise`, what inductor's CPU freezing uses): through
gpt-small's 24 matrices on 2 threads, 85 against 122 us a matrix at 4 rows and 102 against 172 at 8
for the split product, 1.6x MKL's at 2-8 rows on one thread; one row gains nothing over the GEMV
(84 against 64 us), so it stays there. Eager decoding of a batch of 4 went from 575 to 770 tokens/s
(1.49x -> 1.99x transformers), of 16 from 1,150 to 1,696 (1.07x -> 1.57x).
"""

from __future__ import annotations

import weakref

import torch
import torch.nn as nn
import torch.nn.functional as F

from .huge_pages import weights_on_huge_pages

FUSED_ROWS = 8     # most input rows (batch x tokens) for which a compiled step writes the product as a sum


def few_rows(x: torch.Tensor, most: int = FUSED_ROWS) -> bool:
    """At most `most` input rows (batch x tokens): a decode step's product, not a prompt's."""
    return x.numel() <= most * x.shape[-1]


def fused_gemv(x: torch.Tensor) -> bool:
    """Whether to write the product as a sum over the input dimension (a compiled decode step).
    inductor then fuses it into one dot-product loop per output that reads each weight once from
    memory (for quantized weights, with the int -> float conversion inside); eager PyTorch cannot
    fuse: there `F.linear` wins."""
    return torch.compiler.is_compiling() and few_rows(x)


def few_rows_on_cpu(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """A decode step's product on the CPU by a row-major weight: what both forms below need."""
    return few_rows(x) and x.device.type == "cpu" and weight.is_contiguous()


def gemv_as_sum(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x (..., in) @ weight (out, in).T written as a sum over the inputs, for inductor to fuse."""
    return (x.unsqueeze(-2) * weight).sum(-1)


def splits(weight: torch.Tensor) -> bool:
    """Whether eager few-row products by this weight split over the threads (float32 only: in bf16
    PyTorch's CPU `bmm` was 0.5x `F.linear`); `model.inference_layout` keeps such weights row-major."""
    return weight.dtype == torch.float32


def split_gemv(x: torch.Tensor, weight: torch.Tensor, most_rows: int = FUSED_ROWS) -> torch.Tensor | None:
    """Eagerly with T >= 2 threads and no gradient (decoding), x (at most `most_rows` rows, in) @
    weight (out, in).T on the CPU as one batched product over T blocks of the row-major weight's
    rows, one block per thread (MKL's GEMV takes one thread); None where it does not apply (see the
    module doc). Training keeps `F.linear`, so its numbers do not depend on the threads."""
    if x.numel() > most_rows * x.shape[-1] or not few_rows_on_cpu(x, weight):   # first: batches, prompts leave
        return None
    threads = torch.get_num_threads()
    out, k = weight.shape
    if threads < 2 or out % threads or torch.is_grad_enabled() or not splits(weight):
        return None
    x2 = x.reshape(-1, k)
    y = torch.bmm(weight.view(threads, out // threads, k), x2.t().expand(threads, k, x2.shape[0]))  # (T, out/T, rows)
    return y.permute(2, 0, 1).reshape(*x.shape[:-1], out)


PACK_ROWS = 16      # the rows oneDNN is told to expect when it packs a weight (decode steps, small batches)
_packed: "weakref.WeakKeyDictionary[nn.Module, tuple]" = weakref.WeakKeyDictionary()   # not in the state dict


def packable(weight: torch.Tensor) -> bool:
    """Whether eager products by this weight may run on a packed copy (float32 or bf16 on a CPU, and
    a PyTorch with oneDNN); `model.inference_layout` marks such Linears (`packs`)."""
    return weight.dtype in (torch.float32, torch.bfloat16) and weight.device.type == "cpu" \
        and torch.backends.mkldnn.is_available()


def packed_product(module: "Linear", x: torch.Tensor) -> torch.Tensor | None:
    """x @ W.T + b by oneDNN on a copy of a marked Linear's weight packed once into oneDNN's
    blocked layout and kept beside it (repacked when the weight changes: another tensor, or an
    in-place update), eagerly without gradient on the CPU; None where it does not apply, and for
    one float32 row (the GEMV, split or MKL's, is as fast there)."""
    w = module.weight
    if x.dtype != w.dtype or x.device.type != "cpu" or torch.is_grad_enabled() \
            or (x.dtype == torch.float32 and x.numel() == x.shape[-1]):
        return None
    key = (w.data_ptr(), w._version, w.shape)
    entry = _packed.get(module)
    if entry is None or entry[0] != key:
        try:
            entry = (key, torch.ops.mkldnn._reorder_linear_weight(w.detach(), PACK_ROWS))
        except RuntimeError:            # oneDNN refused this weight: F.linear from now on
            module.packs = False
            return None
        _packed[module] = entry
    return torch.ops.mkldnn._linear_pointwise(x, entry[1], module.bias, "none", [], "")


class Linear(nn.Linear):
    """`nn.Linear` (same arguments, parameters and state dict); for a few rows on a CPU and a
    row-major weight, the product is a sum over the inputs in a compiled step; eagerly, a loaded
    model's product runs on a packed copy of the weight, or a batched product over blocks of rows
    (see above)."""

    packs = False       # set by `model.inference_layout`: eager products by a packed weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.compiler.is_compiling():
            y = gemv_as_sum(x, self.weight) if few_rows_on_cpu(x, self.weight) else None
        else:
            y = split_gemv(x, self.weight, most_rows=1 if self.packs else FUSED_ROWS)
            if y is None and self.packs and (out := packed_product(self, x)) is not None:
                return out
        if y is None:                                   # training batches, prompts, other devices
            return F.linear(x, self.weight, self.bias)
        return y if self.bias is None else y + self.bias


def row_major_layout(model: nn.Module) -> nn.Module:
    """Give every `Linear` weight row-major storage again (undoing `inference_layout`'s column-major
    CPU layout), for a compiled decode step's sum-form products; values, names and the state dict
    stay the same. Eager products on the model then run on row-major weights: split over the
    threads where there are two or more, else MKL's GEMV ~1.4x slower than on column-major.
    Weights it re-lays go back into one block on 2 MiB pages (`huge_pages`), as `inference_layout`
    left them."""
    changed = False
    for module in model.modules():
        if isinstance(module, Linear) and not module.weight.is_contiguous():
            module.weight.data = module.weight.data.contiguous()
            changed = True
    return weights_on_huge_pages(model) if changed else model      # the new tensors back into one block
