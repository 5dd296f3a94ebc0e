"""Plain autoregressive decoding (greedy or sampled) for decoder-only models: `prefill` the
prompt into the KV cache, then `decode_one_token` per step (gpt-fast style).

A batch of prompts is left-padded so every sequence ends at the same cache slot; per-sample
position ids and a key-padding mask make a padded prompt decode exactly as it would alone.
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

from typing import Callable

import torch

from ..errors import LmforgeError
from .core import (GenerationConfig, RunClock, compiled_decode_step, decode_one_token, decoding_run, finish,
                   prefill, prepare_prompts)
from .json_mode import apply_json_masks
from .sampling import apply_repetition_penalty, sample_next, token_logprobs


def window_strategy(config) -> str:
    """How a model decodes past its context: "rolling" cache or "reencode" (see the module doc)."""
    return "rolling" if config.position in ("rope", "none") else "reencode"


def ring_slots(columns: torch.Tensor, window: int, sinks: int) -> torch.Tensor:
    """Cache slot of each text column in a rolling cache of `window` slots whose first `sinks`
    slots are never overwritten: column n < window sits at n, later ones cycle through the rest."""
    return torch.where(columns < window, columns, sinks + (columns - sinks) % (window - sinks))


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
    config = model.config
    W = config.context_length
    device = device or next(model.parameters()).device
    idx, pos_ids, valid, max_new = prepare_prompts(prompt_ids, W, cfg.max_new_tokens, cfg.truncate_prompt, pad_id,
                                                   past_window=True)
    B, T0 = idx.shape
    past = T0 + max_new > W                                             # the window will fill
    strategy = window_strategy(config) if past else None
    sinks = cfg.sink_tokens if strategy == "rolling" else 0
    if cfg.sink_tokens and strategy == "reencode":
        raise LmforgeError(f"--sink-tokens applies to rotary models (a rolling cache); this model has "
                           f"{config.position} positions and re-encodes its window instead; drop --sink-tokens")
    if sinks and (sinks >= W // 2 or not bool(valid[:, 0].all())):
        raise LmforgeError(f"--sink-tokens {sinks} needs fewer than half the context ({W // 2}) and prompts of one "
                           f"length (no padding in the sink slots); lower it or decode the prompts separately")
    if strategy == "rolling" and config.position == "rope":
        model.transformer.rotary.extend(T0 + max_new)                    # positions keep counting
    total = W if (cfg.compile or past) else T0 + max_new                # compiled: one static cache shape
    idx, pos_ids, valid = idx.to(device), pos_ids.to(device), valid.to(device)
    key_valid = torch.zeros((B, total), dtype=torch.bool, device=device)
    key_valid[:, :T0] = valid
    generator = None
    if cfg.seed is not None:
        generator = torch.Generator(device=device).manual_seed(cfg.seed)
    seen = None
    if cfg.repetition_penalty != 1.0:
        seen = torch.zeros((B, config.vocab_size), dtype=torch.bool, device=device)
        seen.scatter_(1, idx, valid)
    step_fn = compiled_decode_step(model) if cfg.compile else decode_one_token
    seq = torch.cat([idx, torch.full((B, max_new), pad_id, dtype=torch.long, device=device)], dim=1)   # text so far
    seq_valid = torch.cat([valid, torch.ones((B, max_new), dtype=torch.bool, device=device)], dim=1)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    ends_at_eos = eos_id is not None and not cfg.ignore_eos
    columns = torch.arange(T0, T0 + max_new, device=device)
    slots = ring_slots(columns, W, sinks) if strategy == "rolling" else columns   # cache slot of each step's token
    keep = W - W // 2                                                   # "reencode": tokens kept when the cache fills
    cache_len, reencodes = T0, 0
    logprobs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    n_steps = 0
    # a compiled step keeps its cache buffers for the next call
    with decoding_run(model, batch_size=B, cache_len=total, keep_cache=cfg.compile):
        clock = RunClock()
        logits = prefill(model, idx, pos_ids, key_valid)
        clock.prefilled()
        last_pos = pos_ids[:, -1:]
        for i in range(max_new):
            raw = logits
            if seen is not None:
                logits = apply_repetition_penalty(logits, seen, cfg.repetition_penalty)
            if json_states is not None:
                logits = apply_json_masks(logits, json_states)
            nxt = sample_next(logits, cfg.temperature, cfg.top_k, cfg.top_p, generator, cfg.min_p)
            nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
            if cfg.logprobs is not None:
                logprobs.append(token_logprobs(raw, nxt, cfg.logprobs))
            if json_states is not None:
                for b, tok in enumerate(nxt.tolist()):
                    if not bool(done[b]):
                        json_states[b].advance(tok)
            n = T0 + i                                                  # the text column of this token
            seq[:, n] = nxt
            n_steps = i + 1
            if seen is not None:
                seen.scatter_(1, nxt[:, None], ~done[:, None])
            if ends_at_eos:
                done |= nxt == eos_id
            stop = on_tokens(nxt) if on_tokens is not None else None
            if stop or i == max_new - 1 or (ends_at_eos and bool(done.all())):    # a host sync only when needed
                break
            if strategy == "reencode" and cache_len == W:               # window full: prefill its last half again
                window, window_valid = seq[:, n + 1 - keep: n + 1], seq_valid[:, n + 1 - keep: n + 1]
                window_pos = (window_valid.long().cumsum(-1) - 1).clamp(min=0)
                key_valid.zero_()
                key_valid[:, :keep] = window_valid
                logits = prefill(model, window, window_pos, key_valid)
                last_pos, cache_len, reencodes = window_pos[:, -1:], keep, reencodes + 1
                continue
            slot = slots[i: i + 1] if strategy != "reencode" else columns[:1] - T0 + cache_len
            key_valid.index_fill_(1, slot, True)
            last_pos = last_pos + 1
            cache_len += 1
            if strategy == "rolling":
                logits = step_fn(model, nxt[:, None], slot, last_pos, key_valid, True)
            else:
                logits = step_fn(model, nxt[:, None], slot, last_pos, key_valid)
    results, reasons = map(list, zip(*(finish(seq[b, T0: T0 + n_steps].tolist(), cfg, eos_id) for b in range(B))))
    stats = clock.stats(T0, n_steps, B)
    if past:
        stats.update(window=strategy, reencodes=reencodes, sink_tokens=sinks)
    if cfg.logprobs is not None:
        stats["token_logprobs"] = [[(float(lp[0][b]), lp[1][b].tolist(), lp[2][b].tolist())
                                    for lp in logprobs[: len(results[b])]] for b in range(B)]
    return results, reasons, stats
