"""Plain autoregressive decoding (greedy or sampled) for decoder-only models: `prefill` the
prompt into the KV cache, then `decode_one_token` per step (gpt-fast style).

A batch of prompts is left-padded so every sequence ends at the same cache slot; per-sample
position ids and a key-padding mask make a padded prompt decode exactly as it would alone.
`dispatch.generate_ids` chooses between this loop, beam search and speculative decoding.
"""

from __future__ import annotations

from typing import Callable

import torch

from .core import (GenerationConfig, RunClock, compiled_decode_step, decode_one_token, decoding_run, finish,
                   prefill, prepare_prompts)
from .sampling import apply_repetition_penalty, sample_next


@torch.no_grad()
def decode_ids(model, prompt_ids: list[list[int]], cfg: GenerationConfig, *, eos_id: int | None = None,
               pad_id: int = 0, on_tokens: Callable[[torch.Tensor], bool | None] | None = None,
               device: torch.device | str | None = None) -> tuple[list[list[int]], list[str], dict]:
    """Sample (or decode greedily) a batch of token-id prompts. `on_tokens(next_ids (B,))` is
    called after every step; returning True stops everything (stop strings use this).
    Returns (generated ids per prompt, finish reasons, stats)."""
    config = model.config
    device = device or next(model.parameters()).device
    idx, pos_ids, valid, max_new = prepare_prompts(prompt_ids, config.context_length, cfg.max_new_tokens,
                                                   cfg.truncate_prompt, pad_id)
    B, T0 = idx.shape
    total = config.context_length if cfg.compile else T0 + max_new      # compiled: one static cache shape
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
    out = torch.full((B, max_new), pad_id, dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    ends_at_eos = eos_id is not None and not cfg.ignore_eos
    slots = torch.arange(T0, T0 + max_new, device=device)        # cache slot of each decode step
    n_steps = 0
    # a compiled step keeps its cache buffers for the next call
    with decoding_run(model, batch_size=B, cache_len=total, keep_cache=cfg.compile):
        clock = RunClock()
        logits = prefill(model, idx, pos_ids, key_valid)
        clock.prefilled()
        last_pos = pos_ids[:, -1:]
        for i in range(max_new):
            if seen is not None:
                logits = apply_repetition_penalty(logits, seen, cfg.repetition_penalty)
            nxt = sample_next(logits, cfg.temperature, cfg.top_k, cfg.top_p, generator)
            nxt = torch.where(done, torch.full_like(nxt, pad_id), nxt)
            out[:, i] = nxt
            n_steps = i + 1
            if seen is not None:
                seen.scatter_(1, nxt[:, None], ~done[:, None])
            if ends_at_eos:
                done |= nxt == eos_id
            stop = on_tokens(nxt) if on_tokens is not None else None
            if stop or i == max_new - 1 or (ends_at_eos and bool(done.all())):    # a host sync only when needed
                break
            key_valid[:, T0 + i] = True
            last_pos = last_pos + 1
            logits = step_fn(model, nxt[:, None], slots[i: i + 1], last_pos, key_valid)
    results, reasons = map(list, zip(*(finish(out[b, :n_steps].tolist(), cfg, eos_id) for b in range(B))))
    return results, reasons, clock.stats(T0, n_steps, B)
