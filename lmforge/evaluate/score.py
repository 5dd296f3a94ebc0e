"""Log-probabilities of given text: per-token scores (`lmforge score`) and the log-likelihood of
a continuation after a context (what lm-eval-style multiple-choice scoring needs).

    >>> lm.loglikelihood("The capital of France is", " Paris")     # doctest: +SKIP
    (-2.31, True)          # sum of log p over the continuation's tokens, and whether greedy would write it
"""

from __future__ import annotations

from ..errors import DataError
from .perplexity import scored_logprobs


def _start(tokenizer) -> list[int]:
    """The end-of-text token the model saw before every document (so the first token is scored)."""
    return [tokenizer.eos_id] if tokenizer.eos_id is not None else []


def score_text(model, tokenizer, text: str, stride: int | None = None) -> dict:
    """{"tokens": [{"token", "id", "logprob"}...], "logprob": their sum, "greedy": all tokens were argmax}.
    Texts longer than the context are scored with a sliding window (`stride`, default half the context)."""
    if not text:
        raise DataError("the text to score is empty; give some text")
    ids = _start(tokenizer) + tokenizer.encode(text, bos=tokenizer.add_bos)
    logprobs, greedy, _ = scored_logprobs(model, ids, stride=stride or max(1, model.config.context_length // 2))
    scored = ids[1:]
    tokens = [{"token": tokenizer.decode([i], skip_special_tokens=False), "id": i, "logprob": float(lp)}
              for i, lp in zip(scored, logprobs.tolist())]
    return {"tokens": tokens, "logprob": float(logprobs.double().sum()), "greedy": bool(greedy.all())}


def loglikelihood(model, tokenizer, context: str, continuation: str) -> tuple[float, bool]:
    """(sum of log p(continuation tokens | context), whether greedy decoding would produce exactly
    them). The pair is tokenized as one text and split where the context's tokens end, as
    lm-eval does, so a word that merges across the boundary is counted in the continuation."""
    if not continuation:
        raise DataError("the continuation to score is empty; give the text whose likelihood you want")
    whole = _start(tokenizer) + tokenizer.encode(context + continuation, bos=tokenizer.add_bos)
    ctx = _start(tokenizer) + tokenizer.encode(context, bos=tokenizer.add_bos)
    split = 0
    while split < min(len(ctx), len(whole) - 1) and ctx[split] == whole[split]:
        split += 1
    if split == 0:                       # no start token and nothing shared: score from the second token
        split = 1
    logprobs, greedy, _ = scored_logprobs(model, whole, stride=max(1, model.config.context_length // 2))
    return float(logprobs[split - 1:].double().sum()), bool(greedy[split - 1:].all())
