"""Continuous batching: one thread owns the model and decodes every running sequence together.

The KV cache is one preallocated buffer per layer of `max_batch` rows x the context. Each
running sequence owns a row and keeps its own length; a row's cache slot of a token equals
its position, so a row needs no padding mask — causality per row (`input_pos` of shape
(B, 1), see `KVCache.update` and `attention_mask`) already hides everything past its end,
including what an earlier occupant of the row left there. Running rows are kept packed at
the top of the buffer (rows 0..n-1), so every step runs on a view of n rows and of the
slots in use, never on idle rows.

One scheduler step:
1. drop cancelled sequences (a client that disconnected) and admit waiting ones into free rows;
2. prefill the newcomers together (right-padded, one forward) and sample their first token;
3. one decode step for all running rows (the newcomers included), sample, emit text;
4. finished sequences leave; the last row moves into the hole (one row copy per layer).

So a request joins at the next token boundary and leaves when done: short requests never
wait for long ones. Sampling is per sequence (its own decoding options: temperature, filters,
seed). A sequence hears of its progress through `events.py`'s Token, Finish and Failed (a step
that raised fails every sequence it held, so no client waits forever).

An encoder-decoder (seq2seq) is batched the same way: a newcomer's prompt is its *source*,
encoded once and projected into every cross attention's keys and values, which go into the
row's slots of a second per-layer buffer (with a per-row source mask); its decoder starts
from <bos> at slot 0 in the next decode step, beside everyone else.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..generate import GenerationConfig
from ..generate.json_mode import JsonState
from ..model.kv_cache import KVCache
from .events import Event, Failed, Finish, Token
from .picker import TokenPicker


def _attention_kernels(device: torch.device):
    """On CUDA, attention without the cuDNN kernel: it builds a plan for every new shape (about
    50 ms each in bf16 on an H200), and a running batch changes shape at every step (its rows
    and its longest length), so decoding crawled at 18 tokens/s; the memory-efficient kernel
    takes any shape and the same boolean masks."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


class QueueFull(Exception):
    """More requests are waiting than the queue holds."""


class _RowsView:
    """Rows r0..r1 and slots 0..S-1 of a layer's cache: what `Attention` sees for one step
    (a view, so writes land in the shared buffer)."""

    update = KVCache.update

    def __init__(self, k_cache: torch.Tensor, v_cache: torch.Tensor):
        self.k_cache, self.v_cache = k_cache, v_cache


