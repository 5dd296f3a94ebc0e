"""The shared core of decoder-only decoding, below `decode.py`, `beam.py` and `speculative.py`:

- `GenerationConfig` (every decoding option, the CLI flags are derived from it) and `Completion`;
- `prepare_prompts` (left-pad a batch, check it against the context) and `encode_prompt`;
- `prefill` and `decode_one_token` over the KV cache (gpt-fast style), `compiled_decode_step`;
- `decoding_run`: the set-up / tear-down every decoding run shares (eval mode, caches allocated
  and freed, training mode restored), and `run_stats`, the statistics every run reports;
- `finish`: cut generated ids at the end-of-text token.

Nothing here imports the decoding strategies; `dispatch.py` (above all three) picks one.
"""

from __future__ import annotations

import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

import torch

from ..errors import LmforgeError
from ..model.linear import row_major_layout
from ..options import SEED, bounds, every, option, validate
from .sampling import MAX_LOGPROBS
from .unguarded import compile_unguarded, steps_for


# Temperatures below this decode greedily (vLLM's rule): dividing float32 logits by 1e-300 makes
# them infinite, and sampling from that is argmax anyway. (The repetition penalty's usable range,
# 1e-4 to 1e4, is the same kind of bound: beyond it penalised logits overflow float32.)
MIN_TEMPERATURE = 1e-5


def _strings(v) -> str | None:
    ok = isinstance(v, str) or isinstance(v, list) and all(isinstance(s, str) for s in v)
    return None if ok else "must be a string or a list of strings"


@dataclass
class GenerationConfig:
    """Every decoding option, in one type with one validation path: `lmforge generate` / `chat` /
    `translate` take them as flags, the Python API as keywords, and `lmforge serve` maps OpenAI's
    request fields onto them (`lmforge.serve.openai_fields`), so a value is refused alike, with
    the same words, wherever it is given. Each field's rule is its `check` (plus its type)."""
    max_new_tokens: int = option(100, "most tokens to generate per prompt", check=bounds(1))
    min_new_tokens: int = option(0, "fewest tokens to generate per prompt: the end-of-text token is forbidden "
                                    "before them (0: no minimum)", check=bounds(0))
    temperature: float = option(0.8, "sampling temperature; 0 means greedy (at most 2, as OpenAI's)",
                                check=bounds(0.0, 2.0))
    greedy: bool = option(False, "always take the most likely token (same as --temperature 0)")
    top_k: int | None = option(None, "sample only among the k most likely tokens (0 or -1: no top-k filter)",
                               check=bounds(-1))
    top_p: float = option(1.0, "sample only from the smallest set of tokens with this much probability (nucleus)",
                          check=bounds(0.0, 1.0, low_open=True))
    repetition_penalty: float = option(1.0, "penalise tokens already in the text (>1 discourages repeats)",
                                       check=every(bounds(0.0, low_open=True), bounds(1e-4, 1e4)))
    stop: list[str] = option([], "stop a sequence when it produces any of these strings", check=_strings)
    seed: int | None = option(None, "random seed for sampling (same seed, same text)", check=SEED)
    truncate_prompt: bool = option(False, "keep the last tokens of a prompt longer than the context "
                                          "(with a warning) instead of failing")
    ignore_eos: bool = option(False, "keep generating after the end-of-text token")
    compile: bool | None = option(None, "torch.compile the decode step (with CUDA graphs on GPU); the first call "
                                         "compiles (3-8 s on a CPU), later calls of the same batch size reuse it; "
                                         "--no-compile never compiles",
                                  unset="on a CPU, once the model has spent 5 s decoding eagerly at a batch size "
                                        "in this process; on a GPU, off")
    draft_tokens: int = option(4, "speculative decoding (with a draft model): tokens drafted per verification step",
                               check=bounds(1))
    num_beams: int = option(1, "beam search with this many beams (deterministic: sampling options are ignored); "
                               "1 samples or decodes greedily", check=bounds(1))
    length_penalty: float = option(1.0, "beam search: a finished beam scores sum(log p) / length**this "
                                        "(larger favours longer outputs)")
    no_repeat_ngram_size: int = option(0, "beam search (and encoder-decoder greedy decoding): never repeat an "
                                          "n-gram of this many generated tokens (0 disables it)", check=bounds(0))
    early_stopping: bool = option(True, "beam search: stop once num_beams hypotheses have ended (--no-early-stopping "
                                        "continues while a running beam can still win)")
    min_p: float = option(0.0, "sample only tokens at least this fraction as likely as the most likely one "
                               "(min-p; 0 disables it)", check=bounds(0.0, 1.0))
    logprobs: int | None = option(None, "report each generated token's log-probability and the K most likely "
                                        f"alternatives (0-{MAX_LOGPROBS}; with --json)", check=bounds(0, MAX_LOGPROBS))
    json_mode: bool = option(False, "constrain the output to one syntactically valid JSON object")
    sink_tokens: int = option(0, "past the context window (rotary models): keep this many first tokens in the "
                                 "rolling cache as attention sinks", check=bounds(0))

    def __post_init__(self) -> None:
        validate(self)
        if self.greedy or self.temperature < MIN_TEMPERATURE:
            self.temperature = 0.0
        if isinstance(self.stop, str):
            self.stop = [self.stop]
        if self.top_k is not None and self.top_k <= 0:        # 0 and -1 (vLLM's spelling) both mean no filter
            self.top_k = None
        if self.min_new_tokens > self.max_new_tokens:
            raise LmforgeError(f"--min-new-tokens {self.min_new_tokens} is more than --max-new-tokens "
                               f"{self.max_new_tokens}; lower it or raise --max-new-tokens")
        if self.num_beams > 1 and self.repetition_penalty != 1.0:
            raise LmforgeError("--repetition-penalty is not supported with beam search; drop it or use --num-beams 1")
        if self.num_beams > 1 and (self.logprobs is not None or self.json_mode):
            raise LmforgeError("--logprobs and --json-mode work with sampling or greedy decoding, not beam search; "
                               "drop --num-beams")

    @property
    def plain_greedy(self) -> bool:
        """Decoding that is one argmax per step: no penalty, blocking or JSON mask in the way."""
        return (self.temperature == 0 and self.repetition_penalty == 1.0 and not self.json_mode
                and self.no_repeat_ngram_size == 0)


