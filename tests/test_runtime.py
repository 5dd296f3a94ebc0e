"""The CLI's malloc setting: glibc keeps freed memory for reuse, so repeated steps stop paying
page faults for fresh zero-filled pages (and the opt-out leaves malloc alone)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lmforge.runtime import keep_freed_memory

STEPS = """
import resource, sys, torch
import torch.nn.functional as F
from lmforge.config import get_preset
from lmforge.model import build_model
from lmforge.runtime import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else False
torch.manual_seed(0)
model = build_model(get_preset("gpt-tiny", vocab_size=1024, context_length=64))
opt = torch.optim.AdamW(model.parameters())
x = torch.randint(0, 1024, (16, 64))
def step():
    F.cross_entropy(model(x).flatten(0, 1), x.flatten()).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
for _ in range(3):                                   # warm up: the first steps fault in any case
    step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    step()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def page_faults(mode: str) -> tuple[bool, int]:
    done = subprocess.run([sys.executable, "-c", STEPS, mode], capture_output=True, text=True, check=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    applied, faults = done.stdout.split()
    return applied == "True", int(faults)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc only")
def test_keep_freed_memory_cuts_page_faults_of_repeated_steps():
    applied, kept = page_faults("keep")
    if not applied:
        pytest.skip("this Linux has no glibc malloc (musl?)")
    _, default = page_faults("default")
    assert kept * 2 < default, (kept, default)


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