@dataclass
class Sequence:
    """One generated continuation (a request with n=2 owns two). `emit(event)` receives its
    `events.Token`, `Finish` and `Failed` events, on the scheduler thread."""
    prompt_ids: list[int]
    options: GenerationConfig
    emit: Callable[[Event], None]
    index: int = 0                               # choice index within its request
    json_state: JsonState | None = None          # JSON mode: this sequence's grammar state
    score_prompt: bool = False                   # echo + logprobs: score the prompt's tokens too
    out_ids: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    cancelled: bool = False
    prompt_logprobs: list | None = None          # echo + logprobs: per prompt token (first None)
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
    target side). `lock` serialises every other use of the module (attention maps, embeddings)."""

    def __init__(self, module, tokenizer, max_batch: int = 16, max_queue: int = 64, metrics=None):
        self.module, self.tokenizer = module, tokenizer
        self.config = module.config
        self.seq2seq = self.config.family == "seq2seq"
        self.stack = module.decoder if self.seq2seq else module.transformer     # the blocks that decode
        self.vocab_size = self.config.tgt_vocab_size if self.seq2seq else self.config.vocab_size
        self.max_batch, self.max_queue, self.metrics = max_batch, max_queue, metrics
        self.lock = threading.Lock()
        self._cond = threading.Condition()
        self._waiting: collections.deque[Sequence] = collections.deque()
        self._running: list[Sequence] = []          # row i holds _running[i]
        self._stop = False
        self._caches: list[tuple[torch.Tensor, torch.Tensor]] | None = None
        self._cross: list[tuple[torch.Tensor, torch.Tensor]] = []      # seq2seq: per layer, every row's source
        self._source_valid: torch.Tensor | None = None                   # seq2seq: (rows, context) real source slots
        self._thread = threading.Thread(target=self._loop, name="lmforge-scheduler", daemon=True)

    # ---- the client side (any thread) ----------------------------------------------------
    def start(self) -> "Scheduler":
        self._thread.start()
        return self

    def shutdown(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify()
        self._thread.join(timeout=10)

    def submit(self, seqs: list[Sequence]) -> None:
        """Queue the sequences of one request (all or none); QueueFull when the queue is full."""
        with self._cond:
            if len(self._waiting) + len(seqs) > self.max_queue:
                raise QueueFull(f"{len(self._waiting)} sequences are already waiting (the queue holds "
                                f"{self.max_queue}); retry later")
            self._waiting.extend(seqs)
            self._cond.notify()
        self._gauges()

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
                while not self._stop and not self._waiting and not self._running:
                    self._cond.wait()
                if self._stop:
                    return
                newcomers = []
                while self._waiting and len(self._running) + len(newcomers) < self.max_batch:
                    s = self._waiting.popleft()
                    if s.cancelled:
                        self._count_finished("cancelled")
                    else:
                        newcomers.append(s)
            try:
                with self.lock:
                    self._step(newcomers)
            except Exception as e:          # a bug must not hang the clients: fail what was running
                for s in self._running + newcomers:
                    if s.finish_reason is None:
                        s.finish_reason = "error"
                        self._count_finished("error")
                        s.emit(Failed(s, f"{type(e).__name__}: {e}"))
                self._running = []
            self._gauges()

    def _ensure_cache(self) -> None:
        if self._caches is not None:
            return
        self.module.clear_cache()           # caches an earlier `generate` kept go: the rows below replace them
        p = next(self.module.parameters())
        c = self.config
        shape = (self.max_batch, c.kv_heads, c.context_length, c.head_dim)

        def buffers() -> list[tuple[torch.Tensor, torch.Tensor]]:
            return [(torch.zeros(shape, dtype=p.dtype, device=p.device),
                     torch.zeros(shape, dtype=p.dtype, device=p.device)) for _ in self.stack.blocks]
        self._caches = buffers()
        if self.seq2seq:
            self._cross = buffers()
            self._source_valid = torch.zeros((self.max_batch, c.context_length), dtype=torch.bool, device=p.device)

    def _use_rows(self, r0: int, r1: int, slots: int, source_slots: int = 0) -> None:
        for block, (k, v) in zip(self.stack.blocks, self._caches):
            block.attn.kv_cache = _RowsView(k[r0:r1, :, :slots], v[r0:r1, :, :slots])
        for block, (k, v) in zip(self.stack.blocks, self._cross):
            block.cross_attn.memory_kv = (k[r0:r1, :, :source_slots], v[r0:r1, :, :source_slots])

    def _drop_views(self) -> None:
        for block in self.stack.blocks:
            block.attn.kv_cache = None
            if block.cross_attn is not None:
                block.cross_attn.memory_kv = None

    def _move_row(self, src: int, dst: int, seq: Sequence) -> None:
        for k, v in self._caches:
            k[dst, :, :seq.length] = k[src, :, :seq.length]
            v[dst, :, :seq.length] = v[src, :, :seq.length]
        for k, v in self._cross:
            k[dst, :, :seq.source_length] = k[src, :, :seq.source_length]
            v[dst, :, :seq.source_length] = v[src, :, :seq.source_length]
        if self._source_valid is not None:
            self._source_valid[dst] = self._source_valid[src]

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
                    self._move_row(len(rows), i, last)
                    rows[i] = last
            i += 1
        return rows

    def _step(self, newcomers: list[Sequence]) -> None:
        self._ensure_cache()
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
            self._drop_views()

    def _prefill(self, seqs: list[Sequence], r0: int, device) -> None:
        """Newcomers in rows r0.. : right-padded prompts, slot = position; sample each first token."""
        lengths = [len(s.prompt_ids) for s in seqs]
        T = max(lengths)
        idx = torch.zeros((len(seqs), T), dtype=torch.long)
        for b, s in enumerate(seqs):
            idx[b, :lengths[b]] = torch.tensor(s.prompt_ids, dtype=torch.long)
        idx = idx.to(device)
        slots = torch.arange(T, device=device).expand(len(seqs), T)
        self._use_rows(r0, r0 + len(seqs), T)
        h = self.stack(idx, input_pos=slots, pos_ids=slots)       # (m, T, d)
        last = torch.tensor(lengths, device=device) - 1
        logits = self._logits(h[torch.arange(len(seqs), device=device), last])  # (m, V)
        for b, s in enumerate(seqs):
            s.length = lengths[b]
            s.picker = TokenPicker(s.options, s.prompt_ids, self.vocab_size, device, s.json_state)
            if s.score_prompt:
                s.prompt_logprobs = s.picker.score_prompt(self._logits(h[b, : lengths[b] - 1]), s.prompt_ids)
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
        for block, (k, v) in zip(self.stack.blocks, self._cross):
            k[r0:r0 + m, :, :S], v[r0:r0 + m, :, :S] = block.cross_attn.project_memory(memory)
        self._source_valid[r0:r0 + m] = False
        self._source_valid[r0:r0 + m, :S] = valid
        bos = self.tokenizer.bos_id
        for b, s in enumerate(seqs):
            s.source_length, s.length, s.pending = lengths[b], 0, bos
            s.picker = TokenPicker(s.options, [bos], self.vocab_size, device, s.json_state)
        if self.metrics is not None:
            self.metrics.prompt_tokens.inc(sum(lengths))

    def _decode(self, device) -> None:
        seqs = self._running
        tokens = torch.tensor([[s.pending] for s in seqs], dtype=torch.long, device=device)   # (n, 1)
        pos = torch.tensor([[s.length] for s in seqs], dtype=torch.long, device=device)       # (n, 1)
        source = max(s.source_length for s in seqs)
        self._use_rows(0, len(seqs), max(s.length for s in seqs) + 1, source)
        t0 = time.perf_counter()
        extra = {"memory_valid": self._source_valid[:len(seqs), :source]} if self.seq2seq else {}
        logits = self._logits(self.stack(tokens, input_pos=pos, pos_ids=pos, **extra)[:, -1])
        for s in seqs:
            s.length += 1
        self._sample(seqs, logits)
        if self.metrics is not None:
            self.metrics.batch_size.observe(len(seqs))
            self.metrics.token_latency.observe(time.perf_counter() - t0)

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        """Final hidden states (..., d) -> logits over the real vocabulary (..., V), as float32."""
        logits = self.module.lm_head(h)
        return logits[..., : self.vocab_size].float()

    def _sample(self, seqs: list[Sequence], logits: torch.Tensor) -> None:
        picks = TokenPicker.pick_all([s.picker for s in seqs], logits)
        now = time.perf_counter()
        for s, (tok, entry) in zip(seqs, picks):
            if s.first_token_at is None:
                s.first_token_at = now
                if self.metrics is not None:
                    self.metrics.time_to_first_token.observe(now - s.submitted)
            s.out_ids.append(tok)
            s.pending = tok
            piece, reason = s.picker.accept(tok, self.tokenizer)
            room = s.length + 1 < self.config.context_length   # the next token still has a cache slot
            if reason is None and (len(s.out_ids) >= s.options.max_new_tokens or not room):
                reason = "length"
            s.emit(Token(s, tok, piece, entry))
            if reason is not None:
                tail = s.picker.flush(self.tokenizer, s.out_ids)
                if tail:
                    s.emit(Token(s, None, tail, None))
                s.finish_reason = reason
                self._count_finished(reason)
                s.emit(Finish(s))
        if self.metrics is not None:
            self.metrics.generated_tokens.inc(len(seqs))

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
