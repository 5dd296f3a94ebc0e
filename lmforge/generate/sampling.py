"""Turning next-token logits into tokens: penalties, filters, sampling, log-probabilities.
All tensor ops on (B, V) logits, so a batched server loop can call them once per step.

The order the filters compose in (as Hugging Face's `generate` applies them):

    repetition penalty -> temperature -> top-k -> top-p -> min-p -> sample (temperature 0: argmax)

Every parameter is either one number for the batch or a (B,) tensor of per-row values (a server
batching requests with different settings): `temperature` 0 rows decode greedily, top_k 0 / None,
top_p 1 and min_p 0 disable their filter.

Names other modules build on: `apply_repetition_penalty`, `filter_top_k`, `filter_top_p`,
`filter_min_p`, `probabilities`, `sample_next`, `token_logprobs` (the chosen token's
log-probability and the top-K alternatives), `MAX_LOGPROBS`.

    >>> logits = torch.tensor([[1.0, 3.0, 2.0]])
    >>> sample_next(logits, temperature=0.0)        # greedy
    tensor([1])
    >>> filter_top_k(logits, 2)
    tensor([[-inf, 3., 2.]])
    >>> filter_min_p(logits, 0.3)                   # keep p >= 0.3 * max p: exp(2-3) = 0.37 stays
    tensor([[-inf, 3., 2.]])
"""

from __future__ import annotations

import math

import torch

Param = float | int | torch.Tensor | None
MAX_LOGPROBS = 20            # most alternatives `--logprobs` returns per token (OpenAI's limit)


def _column(value: Param, logits: torch.Tensor) -> torch.Tensor:
    """A scalar or (B,) parameter as a (B, 1) float tensor on the logits' device."""
    return torch.as_tensor(value, dtype=torch.float32, device=logits.device).reshape(-1, 1)


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: Param) -> torch.Tensor:
    """CTRL / HF rule: for tokens already in the sequence (`seen` (B, V) bool), divide positive
    logits by `penalty` and multiply negative ones by it."""
    if not isinstance(penalty, torch.Tensor):
        if penalty == 1.0:
            return logits
    else:
        penalty = _column(penalty, logits)
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)


def filter_top_k(logits: torch.Tensor, k: Param) -> torch.Tensor:
    """Keep the k most likely tokens of each row (k 0 or None keeps all)."""
    V = logits.shape[-1]
    if not isinstance(k, torch.Tensor):
        if not k or k >= V:
            return logits
        kth = torch.topk(logits, k, dim=-1).values[..., -1:]
        return logits.masked_fill(logits < kth, float("-inf"))
    k = torch.where(k <= 0, V, k).clamp(max=V).long().reshape(-1, 1)                   # (B, 1); 0 keeps all
    sorted_logits = torch.sort(logits, descending=True, dim=-1).values
    kth = sorted_logits.gather(-1, k - 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def filter_top_p(logits: torch.Tensor, p: Param) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability mass reaches p (nucleus sampling)."""
    if not isinstance(p, torch.Tensor) and p >= 1.0:
        return logits
    p = _column(p, logits)
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    probs = sorted_logits.softmax(-1)
    drop_sorted = (probs.cumsum(-1) - probs) >= p          # mass before this token already >= p
    drop_sorted[..., 0] = False        # the most likely token always stays (a p that rounds to 0 in float32)
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def filter_min_p(logits: torch.Tensor, min_p: Param) -> torch.Tensor:
    """min-p sampling (Nguyen et al., 2024): keep tokens whose probability is at least min_p
    times the most likely token's; in log space, logit >= max logit + log(min_p)."""
    if not isinstance(min_p, torch.Tensor):
        if min_p <= 0.0:
            return logits
        floor = logits.max(dim=-1, keepdim=True).values + math.log(min_p)
    else:
        floor = logits.max(dim=-1, keepdim=True).values + _column(min_p, logits).log()    # log 0 = -inf keeps all
    return logits.masked_fill(logits < floor, float("-inf"))


def probabilities(logits: torch.Tensor, temperature: Param, top_k: Param = None, top_p: Param = 1.0,
                  min_p: Param = 0.0) -> torch.Tensor:
    """The distribution sampling draws from: softmax of the temperature-scaled, filtered logits
    (..., V) -> (..., V) float32. (Speculative decoding compares these for two models.)
    Rows with temperature 0 get a one-hot distribution on their argmax."""
    logits = logits.float()
    if isinstance(temperature, torch.Tensor):
        t = _column(temperature, logits)
        scaled = logits / torch.where(t > 0, t, 1.0)
    else:
        t, scaled = None, logits / temperature
    probs = filter_min_p(filter_top_p(filter_top_k(scaled, top_k), top_p), min_p).softmax(dim=-1)
    if t is not None:
        greedy = torch.nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).to(probs.dtype)
        probs = torch.where(t > 0, probs, greedy)
    return probs


def sample_next(logits: torch.Tensor, temperature: Param = 1.0, top_k: Param = None, top_p: Param = 1.0,
                generator: torch.Generator | None = None, min_p: Param = 0.0) -> torch.Tensor:
    """logits (B, V) -> next token ids (B,). temperature 0 means greedy (argmax)."""
    if not isinstance(temperature, torch.Tensor) and temperature <= 0.0:
        return logits.argmax(dim=-1)
    probs = probabilities(logits, temperature, top_k, top_p, min_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, k: int = 0
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Log-probabilities under the model's own distribution (the raw logits, before penalties,
    temperature and filters — what OpenAI-style `logprobs` report).

    logits (B, V), tokens (B,) -> (logprob of each token (B,), top-k ids (B, k), their logprobs (B, k)).
    """
    logp = torch.log_softmax(logits.float(), dim=-1)
    chosen = logp.gather(-1, tokens.reshape(-1, 1)).squeeze(-1)
    top = logp.topk(k, dim=-1) if k > 0 else (logp[:, :0], logp[:, :0].long())
    top_logprobs, top_ids = (top.values, top.indices) if k > 0 else top
    return chosen, top_ids, top_logprobs
