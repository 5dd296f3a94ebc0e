"""The scheduler's decode step for a decoder: eager on views of the rows and slots in use, or,
on a CPU, the compiled step by the rule `lmforge generate`'s default follows
(`lmforge.generate.auto_compile`: once the model has spent 5 s decoding eagerly at a shape).

A compiled step needs static shapes, so it runs on a bucket of rows — the running rows padded to
one of `BUCKETS` (vLLM pads its batch to its captured CUDA-graph sizes alike) — over the slots up
to the furthest row's (`slots_in_use`, a dynamic size of the graph): the rows' own positions
(`input_pos`) hide what lies past each row's end, as they do eagerly, and the padding rows are
free ones, whose writes at slot 0 a newcomer's prefill overwrites. Each bucket keeps one set of
cache views, so one graph serves it. A float model compiles one row only (`compiled_buckets`): since its eager products of two rows or more run on
packed weights (`model.linear.packed_product`), buckets of 1, 2, 4 and 8 served 422 / 687 / 1,577
tokens/s at 1 / 4 / 16 clients (`benchmarks/serve_throughput.py`) and the eager step alone 173 /
752 / 1,869; the bucket of 1 alone 408 / 729 / 1,694 (and one compile's pause, not four). An int8 or
int4 model keeps every bucket: its eager products on inputs quantized per row (`torch._int_mm`,
int4's `lmforge::int4_product`) still lose to the compiled ones (in-process, 2 / 4 / 8 clients,
int8: 451 / 763 / 1,373 tokens/s eager against 1,066 / 1,519 / 1,975 compiled; int4: 480 / 846 /
1,236 against 1,244 / 1,853 / 2,233). A bucket measured
slower than eager, or a step that cannot be compiled here, goes back to eager. The eager step of
one row splits its products over the threads as `lmforge generate`'s does (`linear.split_gemv`;
it kept MKL's one-thread GEMV while the loading thread's idle OpenMP pool slowed the scheduler's
threads: with that pool freed, `--no-compile` at one client went from 174 to 283 tokens/s).
"""

from __future__ import annotations

import logging
import time

import torch
import torch.nn as nn

from ..generate.auto_compile import compile_failed, default_compiles, record_compiled, record_eager, step_times
from ..generate.unguarded import compile_unguarded, dynamic_keys
from ..model import inference_layout
from ..model.linear import row_major_layout
from ..model.quantized import Int4Linear, Int8Linear
from .rows import RowCache, _RowsView

log = logging.getLogger("lmforge.serve")

BUCKETS = (1, 2, 4, 8)      # the row counts that may run compiled: a quantized model's (see above)


def _head_of_step(module, tokens: torch.Tensor, pos: torch.Tensor, written: torch.Tensor) -> torch.Tensor:
    """One decode step of every row of the bucket: tokens (b, 1) at slots pos (b, 1) -> logits (b, V),
    attending to the first `written.shape[1]` slots (those in use), each row up to its own."""
    return module.lm_head(module.transformer(tokens, input_pos=pos, pos_ids=pos, key_valid=written)[:, -1])


def slots_in_use(pos: torch.Tensor, most: int) -> torch.Tensor:
    """`key_valid` (b, S) for the slots 0..S-1 up to the furthest row's: a compiled step attends to
    those only (not to every slot of the context), S a dynamic size of its graph (at least 2; the
    row cache holds one slot more than `most`, so S never spans it)."""
    return dynamic_keys(torch.ones(pos.shape[0], max(int(pos.max()) + 1, 2), dtype=torch.bool, device=pos.device),
                        most)


def compiled_buckets(module) -> tuple[int, ...]:
    """One row where every product of two rows or more runs eagerly on a packed weight (float
    weights, `inference_layout` applied); all of BUCKETS where some cannot (int8 / int4 layers,
    whose eager products of a few rows lose to the compiled ones: see the module doc)."""
    layers = [m for m in module.modules() if isinstance(m, (nn.Linear, Int8Linear, Int4Linear))]
    return (1,) if all(getattr(m, "packs", False) for m in layers) else BUCKETS


class DecodeStep:
    """Runs the scheduler's decode steps of a decoder and keeps the default's timings per bucket."""

    def __init__(self, module, rows: RowCache, compile: bool | None = None):
        self.module, self.rows, self.compile = module, rows, compile      # None: the default's rule
        self.views: dict[int, list[_RowsView]] = {}
        self.fns: dict[int, object] = {}     # bucket -> its compiled step (`generate.unguarded`)
        self.last_compiled = False          # which step ran last (the server's /metrics count them)
        self.decoder = module.config.family == "decoder"          # an encoder-decoder always steps eagerly
        inference_layout(module, next(module.parameters()).device)
        self.buckets = compiled_buckets(module)

    def bucket(self, n: int, device: torch.device) -> tuple[int | None, bool]:
        """(the bucket of n rows: None beyond the largest bucket or max_batch; whether this step runs
        compiled: never for an encoder-decoder)."""
        b = next((b for b in self.buckets if b >= n and b <= self.rows.max_batch), None)
        if b is None or not self.decoder or self.compile is False:
            return b, False
        if self.compile:
            return b, device.type == "cpu" and not getattr(self.module, "_eager_only", False)
        return b, default_compiles(self.module, (b, "serve"), device)

    def __call__(self, tokens: torch.Tensor, pos: torch.Tensor, eager) -> torch.Tensor:
        """Logits (n, V padded) of the running rows' tokens (n, 1) at positions (n, 1); `eager()`
        runs the eager step (on views of the rows and slots in use)."""
        n = tokens.shape[0]
        b, compiled = self.bucket(n, tokens.device)
        t0 = time.perf_counter()
        self.last_compiled = False
        if not compiled:
            logits = eager()
            if b is not None and self.decoder:
                spent = time.perf_counter() - t0
                record_eager(self.module, (b, "serve"), spent, spent, 1)
            return logits
        first = not step_times(self.module, (b, "serve")).compiled
        logits = self._compiled(tokens, pos, b)
        if logits is None:
            return eager()
        self.last_compiled = True
        record_compiled(self.module, (b, "serve"), 0.0 if first else time.perf_counter() - t0, 0 if first else 1)
        return logits[:n]

    def _compiled(self, tokens: torch.Tensor, pos: torch.Tensor, b: int) -> torch.Tensor | None:
        n = tokens.shape[0]
        if n < b:                                   # padding rows: free rows, token 0 at slot 0
            tokens = torch.cat([tokens, tokens.new_zeros(b - n, 1)])
            pos = torch.cat([pos, pos.new_zeros(b - n, 1)])
        if b not in self.fns:                       # one copy per bucket, without guards: the server's
            row_major_layout(self.module)           # model does not change under it
            self.fns[b] = compile_unguarded(_head_of_step, f"serve_step_{b}")
        self._use_bucket(b)
        try:
            return self.fns[b](self.module, tokens, pos, slots_in_use(pos, self.module.config.context_length))
        except Exception as e:      # noqa: BLE001 — compiling is an optimisation; the eager step serves
            log.warning("%s", compile_failed(self.module, e))
            return None

    def _use_bucket(self, b: int) -> None:
        """Rows 0..b-1 over every slot: the same view objects at every step of the bucket."""
        if b not in self.views:
            self.views[b] = [_RowsView(k[:b], v[:b]) for k, v in self.rows.caches]
        for block, view in zip(self.rows.stack.blocks, self.views[b]):
            block.attn.kv_cache = view
