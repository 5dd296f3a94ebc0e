"""Per-sequence token choice for the scheduler: a `TokenPicker` turns a row of logits into the
next token under the sequence's decoding options (a `GenerationConfig`), with its
log-probability and the top alternatives when asked, tracks the text, and finds stop strings.

The filters, log-probabilities and JSON-mode masks are `lmforge.generate`'s, applied in the
order `lmforge generate` uses (repetition penalty, n-gram blocking, JSON mask, temperature,
top-k, top-p, min-p),
so a seeded request samples the same tokens as `lmforge generate --seed` on the same prompt.
Each sequence has its own random generator (its seed), so rows choose one by one; rows that
decode plainly greedily share one argmax.
"""

from __future__ import annotations

import torch

from ..generate import GenerationConfig
from ..generate.json_mode import JsonState, apply_json_masks
from ..generate.sampling import apply_repetition_penalty, sample_next, token_logprobs
from ..generate.text import StreamedText


class TokenPicker:
    """The choosing state of one sequence: seen tokens (repetition penalty), its random
    generator (seed), its JSON-mode state, its incremental text and stop strings."""

    def __init__(self, options: GenerationConfig, prompt_ids: list[int], vocab_size: int, device,
                 json_state: JsonState | None = None):
        self.options, self.json_state = options, json_state
        self.generator = None
        if options.seed is not None:
            self.generator = torch.Generator(device=device).manual_seed(options.seed)
        self.seen = None
        if options.repetition_penalty != 1.0:
            self.seen = torch.zeros((1, vocab_size), dtype=torch.bool, device=device)
            self.seen[0, torch.tensor(prompt_ids, device=device)] = True
        self._text: StreamedText | None = None      # made at the first token (it needs the tokenizer)
        self._written: list[int] = []                 # n-gram blocking: the tokens chosen so far,
        self._followers: dict[tuple, set[int]] = {}   # and each (n-1)-gram -> the tokens that followed it

    # ---- choosing -------------------------------------------------------------------------
    @staticmethod
    def pick_all(pickers: list["TokenPicker"], logits: torch.Tensor) -> list[tuple[int, tuple | None] | Exception]:
        """logits (n, V) float32 -> [(token id, logprob entry or None)] for n sequences. Rows that
        decode plainly greedily share one argmax; the others choose one by one. A row whose choice
        raises gets the exception in its place: that sequence fails, the others go on. A token of
        None: the sequence's constraints allow no token at all (it ends)."""
        chosen = logits.argmax(-1).tolist()
        out = []
        for i, p in enumerate(pickers):
            try:
                tok = chosen[i] if p.options.plain_greedy else p._choose(logits[i: i + 1])
                out.append((tok, p._entry(logits[i], tok) if p.options.logprobs is not None and tok is not None
                            else None))
            except Exception as e:
                out.append(e)
        return out

    def _choose(self, logits: torch.Tensor) -> int | None:
        options = self.options
        if self.seen is not None:
            logits = apply_repetition_penalty(logits, self.seen, options.repetition_penalty)
        banned = self._repeats()
        if banned:
            logits = logits.index_fill(1, torch.tensor(sorted(banned), device=logits.device), float("-inf"))
        if self.json_state is not None:
            logits = apply_json_masks(logits, [self.json_state])
        if (banned or self.json_state is not None) and bool(torch.isneginf(logits).all()):
            return None         # n-gram blocking and JSON mode together left nothing to write
        return int(sample_next(logits, options.temperature, options.top_k, options.top_p, self.generator, options.min_p))

    def _repeats(self) -> set[int] | None:
        """n-gram blocking: the tokens that would write an n-gram a second time (the rule of
        `generate.beam.repeated_ngram_mask`, kept up to date token by token instead of rescanned)."""
        n = self.options.no_repeat_ngram_size
        if not n or len(self._written) < n - 1:
            return None
        return self._followers.get(tuple(self._written[len(self._written) - n + 1:]))

    def _remember(self, tok: int) -> None:
        n = self.options.no_repeat_ngram_size
        self._written.append(tok)
        if len(self._written) >= n:
            gram = self._written[len(self._written) - n:]
            self._followers.setdefault(tuple(gram[:-1]), set()).add(gram[-1])

    def _entry(self, logits: torch.Tensor, tok: int) -> tuple:
        """(token, its log-probability, [(alternative, log-probability)] * K) under the model's
        own distribution (before temperature and filters, as vLLM reports them)."""
        chosen, top_ids, top_lps = token_logprobs(logits[None], torch.tensor([tok], device=logits.device),
                                                  self.options.logprobs)
        return tok, float(chosen[0]), list(zip(top_ids[0].tolist(), top_lps[0].tolist()))

    @staticmethod
    def score_prompt(logits: torch.Tensor, prompt_ids: list[int], k: int) -> list[tuple | None]:
        """logits (T-1, V) predicting prompt tokens 1..T-1 -> entries (token, logprob,
        [(alternative, logprob)] * k, its rank in the vocabulary from 1), None for the first token."""
        targets = torch.tensor(prompt_ids[1:], device=logits.device)
        chosen, top_ids, top_lps = token_logprobs(logits, targets, k)
        ranks = (logits > logits.gather(-1, targets[:, None])).sum(-1) + 1
        return [None] + [(tok, lp, list(zip(ids, lps)), rank) for tok, lp, ids, lps, rank in
                         zip(prompt_ids[1:], chosen.tolist(), top_ids.tolist(), top_lps.tolist(), ranks.tolist())]

    # ---- text ---------------------------------------------------------------------------------
    def accept(self, tok: int, tokenizer) -> tuple[str, str | None]:
        """Record the chosen token: (text that may be sent now, finish reason or None)."""
        if self.seen is not None:
            self.seen[0, tok] = True
        if self.options.no_repeat_ngram_size:
            self._remember(tok)
        if self.json_state is not None:
            self.json_state.advance(tok)
        if self._text is None:
            self._text = StreamedText(tokenizer, self.options.stop, self.options.ignore_eos)
        return self._text.add(tok)

    @property
    def text(self) -> str:
        """The generated text so far (cut before a stop string)."""
        return self._text.text if self._text is not None else ""

    def flush(self, tokenizer, ids: list[int]) -> str:
        """At the end: what was held back (text that could still have become a stop string, an
        incomplete character); the text is then `tokenizer.decode` of the ids, as `generate` gives it."""
        if self._text is None:
            self._text = StreamedText(tokenizer, self.options.stop, self.options.ignore_eos)
        if not self._text.cut:
            eos = ids and ids[-1] == tokenizer.eos_id and not self.options.ignore_eos
            self._text.text = tokenizer.decode(ids[:-1] if eos else ids)   # (invalid bytes may have shown otherwise)
        return self._text.take()
