"""The shapes of answers: ids, timestamps, usage, log-probabilities in OpenAI's two shapes, and
server-sent events."""

from __future__ import annotations

import json
import time
import uuid


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def now() -> int:
    return int(time.time())


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


class LogprobFormatter:
    """Log-probability entries (token, logprob, [(alt, logprob)]) in OpenAI's two shapes."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self._strings: dict[int, str] = {}

    def token(self, i: int) -> str:
        s = self._strings.get(i)
        if s is None:
            s = self._strings[i] = self.tokenizer.decode([i], skip_special_tokens=False)
        return s

    def chat(self, entries: list[tuple]) -> dict:
        def item(tok, lp):
            s = self.token(tok)
            return {"token": s, "logprob": lp, "bytes": list(s.encode("utf-8"))}
        return {"content": [{**item(tok, lp), "top_logprobs": [item(a, alp) for a, alp in alts]}
                            for tok, lp, alts in entries]}

    def legacy(self, entries: list[tuple | None], first_ids: list[int] | None = None, offset: int = 0) -> dict:
        """Completions shape; `entries` may start with None (the first prompt token, echoed)."""
        tokens, token_logprobs, top, offsets = [], [], [], []
        for i, e in enumerate(entries):
            tok = e[0] if e is not None else first_ids[i]
            s = self.token(tok)
            tokens.append(s)
            offsets.append(offset)
            offset += len(s)
            token_logprobs.append(None if e is None else e[1])
            top.append(None if e is None else {self.token(a): alp for a, alp in e[2]})
        return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top, "text_offset": offsets}

    def prompt(self, entries: list[tuple | None], k: int) -> list[dict | None]:
        """vLLM's `prompt_logprobs`: per prompt token (None for the first) {token id: {"logprob",
        "rank", "decoded_token"}}, the prompt's own token first, then the top `k` (rank 1..k);
        -inf is written -9999.0, as vLLM does (JSON has no -inf)."""
        def item(tok: int, lp: float, rank: int) -> dict:
            return {"logprob": max(lp, -9999.0), "rank": rank, "decoded_token": self.token(tok)}
        out: list[dict | None] = []
        for e in entries:
            if e is None:
                out.append(None)
                continue
            tok, lp, alts, rank = e
            position = {str(tok): item(tok, lp, rank)}
            for r, (a, alp) in enumerate(alts[:k], 1):
                position.setdefault(str(a), item(a, alp, r))
            out.append(position)
        return out


def sse(obj: dict) -> str:
    """One server-sent event holding `obj` as JSON."""
    return f"data: {json.dumps(obj, ensure_ascii=False)}\n\n"
