"""Process-wide settings for speed that only the process's owner should make (the CLI does).

glibc's malloc hands large freed blocks back to the kernel (and serves big requests with fresh
`mmap`s), so a training step that allocates and frees the same activations every time pays
millions of page faults per run, each a zero-filled page: 2.2M faults and ~6% of the wall time
in 150 quickstart steps on 2 CPU cores. `keep_freed_memory` makes malloc keep freed memory for
reuse instead — what PyTorch's CUDA caching allocator does on the GPU — so the resident size
stays at its peak rather than shrinking between steps.

OpenMP (PyTorch's, MKL's and oneDNN's CPU threads) keeps a pool of worker threads per thread that
ran parallel work. When a second thread takes over the parallel work (`lmforge serve`'s scheduler,
after the main thread loaded the model), the first one's idle pool still counts, and the second
one's products ran ~1.5x slower on 2 cores (a 16-row decode loop: 1,300 tokens/s on the second
thread against 2,000 on the main one; oneDNN products 187 against 146 us). `release_omp_threads`
frees the calling thread's pool (OpenMP 5's `omp_pause_resource_all`), after which the second
thread runs as fast as the first.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3          # mallopt parameters (malloc.h)
MMAP_THRESHOLD_MAX = 32 << 20                       # glibc's ceiling on 64-bit (HEAP_MAX_SIZE / 2)


def keep_freed_memory() -> bool:
    """Ask glibc malloc to keep freed memory (no trimming; mmap only above 32 MiB). Returns
    whether it applied: False off Linux or without glibc (musl, macOS, Windows), a no-op."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, 2**31 - 1))


OMP_PAUSE_HARD = 2                                   # omp_pause_resource_t: free the threads themselves


def release_omp_threads() -> bool:
    """Free the calling thread's OpenMP worker threads (they come back if it runs parallel work
    again). Returns whether it applied: False where the OpenMP library in use is not found (not
    Linux) or has no `omp_pause_resource_all` (before OpenMP 5), a no-op."""
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "/lib" in line})     # the mapped libraries
    except OSError:
        return False
    library = next((p for p in paths if os.path.basename(p).startswith(("libgomp", "libiomp", "libomp"))), None)
    if library is None:
        return False
    try:
        pause = ctypes.CDLL(library).omp_pause_resource_all
    except (OSError, AttributeError):
        return False
    pause.argtypes, pause.restype = (ctypes.c_int,), ctypes.c_int
    return pause(OMP_PAUSE_HARD) == 0
