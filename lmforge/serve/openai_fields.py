"""OpenAI's request fields onto lmforge's one decoding options type, `GenerationConfig`.

`FIELDS` is the one table: each request field, the option it sets, and the server's default
where it differs from `GenerationConfig`'s (OpenAI's defaults: a client written for OpenAI or
vLLM gets what it expects). `NOT_SERVED` says why each other option has no field. The values
are checked by `GenerationConfig` itself, so the server refuses what `lmforge generate` and the
Python API refuse, with the same words; only the field is named as the client spelled it:

    >>> decoding_options({"temperature": 3}, chat=False)
    Traceback (most recent call last):
    lmforge.serve.protocol.ApiError: 'temperature' must be >= 0.0 and <= 2.0, got 3

What is not a decoding option — `n`, `stream`, `echo`, the request's shape — is read by
`protocol.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import OptionError, shown
from ..generate import GenerationConfig
from .protocol import ApiError, flag

MAX_STOPS = 4        # stop strings per request (OpenAI's limit)
UNLIMITED = 1 << 30  # chat without max_tokens: up to the context (the route cuts it to what fits)
SAME = object()      # the server's default is GenerationConfig's


@dataclass(frozen=True)
class OpenAIField:
    name: str                  # the request field
    option: str                # the GenerationConfig field it sets
    default: Any = SAME        # the server's default, where it differs from GenerationConfig's
    note: str = ""             # where the default or the meaning differs, and why


FIELDS = (
    OpenAIField("max_tokens", "max_new_tokens", 16, "OpenAI's completions default (GenerationConfig: 100); "
                "chat has none: up to the context"),
    OpenAIField("max_completion_tokens", "max_new_tokens", note="chat: OpenAI's newer name for max_tokens"),
    OpenAIField("temperature", "temperature", 1.0, "OpenAI's default (GenerationConfig, for `lmforge generate`: 0.8)"),
    OpenAIField("top_p", "top_p"),
    OpenAIField("top_k", "top_k", note="vLLM's field; -1 (vLLM's spelling) or 0: no filter"),
    OpenAIField("min_p", "min_p", note="vLLM's field"),
    OpenAIField("repetition_penalty", "repetition_penalty", note="vLLM's field"),
    OpenAIField("stop", "stop", note=f"a string or a list of at most {MAX_STOPS} (OpenAI's limit)"),
    OpenAIField("seed", "seed", note="with n > 1, choice j samples with seed + j"),
    OpenAIField("logprobs", "logprobs", note="completions: the number of alternatives; chat: true / false"),
    OpenAIField("top_logprobs", "logprobs", note="chat: the number of alternatives (with logprobs: true)"),
    OpenAIField("ignore_eos", "ignore_eos", note="vLLM's field"),
    OpenAIField("no_repeat_ngram_size", "no_repeat_ngram_size", note="Hugging Face's name; defaults to 4 for "
                "encoder-decoders, as `lmforge translate`"),
    OpenAIField("response_format", "json_mode", note='{"type": "json_object"} sets it, {"type": "text"} not'),
)

NOT_SERVED = {
    "greedy": "temperature 0 is greedy",
    "truncate_prompt": "a prompt longer than the context is refused (context_length_exceeded)",
    "compile": "the server's setting (`lmforge serve --compile` / `--no-compile`), not a request's",
    "draft_tokens": "speculative decoding is `lmforge generate --draft`",
    "num_beams": "beam search is `lmforge generate` / `lmforge translate`",
    "length_penalty": "beam search only",
    "early_stopping": "beam search only",
    "min_new_tokens": "`lmforge generate` / `lmforge summarize` (vLLM's min_tokens: the scheduler ends a reply at "
                      "its first <eos>)",
    "sink_tokens": "a request stays within the context; max_tokens is cut to what fits",
}


def decoding_options(body: dict, chat: bool, no_repeat_ngram_size: int = 0) -> GenerationConfig:
    """The decoding options of a completions (or chat) request body, checked by GenerationConfig;
    a refused value is an ApiError naming the field as the client sent it."""
    values: dict[str, Any] = {}                # option -> value
    names: dict[str, str] = {}                 # option -> the request field it came from
    for field in FIELDS:
        value = body.get(field.name)
        if value is not None and field.name not in _SHAPED:
            values[field.option], names[field.option] = value, field.name
    if chat and body.get("max_completion_tokens") is None and body.get("max_tokens") is None:
        values["max_new_tokens"] = UNLIMITED
    _logprobs(body, chat, values, names)
    _stops(body, values)
    _response_format(body, values)
    defaults = {f.option: f.default for f in FIELDS if f.default is not SAME}
    defaults["no_repeat_ngram_size"] = no_repeat_ngram_size
    try:
        return GenerationConfig(**{**defaults, **values})
    except OptionError as e:
        name = names.get(e.field, e.field)
        raise ApiError(f"'{name}' {e.problem}, got {shown(e.value)}", name) from None


# the fields whose request shape differs from the option's: read by the functions below
_SHAPED = {"max_completion_tokens", "logprobs", "top_logprobs", "stop", "response_format"}


def _logprobs(body: dict, chat: bool, values: dict, names: dict) -> None:
    if body.get("max_completion_tokens") is not None and chat:
        values["max_new_tokens"], names["max_new_tokens"] = body["max_completion_tokens"], "max_completion_tokens"
    if not chat:
        if body.get("logprobs") is not None:
            values["logprobs"], names["logprobs"] = body["logprobs"], "logprobs"
        return
    want = flag(body, "logprobs", False)
    top = body.get("top_logprobs")
    if top is not None and not want:
        raise ApiError("'top_logprobs' needs 'logprobs': true", "top_logprobs")
    if want:
        values["logprobs"], names["logprobs"] = (0 if top is None else top), "top_logprobs"


def _stops(body: dict, values: dict) -> None:
    stop = body.get("stop")
    if stop is None:
        return
    if isinstance(stop, list) and len(stop) > MAX_STOPS:
        raise ApiError(f"'stop' holds {len(stop)} strings; at most {MAX_STOPS} are allowed", "stop")
    stops = [stop] if isinstance(stop, str) else stop
    values["stop"] = [s for s in stops if s != ""] if isinstance(stops, list) else stops


def _response_format(body: dict, values: dict) -> None:
    fmt = body.get("response_format")
    if fmt is None:
        return
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object"):
        raise ApiError(f"'response_format' must be {{\"type\": \"text\"}} or {{\"type\": \"json_object\"}}, "
                       f"got {shown(fmt)}", "response_format")
    values["json_mode"] = fmt["type"] == "json_object"
