"""Autoregressive decoding for decoder-only models: `prefill` the prompt into the KV cache,
then `decode_one_token` per step (gpt-fast style).

A batch of prompts is left-padded so every sequence ends at the same cache slot; per-sample
position ids and a key-padding mask make a padded prompt decode exactly as it would alone.
With `num_beams > 1` the same prefill and decode step drive beam search (`beam.py`).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..errors import LmforgeError
from ..options import at_least, option, validate
from .sampling import apply_repetition_penalty, sample_next


@dataclass
class GenerationConfig:
    max_new_tokens: int = option(100, "most tokens to generate per prompt")
    temperature: float = option(0.8, "sampling temperature; 0 means greedy")
    greedy: bool = option(False, "always take the most likely token (same as --temperature 0)")
    top_k: int | None = option(None, "sample only among the k most likely tokens (0: no top-k filter)",
                               check=at_least(0))
    top_p: float = option(1.0, "sample only from the smallest set of tokens with this much probability (nucleus)")
    repetition_penalty: float = option(1.0, "penalise tokens already in the text (>1 discourages repeats)")
    stop: list[str] = option([], "stop a sequence when it produces any of these strings")
    seed: int | None = option(None, "random seed for sampling (same seed, same text)")
    truncate_prompt: bool = option(False, "keep the last tokens of a prompt longer than the context "
                                          "(with a warning) instead of failing")
    ignore_eos: bool = option(False, "keep generating after the end-of-text token")
    compile: bool = option(False, "torch.compile the decode step (with CUDA graphs on GPU); the first call "
                                  "compiles, later calls of the same batch size reuse it")
    draft_tokens: int = option(4, "speculative decoding (with a draft model): tokens drafted per verification step")
    num_beams: int = option(1, "beam search with this many beams (deterministic: sampling options are ignored); "
                               "1 samples or decodes greedily")
    length_penalty: float = option(1.0, "beam search: a finished beam scores sum(log p) / length**this "
                                        "(larger favours longer outputs)")
    early_stopping: bool = option(True, "beam search: stop once num_beams hypotheses have ended (--no-early-stopping "
                                        "continues while a running beam can still win)")

    def __post_init__(self) -> None:
        validate(self)
        if self.greedy:
            self.temperature = 0.0
        if self.max_new_tokens < 1:
            raise LmforgeError(f"max_new_tokens={self.max_new_tokens} must be at least 1")
        if self.temperature < 0:
            raise LmforgeError(f"temperature={self.temperature} must be >= 0 (0 is greedy)")
        if not 0.0 < self.top_p <= 1.0:
            raise LmforgeError(f"top_p={self.top_p} must be in (0, 1]")
        if self.repetition_penalty <= 0:
            raise LmforgeError(f"repetition_penalty={self.repetition_penalty} must be > 0 (1 disables it)")
        if self.draft_tokens < 1:
            raise LmforgeError(f"draft_tokens={self.draft_tokens} must be at least 1")
        if self.num_beams < 1:
            raise LmforgeError(f"num_beams={self.num_beams} must be at least 1")
        if self.num_beams > 1 and self.repetition_penalty != 1.0:
            raise LmforgeError("--repetition-penalty is not supported with beam search; drop it or use --num-beams 1")


@dataclass
class Completion:
    text: str                 # the generated text (prompt not included), cut before any stop string
    ids: list[int]            # generated token ids
    finish_reason: str        # "eos", "stop" or "length"
    prompt_tokens: int = 0
    stats: dict = field(default_factory=dict)


@torch.no_grad()
def prefill(model, idx: torch.Tensor, pos_ids: torch.Tensor, key_valid: torch.Tensor) -> torch.Tensor:
    """Run the (left-padded) prompts through the model, filling cache slots 0..T-1.
    Returns the logits of the last position (B, V)."""
    input_pos = torch.arange(idx.shape[1], device=idx.device)
    return model(idx, input_pos=input_pos, pos_ids=pos_ids, key_valid=key_valid, last_only=True)[:, -1]


@torch.no_grad()
def decode_one_token(model, token: torch.Tensor, slot: torch.Tensor, pos_ids: torch.Tensor,
                     key_valid: torch.Tensor) -> torch.Tensor:
    """One step: token (B, 1) written at cache `slot` (1,) -> logits (B, V)."""
    return model(token, input_pos=slot, pos_ids=pos_ids, key_valid=key_valid)[:, -1]


def compiled_decode_step(model):
    """`decode_one_token` compiled once per model: static shapes (a full-context cache), so one
    graph serves every call; on CUDA, mode="reduce-overhead" replays it as a CUDA graph."""
    fn = getattr(model, "_compiled_decode_step", None)
    if fn is None:
        cuda = next(model.parameters()).is_cuda
        fn = torch.compile(decode_one_token, mode="reduce-overhead" if cuda else None, fullgraph=True, dynamic=False)
        model._compiled_decode_step = fn
    return fn


def prepare_prompts(prompt_ids: list[list[int]], context_length: int, max_new_tokens: int, truncate: bool,
                    pad_id: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Left-pad prompts; check them against the context. Returns idx, pos_ids, valid, new tokens."""
    longest = max(len(p) for p in prompt_ids)
    if longest == 0:
        raise LmforgeError("empty prompt: give at least one token of text")
    if longest >= context_length:
        if not truncate:
            raise LmforgeError(f"prompt has {longest} tokens but the model's context is {context_length}; "
                               f"pass a shorter prompt or --truncate-prompt to keep its last "
                               f"{context_length - 1} tokens")
        keep = max(1, context_length - max_new_tokens)
        warnings.warn(f"prompt of {longest} tokens truncated to its last {keep} to fit the context "
                      f"of {context_length}", stacklevel=3)
        prompt_ids = [p[-keep:] for p in prompt_ids]
        longest = max(len(p) for p in prompt_ids)
    if longest + max_new_tokens > context_length:
        new = context_length - longest
        warnings.warn(f"max_new_tokens={max_new_tokens} does not fit after a {longest}-token prompt in the "
                      f"{context_length}-token context; generating at most {new}", stacklevel=3)
        max_new_tokens = new
    B = len(prompt_ids)
    idx = torch.full((B, longest), pad_id, dtype=torch.long)
    valid = torch.zeros((B, longest), dtype=torch.bool)
    for b, p in enumerate(prompt_ids):
        idx[b, longest - len(p):] = torch.tensor(p, dtype=torch.long)
        valid[b, longest - len(p):] = True
    pos_ids = (valid.long().cumsum(-1) - 1).clamp(min=0)
    return idx, pos_ids, valid, max_new_tokens


