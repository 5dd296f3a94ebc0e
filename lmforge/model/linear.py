"""`Linear`: `nn.Linear` whose few-row product inside a compiled CPU decode step is a sum over
the inputs, and `fused_gemv`, the test of when to write it so (shared with the quantized layers).

A batch-1 decode step multiplies one vector by every weight matrix. MKL's GEMV does it on one
thread however many there are (10-27 GB/s from DRAM on this project's 2-core EPYC); written as
`(x * W).sum(-1)` on row-major weights, inductor turns it into a vectorised dot-product loop
parallel over the outputs, fused with the ops around it (19-42 GB/s on 2 threads). On the CPU
anchor's Llama 6 x 384 (`benchmarks/decode_profile.py`'s model) the compiled decode step went from
229 to 588 tokens/s on 2 threads in a side-by-side run (450-560 in later runs of the day; 198 to
259 on 1 thread), with the same greedy tokens. Eager decoding keeps
`F.linear` on column-major weights (`model.inference_layout`), which suit MKL; the compiled step
lays the weights out row-major first (`row_major_layout`).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

FUSED_ROWS = 8     # most input rows (batch x tokens) for which a compiled step writes the product as a sum


def fused_gemv(x: torch.Tensor) -> bool:
    """Whether to write the product as a sum over the input dimension (a compiled decode step).
    inductor then fuses it into one dot-product loop per output that reads each weight once from
    memory (for quantized weights, with the int -> float conversion inside); eager PyTorch cannot
    fuse: there `F.linear` wins."""
    return torch.compiler.is_compiling() and x.numel() <= FUSED_ROWS * x.shape[-1]


def gemv_as_sum(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """x (..., in) @ weight (out, in).T written as a sum over the inputs, for inductor to fuse."""
    return (x.unsqueeze(-2) * weight).sum(-1)


class Linear(nn.Linear):
    """`nn.Linear` (same arguments, parameters and state dict); in a compiled CPU step with a few
    rows and a row-major weight, the product is written as a sum over the inputs (see above)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fused_gemv(x) and x.device.type == "cpu" and self.weight.is_contiguous():   # eager: one cheap test
            y = gemv_as_sum(x, self.weight)
            return y if self.bias is None else y + self.bias
        return F.linear(x, self.weight, self.bias)


def row_major_layout(model: nn.Module) -> nn.Module:
    """Give every `Linear` weight row-major storage again (undoing `inference_layout`'s column-major
    CPU layout), for a compiled decode step's sum-form products; values, names and the state dict
    stay the same. Eager products on the model then run on row-major weights (correct; their
    batch-1 GEMVs ~1.4x slower than column-major on the CPU anchor's shapes)."""
    for module in model.modules():
        if isinstance(module, Linear) and not module.weight.is_contiguous():
            module.weight.data = module.weight.data.contiguous()
    return model
