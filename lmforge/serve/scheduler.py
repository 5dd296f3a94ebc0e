"""Continuous batching: one thread owns the model and decodes every running sequence together.

The KV cache is one preallocated buffer per layer of `max_batch` rows x the context. Each
running sequence owns a row and keeps its own length; a row's cache slot of a token equals
its position, so a row needs no padding mask — causality per row (`input_pos` of shape
(B, 1), see `KVCache.update` and `attention_mask`) already hides everything past its end,
including what an earlier occupant of the row left there. Running rows are kept packed at
the top of the buffer (rows 0..n-1): an eager step runs on a view of n rows and of the slots in
use, the compiled CPU step on a bucket of rows (`decode_step.py`).

One scheduler step:
1. drop cancelled sequences (a client that disconnected) and admit waiting ones into free rows;
2. prefill the newcomers together (right-padded, one forward) and sample their first token;
3. one decode step for all running rows (the newcomers included), sample, emit text;
4. finished sequences leave; the last row moves into the hole (one row copy per layer).

So a request joins at the next token boundary and leaves when done: short requests never wait for
long ones. Sampling is per sequence (its own decoding options: temperature, filters, seed). A
sequence hears of its progress through `events.py`'s Token, Finish and Failed: a sequence whose own
choosing raises fails alone (its neighbours in the batch go on), a step that raised fails every
sequence it held, so no client waits forever. `end_all` ends every sequence at the next token
boundary (a server that is shutting down). Other model work (inspections, attention maps) is a job
run between two steps (`jobs.py`).

An encoder-decoder (seq2seq) is batched the same way: a newcomer's prompt is its *source*,
encoded once and projected into every cross attention's keys and values, which go into the
row's slots of a second per-layer buffer (with a per-row source mask); its decoder starts
from <bos> at slot 0 in the next decode step, beside everyone else.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..generate import GenerationConfig
from ..generate.json_mode import JsonState
from ..runtime import release_omp_threads
from .decode_step import DecodeStep
from .events import Event, Failed, Finish, Token
from .jobs import Jobs
from .picker import TokenPicker
from .rows import RowCache

log = logging.getLogger("lmforge.serve")


def _attention_kernels(device: torch.device):
    """On CUDA, attention without the cuDNN kernel: it builds a plan for every new shape (about 50 ms
    each in bf16 on an H200), and a running batch changes shape at every step (its rows and its
    longest length): decoding crawled at 18 tokens/s. The memory-efficient kernel takes any shape."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


class QueueFull(Exception):
    """More requests are waiting than the queue holds."""


@dataclass
class Sequence:
    """One generated continuation (a request with n=2 owns two). `emit(event)` receives its
    `events.Token`, `Finish` and `Failed` events, on the scheduler thread."""
    prompt_ids: list[int]
    options: GenerationConfig
    emit: Callable[[Event], None]
    index: int = 0                               # choice index within its request
    json_state: JsonState | None = None          # JSON mode: this sequence's grammar state
    score_prompt: int | None = None              # echo + logprobs, prompt_logprobs: alternatives per prompt token
    out_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    cancelled: bool = False
    prompt_logprobs: list | None = None          # score_prompt: per prompt token (first None)
    submitted: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    # scheduler-private state
    picker: TokenPicker | None = None
    length: int = 0                              # tokens in the cache
    pending: int | None = None                   # sampled, not yet in the cache
    source_length: int = 0                       # seq2seq: source tokens in the cross-attention buffer


