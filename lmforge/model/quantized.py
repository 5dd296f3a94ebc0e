"""Quantized Linear layers (gpt-fast style: the weights are stored quantized).

Int8Linear  per output channel, symmetric:  w ≈ q · scale,           q in [-127, 127] (int8)
Int4Linear  per group of `group_size` input columns, asymmetric:
            w ≈ q · scale + offset,  q in [0, 15], two per byte (low nibble = even column)

Both keep the names of the Linear they replace (`weight`, `bias`) plus `scales` (and
`offsets`), so a quantized model directory is an ordinary state dict; the error of every weight
is at most half its scale. Int4Linear dequantizes on the fly, except on a CPU with AVX-512 VNNI
once `inference_layout` has laid it out: there, without gradient, it quantizes its input per row
and multiplies in integers too (`vnni.int4_product`, a C kernel). Int8Linear dequantizes where a
gradient is wanted or off the CPU; on a CPU without gradient it also quantizes its input, per
row (per token), symmetric, and multiplies in integers (`int8_product`: `torch._int_mm`, oneDNN's
VNNI kernel; up to `KERNEL_ROWS` rows, once `inference_layout` has found it working,
`vnni.int8_product`, lmforge's own), as llama.cpp's q8_0 (blocks of 32) and torchao's dynamic int8
activations do.

    >>> w = torch.tensor([[0.5, -1.0, 0.25, 1.0]])
    >>> q, scales = quantize_int8(w)
    >>> q.tolist(), round(scales.item(), 6)
    ([[64, -127, 32, 127]], 0.007874)
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import vnni
from .linear import few_rows, fused_gemv, gemv_as_sum
from .weights import replace_module


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w (out, in) -> (q int8 (out, in), scales (out,) float32)."""
    scales = w.float().abs().amax(dim=1).clamp(min=1e-12) / 127
    q = torch.round(w.float() / scales[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scales


def quantize_int4(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """w (out, in) -> (packed uint8 (out, in/2), scales (out, in/G), offsets (out, in/G)) float32."""
    out_f, in_f = w.shape
    groups = w.float().view(out_f, in_f // group_size, group_size)      # (out, n_groups, G)
    lo, hi = groups.amin(dim=-1), groups.amax(dim=-1)
    scales = ((hi - lo) / 15).clamp(min=1e-12)
    q = torch.round((groups - lo[..., None]) / scales[..., None]).clamp(0, 15).to(torch.uint8).view(out_f, in_f)
    return q[:, 0::2] | (q[:, 1::2] << 4), scales, lo


def dequantize_int4(packed: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """Inverse of `quantize_int4` up to rounding: (out, in) in the dtype of `scales`."""
    out_f, n_groups = scales.shape
    q = torch.stack((packed & 15, packed >> 4), dim=-1).view(out_f, n_groups, -1)   # (out, n_groups, G)
    return (q.to(scales.dtype) * scales[..., None] + offsets[..., None]).view(out_f, -1)


@functools.cache
def integer_products_work() -> bool:
    """Whether this PyTorch build multiplies int8 by int8 on the CPU (`torch._int_mm`), asked once
    per process when the first Int8Linear is built (~6 ms: not at import); else Int8Linear
    dequantizes on the CPU too."""
    try:
        ones = torch.ones(1, 8, dtype=torch.int8)
        return int(torch._int_mm(ones, ones.t()).item()) == 8
    except (RuntimeError, NotImplementedError):
        return False


def integer_inputs(x: torch.Tensor) -> bool:
    """A product on the CPU without gradient: where the quantized layers quantize their input and
    multiply in integers (with a gradient, LoRA on a quantized base, they dequantize instead)."""
    return x.device.type == "cpu" and not (torch.is_grad_enabled() and x.requires_grad)


def int8_product(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """x (..., in) float @ q (out, in) int8 .T, with x quantized per row to int8 (symmetric, its
    largest magnitude at 127) and the product taken in int32: (..., out) in x's dtype, before the
    weight's scales. The rounding of x adds at most half a step of each row's scale."""
    rows = x.reshape(-1, x.shape[-1]).float()
    step = rows.abs().amax(-1, keepdim=True).clamp(min=1e-12) / 127
    xq = torch.round(rows / step).clamp(-127, 127).to(torch.int8)
    y = torch._int_mm(xq, q.t()) * step                       # q.t(): column-major, oneDNN's fast layout
    return y.to(x.dtype).reshape(*x.shape[:-1], q.shape[0])


KERNEL_ROWS = 4   # most input rows that Int8Linear multiplies by `lmforge::int8_product` (more: oneDNN's)


class Int8Linear(nn.Module):
    integer_products = False      # set per instance from `integer_products_work()` (a module from before: floats)
    kernel = False                # set by `inference_layout` where `lmforge::int8_product` runs (vnni.py)

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None,
                 dtype: torch.dtype = torch.float32):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("weight", torch.zeros(out_features, in_features, dtype=torch.int8, device=device))
        self.register_buffer("scales", torch.ones(out_features, dtype=dtype, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device)) if bias else None
        self.integer_products = integer_products_work()        # a plain attribute: read in compiled steps

    @classmethod
    def from_linear(cls, linear: nn.Linear, **_) -> "Int8Linear":
        m = cls(linear.in_features, linear.out_features, linear.bias is not None, device="meta",
                dtype=linear.weight.dtype)
        q, scales = quantize_int8(linear.weight.detach())
        m.weight, m.scales = q, scales.to(linear.weight.dtype)
        m.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone())
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel and few_rows(x, KERNEL_ROWS) and integer_inputs(x) and self.kernel_layout():
            y = vnni.int8_product(x, self.weight, self.scales).to(x.dtype)
        elif self.integer_products and integer_inputs(x):
            y = int8_product(x, self.weight) * self.scales.to(x.dtype)
        elif fused_gemv(x):
            y = gemv_as_sum(x, self.weight.to(x.dtype)) * self.scales.to(x.dtype)
        else:
            y = F.linear(x, self.weight.to(x.dtype)) * self.scales.to(x.dtype)  # per-output-channel scale
        return y + self.bias.to(x.dtype) if self.bias is not None else y

    def kernel_layout(self) -> bool:
        """Whether the weight and scales are where `lmforge::int8_product` reads them: on the CPU,
        row-major, float32 scales."""
        return (self.weight.device.type == "cpu" and self.scales.dtype == torch.float32
                and self.weight.is_contiguous() and self.scales.is_contiguous())

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per channel"


class Int4Linear(nn.Module):
    integer_products = False      # set by `inference_layout` where `lmforge::int4_product` runs (vnni.py)

    def __init__(self, in_features: int, out_features: int, bias: bool = True, device=None,
                 dtype: torch.dtype = torch.float32, group_size: int = 64):
        super().__init__()
        assert in_features % group_size == 0 and group_size % 2 == 0, "checked by check_group_size"
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        n_groups = in_features // group_size
        self.register_buffer("weight", torch.zeros(out_features, in_features // 2, dtype=torch.uint8, device=device))
        self.register_buffer("scales", torch.ones(out_features, n_groups, dtype=dtype, device=device))
        self.register_buffer("offsets", torch.zeros(out_features, n_groups, dtype=dtype, device=device))
        self.bias = nn.Parameter(torch.zeros(out_features, dtype=dtype, device=device)) if bias else None

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int = 64) -> "Int4Linear":
        m = cls(linear.in_features, linear.out_features, linear.bias is not None, device="meta",
                dtype=linear.weight.dtype, group_size=group_size)
        packed, scales, offsets = quantize_int4(linear.weight.detach(), group_size)
        m.weight, m.scales, m.offsets = packed, scales.to(linear.weight.dtype), offsets.to(linear.weight.dtype)
        m.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone())
        return m

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.integer_products and integer_inputs(x) and self.kernel_layout():
            y = vnni.int4_product(x, self.weight, self.scales, self.offsets).to(x.dtype)
        elif fused_gemv(x):
            y = self._fused_gemv(x)
        else:
            y = F.linear(x, dequantize_int4(self.weight, self.scales, self.offsets).to(x.dtype))   # (out, in)
        return y + self.bias.to(x.dtype) if self.bias is not None else y

    def kernel_layout(self) -> bool:
        """Whether the weight, scales and offsets are where `int4_product` reads them: stored
        column-major (`inference_layout`), float32 scales, groups and inputs in eights."""
        return (self.weight.device.type == "cpu" and self.scales.dtype == self.offsets.dtype == torch.float32
                and all(t.t().is_contiguous() for t in (self.weight, self.scales, self.offsets))
                and self.in_features % 8 == 0 and self.group_size % 8 == 0)

    def _fused_gemv(self, x: torch.Tensor) -> torch.Tensor:
        """x (..., in) -> (..., out) without a float weight matrix: per group, the low nibbles
        meet the even input columns and the high ones the odd columns; the offset multiplies
        the group's input sum."""
        n_groups = self.scales.shape[1]
        xg = x.reshape(*x.shape[:-1], 1, n_groups, self.group_size // 2, 2)         # (..., 1, n_groups, G/2, 2)
        packed = self.weight.view(self.out_features, n_groups, self.group_size // 2)  # (out, n_groups, G/2)
        lo, hi = (packed & 15).to(x.dtype), (packed >> 4).to(x.dtype)
        dots = (xg[..., 0] * lo + xg[..., 1] * hi).sum(-1)                          # (..., out, n_groups)
        sums = xg.sum((-2, -1))                                                     # (..., 1, n_groups)
        return (dots * self.scales.to(x.dtype) + sums * self.offsets.to(x.dtype)).sum(-1)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"int4 groups of {self.group_size}")


QUANTIZED = {8: Int8Linear, 4: Int4Linear}


def swap_in_quantized(model: nn.Module, record: dict) -> None:
    """Give a freshly built model the (empty) quantized layers listed in a config's record."""
    cls = QUANTIZED[record["bits"]]
    extra = {"group_size": record["group_size"]} if record["bits"] == 4 else {}
    for name in record["modules"]:
        linear = model.get_submodule(name)
        replace_module(model, name, cls(linear.in_features, linear.out_features, linear.bias is not None,
                                        device=linear.weight.device, dtype=linear.weight.dtype, **extra))
