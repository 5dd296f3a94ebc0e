"""The OpenAI request fields the server reads, checked one by one, and the response shapes.

Every check failure is an `ApiError` that the app answers in OpenAI's error shape,
`{"error": {"message", "type", "param", "code"}}`, naming the field. Unknown fields are ignored.
"""

from __future__ import annotations

import time
import uuid

from ..generate.sampling import MAX_LOGPROBS
from .sampling import SamplingParams

MAX_N = 8            # choices per request
MAX_STOPS = 4        # stop strings per request (OpenAI's limit)


class ApiError(Exception):
    def __init__(self, message: str, param: str | None = None, status: int = 400,
                 kind: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.status, self.kind, self.code = message, param, status, kind, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def _number(body: dict, name: str, default, lo=None, hi=None, *, integer=False, lo_open=False):
    value = body.get(name)
    if value is None:
        return default
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise ApiError(f"'{name}' must be {kind}, got {value!r}", name)
    if (lo is not None and (value <= lo if lo_open else value < lo)) or (hi is not None and value > hi):
        low = "" if lo is None else (f"> {lo}" if lo_open else f">= {lo}")
        high = "" if hi is None else f"<= {hi}"
        raise ApiError(f"'{name}' must be {' and '.join(x for x in (low, high) if x)}, got {value!r}", name)
    return value


def _bool(body: dict, name: str, default: bool) -> bool:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ApiError(f"'{name}' must be true or false, got {value!r}", name)
    return value


def _stops(body: dict) -> list[str]:
    stop = body.get("stop")
    if stop is None:
        return []
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise ApiError(f"'stop' must be a string or a list of strings, got {stop!r}", "stop")
    if len(stops) > MAX_STOPS:
        raise ApiError(f"'stop' holds {len(stops)} strings; at most {MAX_STOPS} are allowed", "stop")
    return [s for s in stops if s]


def sampling_params(body: dict, chat: bool, default_max_tokens: int | None,
                    default_no_repeat_ngram_size: int = 0) -> tuple[SamplingParams, int, bool]:
    """(params, n, json_mode) from a completions or chat completions body."""
    max_tokens = body.get("max_completion_tokens", None) if chat else None
    name = "max_completion_tokens" if max_tokens is not None else "max_tokens"
    max_tokens = _number(body, name, default_max_tokens, 1, integer=True)
    if chat:
        want = _bool(body, "logprobs", False)
        top = _number(body, "top_logprobs", None, 0, MAX_LOGPROBS, integer=True)
        if top is not None and not want:
            raise ApiError("'top_logprobs' needs 'logprobs': true", "top_logprobs")
        logprobs, echo_logprobs = ((top or 0) if want else None), False
    else:
        logprobs = _number(body, "logprobs", None, 0, MAX_LOGPROBS, integer=True)
        echo_logprobs = logprobs is not None and _bool(body, "echo", False)
    top_k = _number(body, "top_k", None, -1, integer=True)
    json_mode = False
    fmt = body.get("response_format")
    if fmt is not None:
        if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object"):
            raise ApiError(f"'response_format' must be {{\"type\": \"text\"}} or {{\"type\": \"json_object\"}}, "
                           f"got {fmt!r}", "response_format")
        json_mode = fmt["type"] == "json_object"
    params = SamplingParams(
        max_tokens=max_tokens if max_tokens is not None else 1 << 30,
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0, lo_open=True),
        top_k=top_k if top_k and top_k > 0 else None,
        min_p=_number(body, "min_p", 0.0, 0.0, 1.0),
        repetition_penalty=_number(body, "repetition_penalty", 1.0, 0.0, lo_open=True),
        stop=_stops(body),
        seed=_number(body, "seed", None, integer=True),
        logprobs=logprobs, echo_logprobs=echo_logprobs,
        ignore_eos=_bool(body, "ignore_eos", False),
        no_repeat_ngram_size=_number(body, "no_repeat_ngram_size", default_no_repeat_ngram_size, 0, integer=True))
    n = _number(body, "n", 1, 1, MAX_N, integer=True)
    return params, n, json_mode


def stream_options(body: dict) -> tuple[bool, bool]:
    """(stream, include_usage)."""
    stream = _bool(body, "stream", False)
    opts = body.get("stream_options")
    if opts is None:
        return stream, False
    if not isinstance(opts, dict):
        raise ApiError(f"'stream_options' must be an object, got {opts!r}", "stream_options")
    return stream, _bool(opts, "include_usage", False)


def completion_prompts(body: dict) -> list[str | list[int]]:
    """'prompt' as a string, a list of strings, a list of token ids or a list of those lists."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            return [prompt]
        if all(isinstance(p, str) for p in prompt):
            return list(prompt)
        if all(isinstance(p, list) and p and all(isinstance(t, int) and not isinstance(t, bool) for t in p)
               for p in prompt):
            return [list(p) for p in prompt]
    raise ApiError("'prompt' must be a string, a list of strings, a list of token ids or a list of such lists "
                   "(not empty)", "prompt")


def chat_messages(body: dict, roles: tuple[str, ...] | None) -> list[dict[str, str]]:
    """'messages' as [{"role", "content"}] with string content (or a list of text parts); `roles`:
    the ones the template knows (None: any string, a Jinja template judges)."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError("'messages' must be a non-empty list of {\"role\", \"content\"} objects", "messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise ApiError(f"messages[{i}] must be an object with \"role\" and \"content\"", f"messages[{i}]")
        role, content = m.get("role"), m.get("content")
        if not isinstance(role, str) or (roles is not None and role not in roles):
            known = ", ".join(roles) if roles is not None else "string roles"
            raise ApiError(f"messages[{i}].role is {role!r}; this model's chat template knows {known}",
                           f"messages[{i}].role")
        if isinstance(content, list):           # [{"type": "text", "text": ...}, ...]
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise ApiError(f"messages[{i}].content parts must be {{\"type\": \"text\", \"text\": ...}} (this "
                               f"model reads text only)", f"messages[{i}].content")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise ApiError(f"messages[{i}].content must be a string, got {content!r}", f"messages[{i}].content")
        out.append({"role": role, "content": content})
    return out


# ---- responses -----------------------------------------------------------------------------------
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