class Scheduler:
    """Owns `module` (a decoder or an encoder-decoder) and serves `submit`ted sequences with
    continuous batching; `tokenizer` is the one of the generated text (an encoder-decoder's
    target side). Every other use of the module is a job run `between_steps`."""

    def __init__(self, module, tokenizer, max_batch: int = 16, max_queue: int = 64, metrics=None,
                 compile: bool | None = None):
        self.module, self.tokenizer = module, tokenizer
        self.config = module.config
        self.seq2seq = self.config.family == "seq2seq"
        self.stack = module.decoder if self.seq2seq else module.transformer     # the blocks that decode
        self.vocab_size = self.config.tgt_vocab_size if self.seq2seq else self.config.vocab_size
        self.max_batch, self.max_queue, self.metrics = max_batch, max_queue, metrics
        self._cond = threading.Condition()
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._jobs = Jobs()
        self._running: list[Sequence] = []          # row i holds _running[i]
        self._stop = self._end_all = False
        self.rows = RowCache(module, self.stack, max_batch, self.seq2seq)      # allocated at the first step
        self.step = DecodeStep(module, self.rows, compile)                      # eager, or compiled (CPU)
        self._thread = threading.Thread(target=self._loop, name="lmforge-scheduler", daemon=True)

    # ---- the client side (any thread) ----------------------------------------------------
    def start(self) -> "Scheduler":
        release_omp_threads()           # the loading thread's idle OpenMP pool slowed this one's products
        self._thread.start()
        return self

    def shutdown(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=10)
        with self._cond:
            self._jobs.fail_all("the server shut down before the job ran")

    def between_steps(self, fn: Callable) -> Future:
        """Run `fn()` on the scheduler's thread at the next step boundary; its result (or
        exception) arrives on the returned future."""
        with self._cond:
            future = self._jobs.add(fn)
            self._cond.notify()
        return future

    def submit(self, seqs: list[Sequence]) -> None:
        """Queue the sequences of one request (all or none); QueueFull when the queue is full."""
        with self._cond:
            if len(self._waiting) + len(seqs) > self.max_queue:
                raise QueueFull(f"{len(self._waiting)} sequences are already waiting (the queue holds "
                                f"{self.max_queue}); retry later")
            self._waiting.extend(seqs)
            self._cond.notify()
        self._gauges()

    def end_all(self) -> None:
        """Every running and waiting sequence ends at the next token boundary with finish_reason
        "cancelled", its Finish event sent (the readers then close their answers)."""
        with self._cond:
            self._end_all = True
            self._cond.notify()

    def cancel(self, seqs: list[Sequence]) -> None:
        """The client went away: the sequences leave at the next step, freeing their rows."""
        with self._cond:
            for s in seqs:
                s.cancelled = True
            self._cond.notify()

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def running(self) -> int:
        return len(self._running)

    # ---- the scheduler thread ------------------------------------------------------------
    def _loop(self) -> None:
        torch.set_grad_enabled(False)
        while True:
            with self._cond:
                while not (self._stop or self._end_all or self._waiting or self._running or self._jobs):
                    self._cond.wait()
                if self._stop:
                    return
                if self._end_all:
                    self._end_everything()
                    continue
                job = self._jobs.take(batch_running=bool(self._running or self._waiting))
                newcomers = self._admit()
            self._jobs.run(job)              # at most one job between two steps
            if newcomers or self._running:
                self._guarded_step(newcomers)
            self._gauges()

    def _admit(self) -> list[Sequence]:
        """(Under the condition's lock.) Waiting sequences that get a free row."""
        newcomers = []
        while self._waiting and len(self._running) + len(newcomers) < self.max_batch:
            s = self._waiting.popleft()
            if s.cancelled:
                self._count_finished("cancelled")
            else:
                newcomers.append(s)
        return newcomers

    def _guarded_step(self, newcomers: list[Sequence]) -> None:
        try:
            self._step(newcomers)
        except Exception as e:          # a bug must not hang the clients: fail what was running
            log.exception("a decoding step failed; its %d sequences end with an error",
                          len(self._running) + len(newcomers))
            for s in self._running + newcomers:
                self._fail(s, e)
            self._running = []

    def _end_everything(self) -> None:
        """(Under the condition's lock, between steps.)"""
        self._end_all = False
        for s in [*self._running, *self._waiting]:
            if s.finish_reason is None:
                s.finish_reason = "cancelled"
                self._count_finished("cancelled")
                s.emit(Finish(s))
        self._running, self._waiting = [], collections.deque()
        self._gauges()

    def _fail(self, s: Sequence, e: Exception) -> None:
        if s.finish_reason is None:
            s.finish_reason = "error"
            self._count_finished("error")
            s.emit(Failed(s, f"{type(e).__name__}: {e}"))

    def _pack(self, rows: list[Sequence]) -> list[Sequence]:
        """`rows` is the previous row order (None where a sequence left); fill holes from the end."""
        rows = list(rows)
        i = 0
        while i < len(rows):
            if rows[i] is None:
                while rows and rows[-1] is None:
                    rows.pop()
                if i < len(rows):
                    last = rows.pop()
                    self.rows.move(len(rows), i, last.length, last.source_length)
                    rows[i] = last
            i += 1
        return rows

    def _step(self, newcomers: list[Sequence]) -> None:
        self.rows.ensure()
        device = next(self.module.parameters()).device
        with _attention_kernels(device):
            self._step_on(newcomers, device)

    def _step_on(self, newcomers: list[Sequence], device) -> None:
        try:
            self._retire()                              # cancelled ones leave before any work is done
            if newcomers:
                prefill = self._encode_sources if self.seq2seq else self._prefill
                prefill(newcomers, len(self._running), device)
                self._running = self._running + newcomers
                self._retire()
            if self._running:
                self._decode(device)
                self._retire()
        finally:
            self.rows.drop_views()

    def _prefill(self, seqs: list[Sequence], r0: int, device) -> None:
        """Newcomers in rows r0.. : right-padded prompts, slot = position; sample each first token."""
        lengths = [len(s.prompt_ids) for s in seqs]
        T = max(lengths)
        idx = torch.zeros((len(seqs), T), dtype=torch.long)
        for b, s in enumerate(seqs):
            idx[b, :lengths[b]] = torch.tensor(s.prompt_ids, dtype=torch.long)
        idx = idx.to(device)
        slots = torch.arange(T, device=device).expand(len(seqs), T)
        self.rows.use(r0, r0 + len(seqs), T)
        h = self.stack(idx, input_pos=slots, pos_ids=slots)       # (m, T, d)
        last = torch.tensor(lengths, device=device) - 1
        logits = self._logits(h[torch.arange(len(seqs), device=device), last])  # (m, V)
        for b, s in enumerate(seqs):
            s.length = lengths[b]
            with self._alone(s):
                s.picker = TokenPicker(s.options, s.prompt_ids, self.vocab_size, device, s.json_state)
                if s.score_prompt is not None:
                    s.prompt_logprobs = TokenPicker.score_prompt(self._logits(h[b, : lengths[b] - 1]), s.prompt_ids,
                                                                 s.score_prompt)
        if self.metrics is not None:
            self.metrics.prompt_tokens.inc(sum(lengths))
        self._sample(seqs, logits)

    def _encode_sources(self, seqs: list[Sequence], r0: int, device) -> None:
        """Encoder-decoder newcomers in rows r0.. : encode their sources together (right-padded),
        project them into the cross-attention buffers; each decoder starts from <bos> at slot 0."""
        lengths = [len(s.prompt_ids) for s in seqs]
        S, m = max(lengths), len(seqs)
        src = torch.zeros((m, S), dtype=torch.long)
        for b, s in enumerate(seqs):
            src[b, :lengths[b]] = torch.tensor(s.prompt_ids, dtype=torch.long)
        src = src.to(device)
        valid = torch.arange(S, device=device) < torch.tensor(lengths, device=device)[:, None]    # (m, S)
        memory = self.module.encode(src, valid)                                               # (m, S, d)
        for block, (k, v) in zip(self.stack.blocks, self.rows.cross):
            k[r0:r0 + m, :, :S], v[r0:r0 + m, :, :S] = block.cross_attn.project_memory(memory)
        self.rows.source_valid[r0:r0 + m] = False
        self.rows.source_valid[r0:r0 + m, :S] = valid
        bos = self.tokenizer.bos_id
        for b, s in enumerate(seqs):
            s.source_length, s.length, s.pending = lengths[b], 0, bos
            with self._alone(s):
                s.picker = TokenPicker(s.options, [bos], self.vocab_size, device, s.json_state)
        if self.metrics is not None:
            self.metrics.prompt_tokens.inc(sum(lengths))

    def _decode(self, device) -> None:
        seqs = self._running
        tokens = torch.tensor([[s.pending] for s in seqs], dtype=torch.long, device=device)   # (n, 1)
        pos = torch.tensor([[s.length] for s in seqs], dtype=torch.long, device=device)       # (n, 1)
        source = max(s.source_length for s in seqs)
        t0 = time.perf_counter()
        def eager() -> torch.Tensor:                # the step on the rows and slots in use (seq2seq: always)
            self.rows.use(0, len(seqs), max(s.length for s in seqs) + 1, source)
            extra = {"memory_valid": self.rows.source_valid[:len(seqs), :source]} if self.seq2seq else {}
            return self.module.lm_head(self.stack(tokens, input_pos=pos, pos_ids=pos, **extra)[:, -1])
        logits = self.step(tokens, pos, eager)[..., : self.vocab_size].float()
        for s in seqs:
            s.length += 1
        self._sample(seqs, logits)
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(seqs))
            self.metrics.decode_steps.labels("compiled" if self.step.last_compiled else "eager").inc()
            self.metrics.token_latency.observe(time.perf_counter() - t0)

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        """Final hidden states (..., d) -> logits over the real vocabulary (..., V), as float32."""
        logits = self.module.lm_head(h)
        return logits[..., : self.vocab_size].float()

    @contextlib.contextmanager
    def _alone(self, s: Sequence):
        """What raises inside fails sequence `s` alone (its own options or text broke it), logged
        in one line; its neighbours in the batch go on."""
        try:
            yield
        except Exception as e:
            log.warning("sequence failed alone: %s: %s", type(e).__name__, e)
            self._fail(s, e)

    def _sample(self, seqs: list[Sequence], logits: torch.Tensor) -> None:
        live = [b for b, s in enumerate(seqs) if s.finish_reason is None]   # not failed in their prefill
        seqs = [seqs[b] for b in live]
        picks = TokenPicker.pick_all([s.picker for s in seqs], logits[live])
        now = time.perf_counter()
        for s, pick in zip(seqs, picks):
            with self._alone(s):
                if isinstance(pick, Exception):
                    raise pick
                self._take(s, *pick, now)
        if self.metrics is not None:
            self.metrics.generated_tokens.inc(len(seqs))

    def _take(self, s: Sequence, tok: int | None, entry: tuple | None, now: float) -> None:
        """Sequence `s` chose `tok`: its text so far goes out, and its end when this was its last
        (no token: its constraints allowed none, it stops)."""
        if s.first_token_at is None:
            s.first_token_at = now
            if self.metrics is not None:
                self.metrics.time_to_first_token.observe(now - s.submitted)
        if tok is None:
            self._end(s, "stop")
            return
        s.out_ids.append(tok)
        s.pending = tok
        piece, reason = s.picker.accept(tok, self.tokenizer)
        room = s.length + 1 < self.config.context_length   # the next token still has a cache slot
        if reason is None and (len(s.out_ids) >= s.options.max_new_tokens or not room):
            reason = "length"
        s.emit(Token(s, tok, piece, entry))
        if reason is not None:
            self._end(s, reason)

    def _end(self, s: Sequence, reason: str) -> None:
        tail = s.picker.flush(self.tokenizer, s.out_ids)
        if tail:
            s.emit(Token(s, None, tail, None))
        s.finish_reason = reason
        self._count_finished(reason)
        s.emit(Finish(s))

    def _retire(self) -> None:
        """Finished and cancelled sequences leave; the rest are packed into the top rows."""
        for s in self._running:
            if s.cancelled and s.finish_reason is None:
                s.finish_reason = "cancelled"              # its client went away: nobody reads its events
                self._count_finished("cancelled")
        if any(s.finish_reason is not None for s in self._running):
            self._running = self._pack([None if s.finish_reason is not None else s for s in self._running])

    def _count_finished(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.finished.labels(reason).inc()

    def _gauges(self) -> None:
        if self.metrics is not None:
            self.metrics.queue_depth.set(len(self._waiting))
            self.metrics.running.set(len(self._running))