@dataclass
class Completion:
    text: str                 # the generated text (prompt not included), cut before any stop string
    ids: list[int]            # generated token ids
    finish_reason: str        # "eos", "stop" or "length"
    prompt_tokens: int = 0
    stats: dict = field(default_factory=dict)
    logprobs: list[dict] | None = None   # with cfg.logprobs: per generated token {"token", "id", "logprob",
                                         # "top": [{"token", "id", "logprob"}, ...]} (the model's own distribution)


@torch.no_grad()
def prefill(model, idx: torch.Tensor, pos_ids: torch.Tensor | None, key_valid: torch.Tensor | None) -> torch.Tensor:
    """Run the (left-padded) prompts through the model, filling cache slots 0..T-1.
    Returns the logits of the last position (B, V)."""
    input_pos = torch.arange(idx.shape[1], device=idx.device)
    return model(idx, input_pos=input_pos, pos_ids=pos_ids, key_valid=key_valid, last_only=True)[:, -1]


@torch.no_grad()
def decode_one_token(model, token: torch.Tensor, slot: torch.Tensor, pos_ids: torch.Tensor,
                     key_valid: torch.Tensor, ring: bool = False) -> torch.Tensor:
    """One step: token (B, 1) written at cache `slot` (1,) -> logits (B, V). `ring`: the cache is
    a rolling buffer (past the context window), `key_valid` alone says which slots to attend to."""
    return model(token, input_pos=slot, pos_ids=pos_ids, key_valid=key_valid, ring=ring)[:, -1]


def compiled_decode_step(model, shape: tuple[int, bool] = (1, False)):
    """`decode_one_token` compiled for static shapes (a full-context cache). On a CPU: one copy per
    run shape (batch rows, rolling cache), called without dynamo's guards (`unguarded`: the model
    is checked once per run instead), its weights laid out row-major first: the step's few-row
    products become sums over the inputs that inductor runs on every thread
    (`lmforge.model.linear`; 2.6x the tokens/s on 2 threads). On CUDA: one guarded function,
    mode="reduce-overhead" (replayed as a CUDA graph)."""
    if next(model.parameters()).is_cuda:
        steps = model.__dict__.setdefault("_compiled_decode_step", {})
        if "cuda" not in steps:
            steps["cuda"] = torch.compile(decode_one_token, mode="reduce-overhead", fullgraph=True, dynamic=False)
        return steps["cuda"]
    row_major_layout(model)                         # first: the layout is part of the model's signature
    steps = steps_for(model, "_compiled_decode_step")
    if shape not in steps:
        steps[shape] = compile_unguarded(decode_one_token, f"decode_step_{shape[0]}{'_rolling' * shape[1]}")
    return steps[shape]


