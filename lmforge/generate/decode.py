"""Plain autoregressive decoding (greedy or sampled) for decoder-only models: `prefill` the
prompt into the KV cache, then `decode_one_token` per step (gpt-fast style).

A batch of prompts is left-padded so every sequence ends at the same cache slot; per-sample
position ids and a key-padding mask make a padded prompt decode exactly as it would alone.
`DecodeState` holds one run; each step of its loop is `choose` (penalties, JSON masks,
sampling), `record` (the text, eos, stop) and `feed` (the decode step, or a re-encode).
`dispatch.generate_ids` chooses between this loop, beam search and speculative decoding.

Past the context window (prompt + max_new_tokens > context_length) the cache keeps its
context_length slots and decoding goes on (`window_strategy`):

- "rolling" (rotary or no positions): a ring buffer. Each new token overwrites the oldest one
  (after `sink_tokens` first slots that are never overwritten); positions keep counting (the
  rotary tables are extended), so a query sees the last tokens at their true distances. Every
  token's keys were computed when it was fed, seeing its own window: the output equals a full
  recomputation with sliding-window attention (each token attends to the last context_length
  tokens, plus the sinks). Cost: none beyond a normal step.
- "reencode" (learned or sinusoidal positions, which cannot go past their table): when the
  cache is full, the last context_length/2 tokens are prefilled again from position 0 and
  decoding continues, as nanoGPT's crop does but once every context_length/2 tokens instead
  of every token. The output equals recomputing that window from scratch at every step.
  Cost: one prefill of context_length/2 tokens per context_length/2 new tokens.
"""

from __future__ import annotations

import time
from typing import Callable

import torch

from ..errors import LmforgeError
from .auto_compile import decode_step, record_run, use_compiled_step
from .core import GenerationConfig, RunClock, decoding_run, finish, prefill, prepare_prompts
from .json_mode import apply_json_masks
from .sampling import apply_repetition_penalty, sample_next, token_logprobs
from .unguarded import dynamic_keys


def window_strategy(config) -> str:
    """How a model decodes past its context: "rolling" cache or "reencode" (see the module doc)."""
    return "rolling" if config.position in ("rope", "none") else "reencode"


def ring_slots(columns: torch.Tensor, window: int, sinks: int) -> torch.Tensor:
    """Cache slot of each text column in a rolling cache of `window` slots whose first `sinks`
    slots are never overwritten: column n < window sits at n, later ones cycle through the rest."""
    return torch.where(columns < window, columns, sinks + (columns - sinks) % (window - sinks))


