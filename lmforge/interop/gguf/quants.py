"""GGUF tensor types: dequantizing what public checkpoints use, and the export types.

Block layouts (ggml's `ggml-common.h`; a row is a whole number of blocks, little-endian):

    Q8_0  32 values in 34 bytes: f16 scale d, 32 x int8 q            x = d * q
    Q4_0  32 values in 18 bytes: f16 scale d, 16 bytes of nibbles    x = d * (q - 8); byte j holds
          value j (low nibble) and value j + 16 (high nibble)
    Q4_K  256 values in 144 bytes: f16 d, f16 dmin, 12 bytes packing eight 6-bit (scale, min)
          pairs, 128 bytes of nibbles. Sub-block s (32 values) is d * scale_s * q - dmin * min_s;
          bytes 32c..32c+31 hold sub-block 2c in their low nibbles, 2c + 1 in their high ones.

    >>> import numpy as np
    >>> block = np.array([0, 60] + [1, 255] * 16, np.uint8)      # d = 1.0 (f16 0x3C00), q = 1, -1, ...
    >>> dequantize(block, "Q8_0", (32,))[:4].tolist()
    [1.0, -1.0, 1.0, -1.0]
"""

from __future__ import annotations

import numpy as np
import torch

# type name -> (values per block, bytes per block)
BLOCKS = {"F32": (1, 4), "F16": (1, 2), "BF16": (1, 2), "Q8_0": (32, 34), "Q4_0": (32, 18), "Q4_K": (256, 144)}
SUPPORTED = tuple(BLOCKS)
OUTTYPES = ("auto", "f32", "f16", "bf16", "q8_0")


def _f16(raw: torch.Tensor) -> torch.Tensor:
    """(n, 2) uint8 -> (n, 1) float32: little-endian half floats."""
    return raw.contiguous().view(torch.float16).float()


def _q8_0(blocks: torch.Tensor) -> torch.Tensor:
    d = _f16(blocks[:, :2])
    return d * blocks[:, 2:].contiguous().view(torch.int8).float()


def _q4_0(blocks: torch.Tensor) -> torch.Tensor:
    d, qs = _f16(blocks[:, :2]), blocks[:, 2:].int()
    q = torch.cat([qs & 0xF, qs >> 4], dim=1) - 8                # values 0..15 then 16..31
    return d * q.float()


def _q4_k(blocks: torch.Tensor) -> torch.Tensor:
    d, dmin = _f16(blocks[:, 0:2]), _f16(blocks[:, 2:4])
    s = blocks[:, 4:16].int()
    s0, s1, s2 = s[:, 0:4], s[:, 4:8], s[:, 8:12]
    # sub-blocks 0-3: 6 low bits of s0 (scale) and s1 (min); 4-7: s2's nibbles + the top 2 bits of s0 / s1
    scale = torch.cat([s0 & 63, (s2 & 0xF) | ((s0 >> 6) << 4)], dim=1).float()          # (n, 8)
    low = torch.cat([s1 & 63, (s2 >> 4) | ((s1 >> 6) << 4)], dim=1).float()             # (n, 8) the mins
    qs = blocks[:, 16:].int().reshape(-1, 4, 32)                                          # (n, 4 chunks, 32)
    q = torch.stack([qs & 0xF, qs >> 4], dim=2).reshape(-1, 8, 32).float()               # (n, 8 sub-blocks, 32)
    x = (d * scale).unsqueeze(-1) * q - (dmin * low).unsqueeze(-1)
    return x.reshape(-1, 256)


DEQUANTIZE = {"Q8_0": _q8_0, "Q4_0": _q4_0, "Q4_K": _q4_k}


def dequantize(raw: np.ndarray, type_name: str, shape: tuple[int, ...]) -> torch.Tensor:
    """A float32 tensor of `shape` (numpy order: (rows, columns)) from a tensor's raw bytes
    (any numpy view of them, e.g. a slice of the memory-mapped file)."""
    assert type_name in BLOCKS, type_name
    data = torch.from_numpy(np.array(raw, copy=True).view(np.uint8).reshape(-1))    # off the read-only map
    if type_name == "F32":
        return data.view(torch.float32).reshape(shape)
    if type_name == "F16":
        return data.view(torch.float16).float().reshape(shape)
    if type_name == "BF16":
        return data.view(torch.bfloat16).float().reshape(shape)
    per_block, nbytes = BLOCKS[type_name]
    return DEQUANTIZE[type_name](data.reshape(-1, nbytes)).reshape(shape)


def export_type(outtype: str, name: str, shape: tuple[int, ...]) -> str:
    """The GGUF type a tensor is written in: norms, biases (1-D) stay F32 as llama.cpp wants them;
    matrices take `outtype`, falling back to F16 for q8_0 when a row is not a whole number of
    blocks (as llama.cpp's converter does)."""
    if len(shape) < 2 or outtype == "f32":
        return "F32"
    if outtype == "q8_0" and shape[-1] % BLOCKS["Q8_0"][0]:
        return "F16"
    return outtype.upper()