@torch.no_grad()
def generate_ids(model, prompt_ids: list[list[int]], cfg: GenerationConfig, *, eos_id: int | None = None,
                 pad_id: int = 0, on_tokens: Callable[[torch.Tensor], bool | None] | None = None,
                 device: torch.device | str | None = None) -> tuple[list[list[int]], list[str], dict]:
    """Generate for a batch of token-id prompts. `on_tokens(next_ids (B,))` is called after
    every step; returning True stops everything (stop strings use this); beam search does not
    call it. Returns (generated ids per prompt, finish reasons, stats)."""
    if model.config.family != "decoder":
        raise LmforgeError(f"generate needs a decoder (GPT / Llama) model, not a {model.config.family}; use "
                           f"`lmforge translate` for encoder-decoders and `lmforge classify` for classifiers")
    if cfg.num_beams > 1:
        from .beam import beam_generate_ids
        return beam_generate_ids(model, prompt_ids, cfg, eos_id=eos_id, pad_id=pad_id, device=device)
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
    was_training = model.training
    model.eval()
    model.setup_cache(B, total)
    step_fn = compiled_decode_step(model) if cfg.compile else decode_one_token
    out = torch.full((B, max_new), pad_id, dtype=torch.long, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    ends_at_eos = eos_id is not None and not cfg.ignore_eos
    slots = torch.arange(T0, T0 + max_new, device=device)        # cache slot of each decode step
    n_steps = 0
    t0 = time.perf_counter()
    try:
        logits = prefill(model, idx, pos_ids, key_valid)
        t_prefill = time.perf_counter() - t0
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
    finally:
        if not cfg.compile:
            model.clear_cache()        # a compiled step keeps its cache buffers for the next call
        model.train(was_training)
    elapsed = time.perf_counter() - t0
    results, reasons = map(list, zip(*(finish(out[b, :n_steps].tolist(), cfg, eos_id) for b in range(B))))
    decode_time = max(elapsed - t_prefill, 1e-9)
    stats = {"prompt_tokens": T0, "new_tokens": n_steps, "batch": B, "prefill_s": t_prefill,
             "decode_s": decode_time, "tokens_per_s": B * max(n_steps - 1, 1) / decode_time}
    return results, reasons, stats


def finish(ids: list[int], cfg: GenerationConfig, eos_id: int | None) -> tuple[list[int], str]:
    """(generated ids cut before the end-of-text token, finish reason "eos" or "length")."""
    if eos_id is not None and not cfg.ignore_eos and eos_id in ids:
        return ids[: ids.index(eos_id)], "eos"
    return ids, "length"


def encode_prompt(tokenizer, text: str) -> list[int]:
    """A text prompt's ids: with the bos token first when the tokenizer says so (`add_bos`,
    an imported Llama), as `transformers`' tokenizer(text) gives them."""
    return tokenizer.encode(text, bos=tokenizer.add_bos)


def generate(model, tokenizer, prompts: list[str | list[int]] | str, cfg: GenerationConfig | None = None, *,
             stream: Callable[[int, str], None] | None = None, draft=None) -> list[Completion]:
    """Generate text for one prompt or a batch. `stream(index, text_piece)` receives text as
    it is produced (per prompt index; with beam search, the whole text once at the end, since
    the best beam is known only then). An empty prompt starts from the end-of-text token; a
    prompt may also be a list of token ids (e.g. a rendered chat). With a `draft` model (same
    tokenizer, smaller) decoding is speculative: same tokens when greedy, same distribution
    when sampling, and `stats` reports the acceptance rate."""
    cfg = cfg or GenerationConfig()
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise LmforgeError("no prompts given")
    start = tokenizer.eos_id if tokenizer.eos_id is not None else tokenizer.bos_id
    prompt_ids = [list(p) if not isinstance(p, str)
                  else encode_prompt(tokenizer, p) or ([start] if start is not None else []) for p in prompts]
    decoders = [tokenizer.decode_stream() for _ in prompts]
    texts = ["" for _ in prompts]
    emitted = [0 for _ in prompts]       # characters already passed to `stream`
    stopped = [False for _ in prompts]
    track_text = (stream is not None or bool(cfg.stop)) and cfg.num_beams == 1
    hold = max((len(s) for s in cfg.stop), default=1) - 1   # text that may still become a stop string
    specials = tokenizer.special_ids

    def emit(b: int, upto: int) -> None:
        if stream is not None and upto > emitted[b]:
            stream(b, texts[b][emitted[b]:upto])
            emitted[b] = upto

    def on_tokens(nxt: torch.Tensor) -> bool:
        if not track_text:
            return False
        for b, tok in enumerate(nxt.tolist()):
            if stopped[b]:
                continue
            if tok in specials:
                if tok == tokenizer.eos_id and not cfg.ignore_eos:
                    stopped[b] = True
                    emit(b, len(texts[b]))
                continue
            piece = decoders[b].step(tok)
            if not piece:
                continue
            before = len(texts[b])
            texts[b] += piece
            hit = _find_stop(texts[b], cfg.stop, before)
            if hit is not None:
                texts[b] = texts[b][:hit]
                stopped[b] = True
            emit(b, len(texts[b]) if stopped[b] else len(texts[b]) - hold)
        return all(stopped)

    if draft is None:
        ids, reasons, stats = generate_ids(model, prompt_ids, cfg, eos_id=tokenizer.eos_id,
                                           pad_id=tokenizer.pad_id or 0, on_tokens=on_tokens)
    else:
        from .speculative import speculative_generate_ids
        ids, reasons, stats = speculative_generate_ids(model, draft, prompt_ids, cfg, eos_id=tokenizer.eos_id,
                                                       pad_id=tokenizer.pad_id or 0, on_tokens=on_tokens)
    for b in range(len(prompts)):
        emit(b, len(texts[b]))          # flush what was held back
    results = []
    for b in range(len(prompts)):
        text = tokenizer.decode(ids[b])
        reason = reasons[b]
        hit = _find_stop(text, cfg.stop, 0)
        if hit is not None:
            text, reason = text[:hit], "stop"
        if stream is not None and cfg.num_beams > 1:
            stream(b, text)
        results.append(Completion(text, ids[b], reason, len(prompt_ids[b]), stats))
    return results


def _find_stop(text: str, stops: list[str], new_from: int) -> int | None:
    """Index where the earliest stop string starts, looking only where new text could complete one."""
    best = None
    for s in stops:
        if not s:
            continue
        i = text.find(s, max(0, new_from - len(s) + 1))
        if i >= 0 and (best is None or i < best):
            best = i
    return best
