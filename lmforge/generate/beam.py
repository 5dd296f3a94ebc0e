"""Beam search over the KV cache, for decoder-only and encoder-decoder models.

`beam_search` is the model-free core, vectorised over prompts and beams: it keeps K running
beams per prompt and the K best finished hypotheses. Each step scores every beam's next
tokens, takes the 2K best candidates (so K non-end candidates always exist), moves candidates
that end with <eos> among the top K to the finished set with the score

    sum of log-probabilities / length ** length_penalty      (length counts the <eos>)

and keeps the K best others running; `step(tokens, origin, t)` then reorders the model's
cache rows to the surviving beams (`origin`) and feeds their new tokens. A prompt is done
when K hypotheses have finished (early_stopping), or else when no running beam can still beat
the worst finished one at its current length (Hugging Face's heuristic). Beams still running
at max_new_tokens compete with the finished ones.

`beam_generate_ids` drives it for a decoder-only model (left-padded prompt batch prefilled
once, then the cache expanded to K rows per prompt); `seq2seq.generate_seq2seq_ids` for an
encoder-decoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .core import GenerationConfig, RunClock, decode_one_token, decoding_run, prefill, prepare_prompts


@dataclass
class BeamResult:
    sequences: torch.Tensor   # (B, K, L) the K best hypotheses per prompt, best first; padded with pad_id
    lengths: torch.Tensor     # (B, K) tokens in each hypothesis (including a final <eos>)
    scores: torch.Tensor      # (B, K) length-normalised log-probabilities
    ended: torch.Tensor       # (B, K) True where the hypothesis ended with <eos>
    steps: int                # decoding steps run


def repeated_ngram_mask(seqs: torch.Tensor, t: int, n: int, vocab: int) -> torch.Tensor:
    """(N, V) True for the tokens that would make an n-gram already in seqs[:, :t] (N rows) appear again."""
    mask = torch.zeros(seqs.shape[0], vocab, dtype=torch.bool, device=seqs.device)
    if n < 1 or t < n - 1:
        return mask
    if n == 1:
        return mask.scatter_(1, seqs[:, :t], True)
    grams = seqs[:, :t].unfold(1, n - 1, 1)                           # (N, t - n + 2, n - 1) every (n-1)-gram
    prefix = seqs[:, t - n + 1: t]                                     # (N, n - 1) the last n - 1 tokens
    hits = (grams[:, :-1] == prefix[:, None]).all(-1)                  # (N, t - n + 1) earlier copies of it
    counts = torch.zeros(seqs.shape[0], vocab, dtype=torch.long, device=seqs.device)
    counts.scatter_add_(1, seqs[:, n - 1: t], hits.long())             # the token that followed each copy
    return counts > 0


@dataclass
class Beams:
    """The search state of B prompts: K running beams and the K best finished hypotheses each."""
    running_scores: torch.Tensor    # (B, K) sum of log-probabilities; -inf for an unused beam
    running_seqs: torch.Tensor      # (B, K, L) tokens so far, pad_id after them
    finished_scores: torch.Tensor   # (B, K) length-normalised, best first; -inf for an empty place
    finished_seqs: torch.Tensor     # (B, K, L)
    finished_lens: torch.Tensor     # (B, K) tokens in each hypothesis (including a final <eos>)
    finished_eos: torch.Tensor      # (B, K) True where the hypothesis ended with <eos>
    done: torch.Tensor              # (B,) prompts that stopped searching

    @classmethod
    def start(cls, B: int, K: int, L: int, pad_id: int, device: torch.device) -> "Beams":
        running_scores = torch.full((B, K), float("-inf"), device=device)
        running_scores[:, 0] = 0.0                                      # the K beams start identical: keep one
        return cls(running_scores, torch.full((B, K, L), pad_id, dtype=torch.long, device=device),
                   torch.full((B, K), float("-inf"), device=device),
                   torch.full((B, K, L), pad_id, dtype=torch.long, device=device),
                   torch.zeros((B, K), dtype=torch.long, device=device),
                   torch.zeros((B, K), dtype=torch.bool, device=device), torch.zeros(B, dtype=torch.bool, device=device))

    def candidates(self, logits: torch.Tensor, t: int, n_cand: int, no_repeat_ngram_size: int,
                   banned_eos: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The n_cand best one-token extensions of each prompt's beams, from logits (B*K, V):
        (scores, beam, token, sequences), each (B, n_cand, ...), best first. `banned_eos`: an
        end-of-text id that may not be chosen at this step (before the minimum length)."""
        B, K, L = self.running_seqs.shape
        V = logits.shape[-1]
        logp = torch.log_softmax(logits.float(), dim=-1)
        if no_repeat_ngram_size:                                       # no n-gram twice in a hypothesis
            banned = repeated_ngram_mask(self.running_seqs.view(B * K, L), t, no_repeat_ngram_size, V)
            logp = logp.masked_fill(banned, float("-inf"))
        if banned_eos is not None:                     # as Hugging Face's min_length: no renormalisation
            logp[:, banned_eos] = float("-inf")
        logp = logp.view(B, K, V)
        cand = (self.running_scores[..., None] + logp).view(B, K * V)  # (B, K*V)
        top_scores, top_ids = cand.topk(n_cand, dim=-1)              # (B, 2K), best first
        top_beam, top_tok = top_ids // V, top_ids % V
        top_seqs = self.running_seqs.gather(1, top_beam[..., None].expand(-1, -1, L)).clone()   # (B, 2K, L)
        top_seqs[..., t] = top_tok
        return top_scores, top_beam, top_tok, top_seqs

    def add_finished(self, scores: torch.Tensor, seqs: torch.Tensor, lens: torch.Tensor, ended: torch.Tensor) -> None:
        """Merge M new hypotheses per prompt — scores (B, M), -inf for none; seqs (B, M, L);
        lens, ended (B, M) — into the K best finished ones."""
        K, L = self.finished_scores.shape[1], self.finished_seqs.shape[2]
        all_scores = torch.cat([self.finished_scores, scores], dim=1)                    # (B, K + M)
        self.finished_scores, keep = all_scores.topk(K, dim=1)
        self.finished_seqs = torch.cat([self.finished_seqs, seqs], 1).gather(1, keep[..., None].expand(-1, -1, L))
        self.finished_lens = torch.cat([self.finished_lens, lens], 1).gather(1, keep)
        self.finished_eos = torch.cat([self.finished_eos, ended], 1).gather(1, keep)

    def keep_running(self, top_scores: torch.Tensor, top_beam: torch.Tensor, top_tok: torch.Tensor,
                     top_seqs: torch.Tensor, is_eos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Run on with the K best candidates that did not end; (beam each came from, its token), (B, K)."""
        K, L = self.running_seqs.shape[1:]
        self.running_scores, keep = top_scores.masked_fill(is_eos, float("-inf")).topk(K, dim=1)   # (B, K)
        self.running_seqs = top_seqs.gather(1, keep[..., None].expand(-1, -1, L))
        return top_beam.gather(1, keep), top_tok.gather(1, keep)

    def update_done(self, early_stopping: bool, norm: float) -> None:
        full = self.finished_scores[:, -1] > float("-inf")                       # K hypotheses finished
        if early_stopping:
            self.done |= full
        else:                                # ... and no running beam can beat the worst at this length
            self.done |= full & (self.running_scores[:, 0] / norm <= self.finished_scores[:, -1])

    def result(self, t: int, length_penalty: float) -> BeamResult:
        """The K best hypotheses after step t; for prompts still searching, the running beams
        compete with the finished ones."""
        last = (self.running_scores / float(t + 1) ** length_penalty).masked_fill(self.done[:, None], float("-inf"))
        self.add_finished(last, self.running_seqs, torch.full_like(self.finished_lens, t + 1),
                          torch.zeros_like(self.finished_eos))
        return BeamResult(self.finished_seqs[..., : t + 1], self.finished_lens, self.finished_scores,
                          self.finished_eos, t + 1)


@torch.inference_mode()
def beam_search(step: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor], first_logits: torch.Tensor,
                num_beams: int, max_new_tokens: int, eos_id: int | None, pad_id: int = 0,
                length_penalty: float = 1.0, early_stopping: bool = True,
                no_repeat_ngram_size: int = 0, min_new_tokens: int = 0) -> BeamResult:
    """Beam search for B prompts with K = num_beams beams each.

    first_logits: (B*K, V) next-token logits after each prompt, repeated K times (row b*K + k
        is beam k of prompt b; the model's cache rows are laid out the same way).
    step(tokens (B*K,), origin (B*K,), t) -> logits (B*K, V): keep cache rows `origin` (in
        that order), feed `tokens` as generated token number t (0-based), return the logits.
    no_repeat_ngram_size: n > 0 forbids a hypothesis to contain any n generated tokens twice
        (the "y nosotros nosotros nosotros" loops small translators fall into).
    min_new_tokens: no hypothesis ends (with <eos>) before this many tokens.
    """
    K = num_beams
    N, V = first_logits.shape
    B, L, device = N // K, max_new_tokens, first_logits.device
    assert N == B * K, "first_logits must hold num_beams rows per prompt"
    beams = Beams.start(B, K, L, pad_id, device)
    n_cand = min(2 * K, K * V)
    rank_in_top_k = (torch.arange(n_cand, device=device) < K)[None]   # (1, 2K)
    beam_offset = (torch.arange(B, device=device) * K)[:, None]        # (B, 1)
    logits, t = first_logits, 0
    for t in range(L):
        banned_eos = eos_id if t < min_new_tokens else None
        top_scores, top_beam, top_tok, top_seqs = beams.candidates(logits, t, n_cand, no_repeat_ngram_size, banned_eos)
        is_eos = (top_tok == eos_id) if eos_id is not None else torch.zeros_like(top_tok, dtype=torch.bool)
        norm = float(t + 1) ** length_penalty
        # finished: <eos> candidates ranked among the top K, for prompts still searching
        new_fin = is_eos & rank_in_top_k & ~beams.done[:, None]
        beams.add_finished((top_scores / norm).masked_fill(~new_fin, float("-inf")), top_seqs,
                           torch.full_like(top_tok, t + 1), torch.ones_like(is_eos))
        origin, tokens = beams.keep_running(top_scores, top_beam, top_tok, top_seqs, is_eos)   # (B, K) each
        beams.update_done(early_stopping, norm)
        if bool(beams.done.all()) or t == L - 1:
            break
        logits = step(tokens.reshape(N), (origin + beam_offset).reshape(N), t)
    return beams.result(t, length_penalty)


def best_hypotheses(result: BeamResult, eos_id: int | None) -> tuple[list[list[int]], list[str]]:
    """The best hypothesis per prompt without its <eos>, and why it ended ("eos" or "length")."""
    ids, reasons = [], []
    for b in range(result.sequences.shape[0]):
        seq = result.sequences[b, 0, : int(result.lengths[b, 0])].tolist()
        ended = bool(result.ended[b, 0])
        if ended and eos_id is not None and seq and seq[-1] == eos_id:
            seq = seq[:-1]
        ids.append(seq)
        reasons.append("eos" if ended else "length")
    return ids, reasons


@torch.inference_mode()
def beam_generate_ids(model, prompt_ids: list[list[int]], cfg: GenerationConfig, *, eos_id: int | None = None,
                      pad_id: int = 0, device: torch.device | str | None = None
                      ) -> tuple[list[list[int]], list[str], dict]:
    """Beam search continuation of a batch of token-id prompts with a decoder-only model.
    Returns (best continuation per prompt, finish reasons, stats), like `generate_ids`."""
    config, K = model.config, cfg.num_beams
    device = device or next(model.parameters()).device
    idx, pos_ids, valid, max_new = prepare_prompts(prompt_ids, config.context_length, cfg.max_new_tokens,
                                                   cfg.truncate_prompt, pad_id, within="beam search")
    B, T0 = idx.shape
    idx, pos_ids, valid = idx.to(device), pos_ids.to(device), valid.to(device)
    key_valid = torch.zeros((B, T0 + max_new), dtype=torch.bool, device=device)
    key_valid[:, :T0] = valid
    with decoding_run(model, batch_size=B, cache_len=T0 + max_new):
        clock = RunClock()
        logits = prefill(model, idx, pos_ids, key_valid)                       # (B, V)
        clock.prefilled()
        expand = torch.arange(B, device=device).repeat_interleave(K)            # K cache rows per prompt
        model.reorder_cache(expand)
        key_valid, last_pos = key_valid[expand], pos_ids[expand, -1:]           # (B*K, T), (B*K, 1)

        def step(tokens: torch.Tensor, origin: torch.Tensor, t: int) -> torch.Tensor:
            model.reorder_cache(origin)
            key_valid[:, T0 + t] = True
            return decode_one_token(model, tokens[:, None], torch.tensor([T0 + t], device=device),
                                    last_pos + t + 1, key_valid)

        result = beam_search(step, logits[expand], K, max_new, None if cfg.ignore_eos else eos_id, pad_id,
                             cfg.length_penalty, cfg.early_stopping, cfg.no_repeat_ngram_size, cfg.min_new_tokens)
    ids, reasons = best_hypotheses(result, None if cfg.ignore_eos else eos_id)
    return ids, reasons, clock.stats(T0, result.steps, B, beams=K)
