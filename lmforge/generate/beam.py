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


@torch.inference_mode()
def beam_search(step: Callable[[torch.Tensor, torch.Tensor, int], torch.Tensor], first_logits: torch.Tensor,
                num_beams: int, max_new_tokens: int, eos_id: int | None, pad_id: int = 0,
                length_penalty: float = 1.0, early_stopping: bool = True,
                no_repeat_ngram_size: int = 0) -> BeamResult:
    """Beam search for B prompts with K = num_beams beams each.

    first_logits: (B*K, V) next-token logits after each prompt, repeated K times (row b*K + k
        is beam k of prompt b; the model's cache rows are laid out the same way).
    step(tokens (B*K,), origin (B*K,), t) -> logits (B*K, V): keep cache rows `origin` (in
        that order), feed `tokens` as generated token number t (0-based), return the logits.
    no_repeat_ngram_size: n > 0 forbids a hypothesis to contain any n generated tokens twice
        (the "y nosotros nosotros nosotros" loops small translators fall into).
    """
    K = num_beams
    N, V = first_logits.shape
    B, L, device = N // K, max_new_tokens, first_logits.device
    assert N == B * K, "first_logits must hold num_beams rows per prompt"
    neg_inf = torch.tensor(float("-inf"), device=device)
    running_scores = torch.full((B, K), float("-inf"), device=device)
    running_scores[:, 0] = 0.0                                      # the K beams start identical: keep one
    running_seqs = torch.full((B, K, L), pad_id, dtype=torch.long, device=device)
    finished_scores = torch.full((B, K), float("-inf"), device=device)
    finished_seqs = torch.full((B, K, L), pad_id, dtype=torch.long, device=device)
    finished_lens = torch.zeros((B, K), dtype=torch.long, device=device)
    finished_eos = torch.zeros((B, K), dtype=torch.bool, device=device)
    done = torch.zeros(B, dtype=torch.bool, device=device)
    n_cand = min(2 * K, K * V)
    rank_in_top_k = (torch.arange(n_cand, device=device) < K)[None]   # (1, 2K)
    beam_offset = (torch.arange(B, device=device) * K)[:, None]        # (B, 1)
    logits, t = first_logits, 0
    for t in range(L):
        logp = torch.log_softmax(logits.float(), dim=-1)
        if no_repeat_ngram_size:                                       # no n-gram twice in a hypothesis
            banned = repeated_ngram_mask(running_seqs.view(N, L), t, no_repeat_ngram_size, V)
            logp = logp.masked_fill(banned, float("-inf"))
        logp = logp.view(B, K, V)
        cand = (running_scores[..., None] + logp).view(B, K * V)     # (B, K*V)
        top_scores, top_ids = cand.topk(n_cand, dim=-1)              # (B, 2K), best first
        top_beam, top_tok = top_ids // V, top_ids % V
        top_seqs = running_seqs.gather(1, top_beam[..., None].expand(-1, -1, L)).clone()   # (B, 2K, L)
        top_seqs[..., t] = top_tok
        is_eos = (top_tok == eos_id) if eos_id is not None else torch.zeros_like(top_tok, dtype=torch.bool)
        norm = float(t + 1) ** length_penalty
        # finished: <eos> candidates ranked among the top K, for prompts still searching
        new_fin = torch.where(is_eos & rank_in_top_k & ~done[:, None], top_scores / norm, neg_inf)
        all_scores = torch.cat([finished_scores, new_fin], dim=1)                 # (B, 3K)
        finished_scores, keep = all_scores.topk(K, dim=1)
        finished_seqs = torch.cat([finished_seqs, top_seqs], 1).gather(1, keep[..., None].expand(-1, -1, L))
        finished_lens = torch.cat([finished_lens, torch.full_like(top_tok, t + 1)], 1).gather(1, keep)
        finished_eos = torch.cat([finished_eos, torch.ones_like(is_eos)], 1).gather(1, keep)
        # running: the K best candidates that did not end
        running_scores, keep = torch.where(is_eos, neg_inf, top_scores).topk(K, dim=1)   # (B, K)
        running_seqs = top_seqs.gather(1, keep[..., None].expand(-1, -1, L))
        origin = top_beam.gather(1, keep)                                        # (B, K) beam each came from
        tokens = top_tok.gather(1, keep)
        full = finished_scores[:, -1] > float("-inf")                            # K hypotheses finished
        if early_stopping:
            done |= full
        else:
            done |= full & (running_scores[:, 0] / norm <= finished_scores[:, -1])
        if bool(done.all()) or t == L - 1:
            break
        logits = step(tokens.reshape(N), (origin + beam_offset).reshape(N), t)
    # prompts still searching: running beams compete with the finished hypotheses
    norm = float(t + 1) ** length_penalty
    last = torch.where(done[:, None], neg_inf, running_scores / norm)
    all_scores = torch.cat([finished_scores, last], dim=1)
    scores, keep = all_scores.topk(K, dim=1)
    seqs = torch.cat([finished_seqs, running_seqs], 1).gather(1, keep[..., None].expand(-1, -1, L))
    lens = torch.cat([finished_lens, torch.full_like(finished_lens, t + 1)], 1).gather(1, keep)
    ended = torch.cat([finished_eos, torch.zeros_like(finished_eos)], 1).gather(1, keep)
    return BeamResult(seqs[..., : t + 1], lens, scores, ended, t + 1)


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
                             cfg.length_penalty, cfg.early_stopping, cfg.no_repeat_ngram_size)
    ids, reasons = best_hypotheses(result, None if cfg.ignore_eos else eos_id)
    return ids, reasons, clock.stats(T0, result.steps, B, beams=K)
