"""The int4 and int8 products on x86 CPUs with AVX-512 VNNI: small C++ kernels (`vnni.cpp`, beside
this file), built with the machine's C++ compiler on first use (as inductor builds its CPU kernels,
against the same PyTorch headers) and registered from C++ as the PyTorch operators
`lmforge::int4_product` and `lmforge::int8_product`, called eagerly and from compiled decode steps
alike. Both take the float input and quantize each row to int8 inside (so a compiled step has no
kernel of its own for it).

inductor writes `Int4Linear`'s product as a float loop: per weight, unpack the nibble, convert
it to float, multiply-add (about 11 vector instructions per 32 weights on this project's 2-core
EPYC), so int4 decoded no faster than float32 there. llama.cpp's q4 kernels multiply in
integers instead, and so does this one: the input row is quantized to int8 (symmetric, its
largest magnitude at 127, as `Int8Linear` does), and `vpdpbusd` multiplies 64 unsigned nibbles
by 64 signed int8 inputs and adds them in fours into 16 int32 lanes in one instruction. Each lane
is one output; per group of inputs its int32 dot product is scaled by the group's scale, and the
group's offset multiplies the sum of its float inputs. The weight is read where `inference_layout`
puts it (the packed (out, in / 2) bytes stored column-major; scales and offsets too), so there is
no second copy: four rows of 64 packed bytes are interleaved into 4 x 16 lanes of 4 bytes by 8
unpack instructions (the last outputs, past a multiple of 64, by one `vpermb`: AVX-512 VBMI).

Through the 25 int4 matrices of the CPU anchor's 6 x 384 Llama at batch 1, on 2 threads: 143 us
a token against 693 us for inductor's fused float loop (114 us on a lane-major copy of the
weights, which would double their memory; with one `vpermb` per 16 outputs the whole step ran at
703 tokens/s against 1,037 with the unpacks, minutes apart). The operator is registered through
PyTorch's stable C++ ABI (`STABLE_TORCH_LIBRARY`), so a compiled step calls it without Python in
between: the compiled int4 step went from 968-1,129 to 1,110-1,157 tokens/s (processes
alternating, `benchmarks/decode_profile.py --compile --bits 4 --threads 2`) against a Python
implementation calling the kernel through ctypes.

The int8 product reads `Int8Linear`'s weight as it is stored, row-major (out, in) int8: 16 rows
at a time, each read in order, its bytes with the top bit flipped (one xor: `vpdpbusd` wants one
unsigned side; 128 x the input row's sum comes off at the end) against the signed inputs, the 16
accumulators summed into 16 outputs by a tree of adds. Through the anchor's 25 int8 matrices
245-251 us with the quantization, against 231-242 for oneDNN's `torch._int_mm` alone; the
compiled int8 step 1.12x, the eager one 1.32x (one process, alternating). `Int8Linear` uses it up
to 4 rows (at 8, oneDNN's is faster).

Where the kernels cannot be built or run (no C++ compiler, another architecture, a CPU without
AVX-512 VNNI and VBMI) or give a wrong answer on their self-tests, `kernels_work()` is False,
`Int4Linear` keeps its float products and `Int8Linear` oneDNN's. Built kernels are kept in
LMFORGE_KERNEL_CACHE (default ~/.cache/lmforge/kernels), one per source, compiler, PyTorch and CPU.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("vnni.cpp")     # the kernels and their operators, C++
FLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c++17")
_FAKE_REGISTERED = False
_REGISTERING = threading.Lock()


def cache_dir() -> Path:
    return Path(os.environ.get("LMFORGE_KERNEL_CACHE") or Path.home() / ".cache" / "lmforge" / "kernels")


def _cpu_flags() -> str:
    try:
        return next((line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags")), "")
    except OSError:
        return ""


def _torch_flags() -> tuple[str, ...]:
    """Compile against the running PyTorch's headers and link its libraries (the operator's
    registration), as inductor's CPU kernels do."""
    root = Path(torch.__file__).parent
    return (f"-I{root / 'include'}", f"-L{root / 'lib'}", "-ltorch_cpu", "-lc10", f"-Wl,-rpath,{root / 'lib'}")


