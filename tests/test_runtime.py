"""The CLI's malloc setting: glibc keeps freed memory for reuse, so repeated steps stop paying
page faults for fresh zero-filled pages (and the opt-out leaves malloc alone)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from lmforge.runtime import keep_freed_memory

# glibc's own thresholds adapt as a process runs, so whether its defaults fault on a given
# pattern varies from run to run. The script pins them to "return every freed block" first
# (mmap above 128 KiB, trim above 128 KiB: the defaults' starting point, without adaptation), so
# the pattern faults on every cycle unless keep_freed_memory() then takes effect.
CYCLES = """
import ctypes, resource, sys, torch
from lmforge.runtime import M_MMAP_THRESHOLD, M_TRIM_THRESHOLD, keep_freed_memory
libc = ctypes.CDLL("libc.so.6")
assert libc.mallopt(M_MMAP_THRESHOLD, 128 << 10) and libc.mallopt(M_TRIM_THRESHOLD, 128 << 10)
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
def cycle():
    big = torch.ones(30 << 18)                              # 30 MiB
    del big
    blocks = [torch.ones(1 << 20) for _ in range(20)]       # 20 x 4 MiB, freed together
    del blocks
cycle()
cycle()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    cycle()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> tuple[bool, int]:
    done = subprocess.run([sys.executable, "-c", CYCLES, mode], capture_output=True, text=True, check=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    applied, faults = done.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc malloc only")
def test_keep_freed_memory_stops_the_page_faults_of_repeated_allocations():
    applied, kept = page_faults("keep")
    assert applied
    _, returned = page_faults("return")
    assert returned > 100_000 and kept < 1_000, (returned, kept)    # 10 cycles x 110 MiB of fresh pages, or none


def test_keep_freed_memory_is_a_no_op_off_linux(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert keep_freed_memory() is False


def test_cli_applies_it_unless_opted_out(monkeypatch):
    import lmforge.runtime
    from lmforge.cli import main
    calls = []
    monkeypatch.setattr(lmforge.runtime, "keep_freed_memory", lambda: calls.append(1) or True)
    assert main(["presets"]) == 0 and calls == [1]
    monkeypatch.setenv("LMFORGE_KEEP_FREED_MEMORY", "0")
    assert main(["presets"]) == 0 and calls == [1]


POOL = """
import os, threading, torch
from lmforge.runtime import release_omp_threads
torch.set_num_threads(2)
def threads():
    return len(os.listdir("/proc/self/task"))
before = threads()
torch.randn(512, 512) @ torch.randn(512, 512)                   # parallel work: this thread's pool starts
grown = threads()
released = release_omp_threads()
print(before, grown, threads(), released)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="/proc and the OpenMP library's path: Linux")
def test_release_omp_threads_frees_the_calling_threads_pool():
    """After parallel work the thread keeps an OpenMP worker pool (extra threads in the process);
    `release_omp_threads` frees it (what `lmforge serve` does before its scheduler thread takes over
    the products, which ran ~1.5x slower beside the idle pool)."""
    out = subprocess.run([sys.executable, "-c", POOL], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert out.returncode == 0, out.stderr
    before, grown, after, released = out.stdout.split()
    assert int(grown) > int(before) and released == "True" and int(after) < int(grown)