def window_plan(config, cfg: GenerationConfig, prompt_len: int, max_new: int, valid: torch.Tensor
                ) -> tuple[str | None, int]:
    """(window strategy, sink slots) of a run: strategy None while prompt + new tokens fit the
    context; refuses --sink-tokens where it cannot apply."""
    W = config.context_length
    strategy = window_strategy(config) if prompt_len + max_new > W else None
    sinks = cfg.sink_tokens if strategy == "rolling" else 0
    if cfg.sink_tokens and strategy == "reencode":
        raise LmforgeError(f"--sink-tokens applies to rotary models (a rolling cache); this model has "
                           f"{config.position} positions and re-encodes its window instead; drop --sink-tokens")
    if sinks and (sinks >= W // 2 or not bool(valid[:, 0].all())):
        raise LmforgeError(f"--sink-tokens {sinks} needs fewer than half the context ({W // 2}) and prompts of one "
                           f"length (no padding in the sink slots); lower it or decode the prompts separately")
    return strategy, sinks


@torch.no_grad()
def decode_ids(model, prompt_ids: list[list[int]], cfg: GenerationConfig, *, eos_id: int | None = None,
               pad_id: int = 0, on_tokens: Callable[[torch.Tensor], bool | None] | None = None,
               device: torch.device | str | None = None, json_states: list | None = None
               ) -> tuple[list[list[int]], list[str], dict]:
    """Sample (or decode greedily) a batch of token-id prompts. `on_tokens(next_ids (B,))` is
    called after every step; returning True stops everything (stop strings use this).
    `json_states`: one `json_mode.JsonState` per prompt to constrain the output to JSON.
    Returns (generated ids per prompt, finish reasons, stats); with cfg.logprobs, stats holds
    "token_logprobs": per prompt, per token (logprob, top ids, top logprobs)."""
    device = device or next(model.parameters()).device
    prompts = prepare_prompts(prompt_ids, model.config.context_length, cfg.max_new_tokens, cfg.truncate_prompt,
                              pad_id, past_window=True)
    run = DecodeState(model, cfg, prompts, pad_id=pad_id, eos_id=eos_id, json_states=json_states, device=device)
    # a compiled step keeps its cache buffers for the next call
    with decoding_run(model, batch_size=run.B, cache_len=run.total, keep_cache=run.compiled):
        clock = RunClock()
        logits = prefill(model, run.idx, run.pos_ids, run.key_valid)
        clock.prefilled()
        run.decode(logits, on_tokens)
    record_run(model, cfg, run.shape, run.compiled, *run.step_times)
    return run.results(clock)


class DecodeState:
    """One plain decoding run: the text so far (`seq`), which cache slots hold keys to attend to
    (`key_valid`), the rows that have ended (`done`). A step is `choose` (the next tokens),
    `record` (write them down; say whether to stop) and `feed` (run them through the model)."""

    def __init__(self, model, cfg: GenerationConfig, prompts: tuple, *, pad_id: int, eos_id: int | None,
                 json_states: list | None, device: torch.device | str):
        idx, pos_ids, valid, max_new = prompts
        config, W = model.config, model.config.context_length
        B, T0 = idx.shape
        self.model, self.cfg, self.W, self.B, self.T0, self.max_new = model, cfg, W, B, T0, max_new
        self.pad_id, self.eos_id, self.json_states = pad_id, eos_id, json_states
        self.ends_at_eos = eos_id is not None and not cfg.ignore_eos
        self.strategy, self.sinks = window_plan(config, cfg, T0, max_new, valid)
        if self.strategy == "rolling" and config.position == "rope":
            model.transformer.rotary.extend(T0 + max_new)                   # positions keep counting
        self.shape = (B, self.strategy == "rolling")                        # one compiled graph each
        self.compiled = use_compiled_step(model, cfg, self.shape, torch.device(device))
        # compiled: one static cache shape, with one slot more than it can fill: a step attends to a
        # number of slots (`written_slots`) that is then never the whole cache's
        self.total = W + 1 if self.compiled else W if self.strategy else T0 + max_new
        self.idx, self.pos_ids, valid = idx.to(device), pos_ids.to(device), valid.to(device)
        self.key_valid = torch.zeros((B, self.total), dtype=torch.bool, device=device)
        self.key_valid[:, :T0] = valid
        self.generator = None
        if cfg.seed is not None:
            self.generator = torch.Generator(device=device).manual_seed(cfg.seed)
        self.seen = None                                                    # tokens in each row's text
        if cfg.repetition_penalty != 1.0:
            self.seen = torch.zeros((B, config.vocab_size), dtype=torch.bool, device=device)
            self.seen.scatter_(1, self.idx, valid)
        self.step_fn = decode_step(model, self.compiled, cfg, self.shape)
        pad = torch.full((B, max_new), pad_id, dtype=torch.long, device=device)
        self.seq = torch.cat([self.idx, pad], dim=1)                        # text so far
        self.seq_valid = torch.cat([valid, torch.ones((B, max_new), dtype=torch.bool, device=device)], dim=1)
        self.done = torch.zeros(B, dtype=torch.bool, device=device)
        self.columns = torch.arange(T0, T0 + max_new, device=device)
        # cache slot of each step's token
        self.slots = ring_slots(self.columns, W, self.sinks) if self.strategy == "rolling" else self.columns
        self.last_pos, self.cache_len, self.reencodes, self.n_steps = self.pos_ids[:, -1:], T0, 0, 0
        self.logprobs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def decode(self, logits: torch.Tensor, on_tokens: Callable[[torch.Tensor], bool | None] | None) -> None:
        """The decode loop, from the prompts' last logits (B, V). `step_times`: (seconds of the
        first step, seconds and count of the steps after it)."""
        start = after_first = time.perf_counter()
        for i in range(self.max_new):
            nxt = self.choose(logits)
            if self.record(i, nxt, on_tokens):
                break
            logits = self.feed(i, nxt)
            if i == 0:
                after_first = time.perf_counter()
        end = time.perf_counter()
        if self.n_steps < 2:                                        # no step after the first one
            after_first = end
        self.step_times = (after_first - start, end - after_first, max(self.n_steps - 2, 0))

    def choose(self, logits: torch.Tensor) -> torch.Tensor:
        """The next token of every row (B,) — pad where a row has ended — after the minimum length,
        the repetition penalty and the JSON masks; with cfg.logprobs, the model's own
        log-probabilities are kept."""
        raw, cfg = logits, self.cfg
        if self.n_steps < cfg.min_new_tokens and self.ends_at_eos:       # too short to end yet
            logits = logits.index_fill(-1, torch.tensor([self.eos_id], device=logits.device), float("-inf"))
        if self.seen is not None:
            logits = apply_repetition_penalty(logits, self.seen, cfg.repetition_penalty)
        if self.json_states is not None:
            logits = apply_json_masks(logits, self.json_states)
        nxt = sample_next(logits, cfg.temperature, cfg.top_k, cfg.top_p, self.generator, cfg.min_p)
        if self.ends_at_eos:                                            # only then can a row have ended
            nxt = torch.where(self.done, torch.full_like(nxt, self.pad_id), nxt)
        if cfg.logprobs is not None:
            self.logprobs.append(token_logprobs(raw, nxt, cfg.logprobs))
        if self.json_states is not None:
            for b, tok in enumerate(nxt.tolist()):
                if not bool(self.done[b]):
                    self.json_states[b].advance(tok)
        return nxt

    def record(self, i: int, nxt: torch.Tensor, on_tokens: Callable[[torch.Tensor], bool | None] | None) -> bool:
        """Write step i's tokens into the text; True when decoding is over."""
        self.seq[:, self.T0 + i] = nxt
        self.n_steps = i + 1
        if self.seen is not None:
            self.seen.scatter_(1, nxt[:, None], ~self.done[:, None])
        if self.ends_at_eos:
            self.done |= nxt == self.eos_id
        stop = on_tokens(nxt) if on_tokens is not None else None
        # a host sync (done.all()) only when nothing cheaper decided
        return bool(stop) or i == self.max_new - 1 or (self.ends_at_eos and bool(self.done.all()))

    def feed(self, i: int, nxt: torch.Tensor) -> torch.Tensor:
        """Run step i's tokens (B,) through the model at their cache slot; the logits after them."""
        if self.strategy == "reencode" and self.cache_len == self.W:
            return self.reencode(self.T0 + i)
        if self.strategy == "reencode":
            slot = self.columns[:1] - self.T0 + self.cache_len
        else:
            slot = self.slots[i: i + 1]
        self.key_valid.index_fill_(1, slot, True)
        self.last_pos = self.last_pos + 1
        self.cache_len += 1
        if self.strategy == "rolling":
            return self.step_fn(self.model, nxt[:, None], slot, self.last_pos, self.key_valid, True)
        return self.step_fn(self.model, nxt[:, None], slot, self.last_pos, self.written_slots())

    def written_slots(self) -> torch.Tensor:
        """`key_valid` for the cache slots written so far: the step attends to those only, not to
        the whole preallocated cache; a compiled CPU step takes their number as a dynamic size. A
        CUDA graph replays one static shape: there the compiled step keeps the whole cache."""
        if self.compiled and self.key_valid.device.type != "cpu":
            return self.key_valid
        written = self.key_valid[:, :self.cache_len]
        return dynamic_keys(written, self.total - 1) if self.compiled else written

    def reencode(self, n: int) -> torch.Tensor:
        """The window is full: prefill its last half (the text up to column n) again from slot 0."""
        keep = self.W - self.W // 2
        window, window_valid = self.seq[:, n + 1 - keep: n + 1], self.seq_valid[:, n + 1 - keep: n + 1]
        window_pos = (window_valid.long().cumsum(-1) - 1).clamp(min=0)
        self.key_valid.zero_()
        self.key_valid[:, :keep] = window_valid
        logits = prefill(self.model, window, window_pos, self.key_valid)
        self.last_pos, self.cache_len, self.reencodes = window_pos[:, -1:], keep, self.reencodes + 1
        return logits

    def results(self, clock: RunClock) -> tuple[list[list[int]], list[str], dict]:
        """(generated ids per prompt, finish reasons, stats), as `decode_ids` returns them."""
        T0, B, cfg = self.T0, self.B, self.cfg
        rows = (finish(self.seq[b, T0: T0 + self.n_steps].tolist(), cfg, self.eos_id) for b in range(B))
        results, reasons = map(list, zip(*rows))
        stats = clock.stats(T0, self.n_steps, B, compiled=self.compiled)
        if self.strategy is not None:
            stats.update(window=self.strategy, reencodes=self.reencodes, sink_tokens=self.sinks)
        if cfg.logprobs is not None:
            stats["token_logprobs"] = [[(float(lp[0][b]), lp[1][b].tolist(), lp[2][b].tolist())
                                        for lp in self.logprobs[: len(results[b])]] for b in range(B)]
        return results, reasons, stats