def build() -> Path | None:
    """The kernels' shared library (`vnni.cpp`), compiled once per source, compiler, PyTorch and CPU
    (None: no compiler, not x86-64, no source, or the build failed). Written whole or not at all,
    so processes may race."""
    compiler = shutil.which(os.environ.get("CXX", "c++")) or shutil.which("g++")
    if compiler is None or platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    flags = (*FLAGS, *_torch_flags())
    try:
        code = SOURCE.read_text()
        key = hashlib.sha256("\0".join((code, *flags, compiler, torch.__version__, _cpu_flags())).encode()).hexdigest()[:16]
        path = cache_dir() / f"vnni_{key}.so"
        if path.exists():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            source, built = Path(tmp) / "vnni.cpp", Path(tmp) / "vnni.so"
            source.write_text(code)
            subprocess.run([compiler, str(source), "-o", str(built), *flags], check=True, capture_output=True,
                           timeout=300)
            os.replace(built, path)
    except (OSError, RuntimeError, subprocess.SubprocessError):     # RuntimeError: no home directory
        return None
    return path


def _register_fake() -> None:
    """The operator's shape function for inductor, once (two threads may both ask
    `kernels_work` first)."""
    global _FAKE_REGISTERED
    with _REGISTERING:
        if not _FAKE_REGISTERED:
            torch.library.register_fake("lmforge::int4_product", lambda x, weight, scales, offsets:
                                        x.new_empty(x.shape[0], weight.shape[0]))
            torch.library.register_fake("lmforge::int8_product", lambda x, weight, scales:
                                        x.new_empty(x.shape[0], weight.shape[0]))
            _FAKE_REGISTERED = True


@functools.cache
def kernels_work() -> bool:
    """Whether `lmforge::int4_product` and `lmforge::int8_product` run here and pass their
    self-tests; asked once per process, when `inference_layout` first lays out a quantized layer
    (a built library loads in ~1 ms; the first build takes ~2 s). Loading it registers the
    operators."""
    path = build()
    if path is None:
        return False
    try:
        library = ctypes.CDLL(str(path))
    except OSError:
        return False
    if not library.lmforge_vnni_ready():
        return False
    _register_fake()
    return _int4_self_test() and _int8_self_test()


def _int4_self_test() -> bool:
    """The kernel against the same arithmetic in int64, on a layer with a partial last tile."""
    generator = torch.Generator().manual_seed(0)
    out_f, in_f, group = 85, 64, 32                      # one tile of 64 outputs, then 16 and 5
    q = torch.randint(0, 16, (out_f, in_f), generator=generator)
    packed = (q[:, 0::2] | (q[:, 1::2] << 4)).to(torch.uint8)
    scales, offsets = torch.rand(out_f, 2, generator=generator), torch.randn(out_f, 2, generator=generator)
    x = torch.randn(3, in_f, generator=generator)
    got = int4_product(x, packed.t().contiguous().t(), scales.t().contiguous().t(),
                       offsets.t().contiguous().t())
    step = x.abs().amax(-1, keepdim=True) / 127
    xq = torch.round(x / step).long()
    dots = (xq.view(3, 1, 2, group) * q.view(1, out_f, 2, group)).sum(-1).float()            # (3, out, G)
    want = step * (dots * scales).sum(-1) + (x.view(3, 1, 2, group).sum(-1) * offsets).sum(-1)
    return torch.allclose(got, want, rtol=1e-5, atol=1e-5)


def _int8_self_test() -> bool:
    """The int8 kernel against the same arithmetic in int64: 37 outputs (tiles of 16, 16 and 5)
    and 100 inputs (a block of 64, then a partial one)."""
    generator = torch.Generator().manual_seed(0)
    q = torch.randint(-127, 128, (37, 100), generator=generator, dtype=torch.int8)
    scales, x = torch.rand(37, generator=generator), torch.randn(3, 100, generator=generator)
    step = x.abs().amax(-1, keepdim=True) / 127
    want = (torch.round(x / step).long() @ q.long().t()).float() * step * scales
    return torch.allclose(int8_product(x, q, scales), want, rtol=1e-5, atol=1e-5)


def int4_product(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
    """x (..., in) @ the int4 weight (`Int4Linear`'s packed bytes, scales and offsets, laid out
    column-major by `inference_layout`) .T: (..., out) float32, each input row quantized to int8
    (inside the operator, so a compiled step has no kernel of its own for it) and multiplied in
    integers."""
    y = torch.ops.lmforge.int4_product(x.reshape(-1, x.shape[-1]).float(), weight, scales, offsets)
    return y.reshape(*x.shape[:-1], weight.shape[0])


def int8_product(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """x (..., in) @ `Int8Linear`'s row-major int8 weight (out, in) .T, times its float32 scales:
    (..., out) float32, each input row quantized to int8 as `quantized.int8_product` does (inside
    the operator, so a compiled step has no kernel of its own for it) and multiplied in integers."""
    y = torch.ops.lmforge.int8_product(x.reshape(-1, x.shape[-1]).float(), weight, scales)
    return y.reshape(*x.shape[:-1], weight.shape[0])
