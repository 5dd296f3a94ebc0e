"""Per-sequence token choice for the scheduler: the sampling settings of one request, and a
`TokenPicker` that turns a row of logits into the next token (with its log-probability and
the top alternatives when asked), tracks the text, and finds stop strings.

The filters, log-probabilities and JSON-mode masks are `lmforge.generate`'s, applied in the
order `lmforge generate` uses (repetition penalty, n-gram blocking, JSON mask, temperature,
top-k, top-p, min-p),
so a seeded request samples the same tokens as `lmforge generate --seed` on the same prompt.
Each sequence has its own random generator (its seed), so rows choose one by one; rows that
decode plainly greedily share one argmax.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..generate.dispatch import _find_stop as find_stop
from ..generate.sampling import apply_repetition_penalty, sample_next, token_logprobs


@dataclass
class SamplingParams:
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    logprobs: int | None = None        # None: none; K: the chosen token's log-probability and the top K
    echo_logprobs: bool = False         # also score the prompt tokens (completions with echo + logprobs)
    ignore_eos: bool = False
    constraint: object | None = None    # JSON mode: a `generate.json_mode.JsonState` (allowed_mask, advance)
    no_repeat_ngram_size: int = 0       # n > 0: never write the same n tokens twice (as `lmforge translate`)

    @property
    def plain_greedy(self) -> bool:
        return (self.temperature == 0 and self.repetition_penalty == 1.0 and self.constraint is None
                and self.no_repeat_ngram_size == 0)


class TokenPicker:
    """The choosing state of one sequence: seen tokens (repetition penalty), its random
    generator (seed), its incremental text and stop strings."""

    def __init__(self, params: SamplingParams, prompt_ids: list[int], vocab_size: int, device):
        self.params = params
        self.generator = None
        if params.seed is not None:
            self.generator = torch.Generator(device=device).manual_seed(params.seed)
        self.seen = None
        if params.repetition_penalty != 1.0:
            self.seen = torch.zeros((1, vocab_size), dtype=torch.bool, device=device)
            self.seen[0, torch.tensor(prompt_ids, device=device)] = True
        self.text = ""              # generated text so far (cut at a stop string)
        self.emitted = 0            # characters handed out
        self.stopped = False        # ended by a stop string
        self.hold = max((len(s) for s in params.stop), default=1) - 1
        self._decoder = None
        self._written: list[int] = []                 # n-gram blocking: the tokens chosen so far,
        self._followers: dict[tuple, set[int]] = {}   # and each (n-1)-gram -> the tokens that followed it

    # ---- choosing -------------------------------------------------------------------------
    @staticmethod
    def pick_all(pickers: list["TokenPicker"], logits: torch.Tensor) -> list[tuple[int, tuple | None]]:
        """logits (n, V) float32 -> [(token id, logprob entry or None)] for n sequences. Rows that
        decode plainly greedily share one argmax; the others choose one by one."""
        chosen = logits.argmax(-1).tolist()
        out = []
        for i, p in enumerate(pickers):
            tok = chosen[i] if p.params.plain_greedy else p._choose(logits[i: i + 1])
            out.append((tok, p._entry(logits[i], tok) if p.params.logprobs is not None else None))
        return out

    def _choose(self, logits: torch.Tensor) -> int:
        params = self.params
        if self.seen is not None:
            logits = apply_repetition_penalty(logits, self.seen, params.repetition_penalty)
        banned = self._repeats()
        if banned:
            logits = logits.index_fill(1, torch.tensor(sorted(banned), device=logits.device), float("-inf"))
        if params.constraint is not None:
            from ..generate.json_mode import apply_json_masks
            logits = apply_json_masks(logits, [params.constraint])
        return int(sample_next(logits, params.temperature, params.top_k, params.top_p, self.generator, params.min_p))

    def _repeats(self) -> set[int] | None:
        """n-gram blocking: the tokens that would write an n-gram a second time (the rule of
        `generate.beam.repeated_ngram_mask`, kept up to date token by token instead of rescanned)."""
        n = self.params.no_repeat_ngram_size
        if not n or len(self._written) < n - 1:
            return None
        return self._followers.get(tuple(self._written[len(self._written) - n + 1:]))

    def _remember(self, tok: int) -> None:
        n = self.params.no_repeat_ngram_size
        self._written.append(tok)
        if len(self._written) >= n:
            gram = self._written[len(self._written) - n:]
            self._followers.setdefault(tuple(gram[:-1]), set()).add(gram[-1])

    def _entry(self, logits: torch.Tensor, tok: int) -> tuple:
        """(token, its log-probability, [(alternative, log-probability)] * K) under the model's
        own distribution (before temperature and filters, as vLLM reports them)."""
        chosen, top_ids, top_lps = token_logprobs(logits[None], torch.tensor([tok], device=logits.device),
                                                  self.params.logprobs)
        return tok, float(chosen[0]), list(zip(top_ids[0].tolist(), top_lps[0].tolist()))

    def score_prompt(self, logits: torch.Tensor, prompt_ids: list[int]) -> list[tuple | None]:
        """logits (T-1, V) predicting prompt tokens 1..T-1 -> entries, None for the first token."""
        targets = torch.tensor(prompt_ids[1:], device=logits.device)
        chosen, top_ids, top_lps = token_logprobs(logits, targets, self.params.logprobs or 0)
        return [None] + [(tok, lp, list(zip(ids, lps))) for tok, lp, ids, lps in
                         zip(prompt_ids[1:], chosen.tolist(), top_ids.tolist(), top_lps.tolist())]

    # ---- text ---------------------------------------------------------------------------------
    def accept(self, tok: int, tokenizer) -> tuple[str, str | None]:
        """Record the chosen token: (text that may be sent now, finish reason or None)."""
        if self.seen is not None:
            self.seen[0, tok] = True
        if self.params.no_repeat_ngram_size:
            self._remember(tok)
        if self.params.constraint is not None:
            self.params.constraint.advance(tok)
        if tok == tokenizer.eos_id and not self.params.ignore_eos:
            return self._take(len(self.text)), "stop"
        if tok in tokenizer.special_ids:
            return "", None
        if self._decoder is None:
            self._decoder = tokenizer.decode_stream()
        piece = self._decoder.step(tok)
        if not piece:
            return "", None
        before = len(self.text)
        self.text += piece
        hit = find_stop(self.text, self.params.stop, before)
        if hit is not None:
            self.text, self.stopped = self.text[:hit], True
            return self._take(len(self.text)), "stop"
        return self._take(len(self.text) - self.hold), None

    def flush(self, tokenizer, ids: list[int]) -> str:
        """At the end: what was held back (text that could still have become a stop string, an
        incomplete character); the text is then `tokenizer.decode` of the ids, as `generate` gives it."""
        if not self.stopped:
            full = tokenizer.decode(ids[:-1] if ids and ids[-1] == tokenizer.eos_id and not self.params.ignore_eos
                                    else ids)
            self.text = full        # (a stream of invalid bytes may have been shown differently)
        return self._take(len(self.text))

    def _take(self, upto: int) -> str:
        if upto <= self.emitted:
            return ""
        piece, self.emitted = self.text[self.emitted: upto], upto
        return piece