def prepare_prompts(prompt_ids: list[list[int]], context_length: int, max_new_tokens: int, truncate: bool,
                    pad_id: int, past_window: bool = False, within: str = "beam search and speculative decoding"
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int]:
    """Left-pad prompts; check them against the context. Returns idx, pos_ids, valid, new tokens.
    Unless `past_window` (plain decoding, which rolls its cache), prompt + new tokens must fit the
    context: max_new_tokens is cut, with a warning that names the `within` strategy."""
    longest = max(len(p) for p in prompt_ids)
    if longest == 0:
        raise LmforgeError("empty prompt: give at least one token of text")
    if longest >= context_length:
        if not truncate:
            raise LmforgeError(f"prompt has {longest} tokens but the model's context is {context_length}; "
                               f"pass a shorter prompt or --truncate-prompt to keep its last "
                               f"{context_length - 1} tokens")
        keep = max(1, context_length - max_new_tokens)
        if past_window:                               # leave half the window to generate before it rolls
            keep = min(context_length - 1, max(keep, context_length // 2))
        warnings.warn(f"prompt of {longest} tokens truncated to its last {keep} to fit the context "
                      f"of {context_length}", stacklevel=3)
        prompt_ids = [p[-keep:] for p in prompt_ids]
        longest = max(len(p) for p in prompt_ids)
    if longest + max_new_tokens > context_length and not past_window:
        new = context_length - longest
        warnings.warn(f"max_new_tokens={max_new_tokens} does not fit after a {longest}-token prompt in the "
                      f"{context_length}-token context, and {within} cannot go past it; generating at most {new} "
                      f"(plain sampling or greedy decoding goes past the window)", stacklevel=3)
        max_new_tokens = new
    B = len(prompt_ids)
    idx = torch.full((B, longest), pad_id, dtype=torch.long)
    valid = torch.zeros((B, longest), dtype=torch.bool)
    for b, p in enumerate(prompt_ids):
        idx[b, longest - len(p):] = torch.tensor(p, dtype=torch.long)
        valid[b, longest - len(p):] = True
    pos_ids = (valid.long().cumsum(-1) - 1).clamp(min=0)
    return idx, pos_ids, valid, max_new_tokens


@contextmanager
def decoding_run(*models, batch_size: int, cache_len: int, keep_cache: bool = False) -> Iterator[None]:
    """Set up a decoding run for `models` (a model, or a model and its draft): eval mode and a
    KV cache of (batch_size, cache_len) each; afterwards free the caches (unless `keep_cache`:
    a compiled step reuses its buffers) and restore training mode, also when decoding fails."""
    modes = [m.training for m in models]
    for m in models:
        m.eval()
        m.setup_cache(batch_size, cache_len)
    try:
        yield
    finally:
        for m, mode in zip(models, modes):
            if not keep_cache:
                m.clear_cache()
            m.train(mode)


class RunClock:
    """Wall time of a decoding run: started at creation, `prefilled()` marks the end of prefill."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.prefill_s = 0.0

    def prefilled(self) -> None:
        self.prefill_s = time.perf_counter() - self.t0

    def stats(self, prompt_tokens: int, new_tokens: int, batch: int, **extra) -> dict:
        """The statistics every run reports (decode speed counts the tokens after the first)."""
        decode_s = max(time.perf_counter() - self.t0 - self.prefill_s, 1e-9)
        return {"prompt_tokens": prompt_tokens, "new_tokens": new_tokens, "batch": batch, **extra,
                "prefill_s": self.prefill_s, "decode_s": decode_s,
                "tokens_per_s": batch * max(new_tokens - 1, 1) / decode_s}


def finish(ids: list[int], cfg: GenerationConfig, eos_id: int | None) -> tuple[list[int], str]:
    """(generated ids cut before the end-of-text token, finish reason "eos" or "length")."""
    if eos_id is not None and not cfg.ignore_eos and eos_id in ids:
        return ids[: ids.index(eos_id)], "eos"
    return ids, "length"


def encode_prompt(tokenizer, text: str) -> list[int]:
    """A text prompt's ids: with the bos token first when the tokenizer says so (`add_bos`,
    an imported Llama), as `transformers`' tokenizer(text) gives them."""
    return tokenizer.encode(text, bos=tokenizer.add_bos)

