"""The shape of requests: `ApiError` (OpenAI's error shape), and the request fields that are not
decoding options (those are `openai_fields.py`'s) — prompts, messages, inputs, `n`, `stream`.

Every check failure is an `ApiError` that the app answers in OpenAI's error shape,
`{"error": {"message", "type", "param", "code"}}`, naming the field. Unknown fields are ignored.
"""

from __future__ import annotations

from ..errors import shown
from ..generate.sampling import MAX_LOGPROBS
from ..options import bounds, value_problem

MAX_N = 8            # choices per request
MAX_INPUTS = 2048    # texts per embeddings / classify request (OpenAI's limit for embeddings)


class ApiError(Exception):
    def __init__(self, message: str, param: str | None = None, status: int = 400,
                 kind: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.message, self.param, self.status, self.kind, self.code = message, param, status, kind, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def field(body: dict, name: str, default, tp: type, check=None):
    """A request field that is not a decoding option, checked by the rules the options use
    (`lmforge.options.value_problem`): its type, a number no option can mean, then `check`."""
    value = body.get(name)
    if value is None:
        return default
    problem = value_problem(value, tp, check)
    if problem:
        raise ApiError(f"'{name}' {problem}, got {shown(value)}", name)
    return value


def text_field(body: dict, name: str, required: bool = True) -> str | None:
    """A text field: a non-empty string (absent and not `required`: None)."""
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise ApiError(f"'{name}' must be a non-empty string, got {shown(value)}", name)
    return value


def flag(body: dict, name: str, default: bool) -> bool:
    """A true / false field of the request."""
    return field(body, name, default, bool)


def choices(body: dict) -> int:
    """`n`: how many continuations of each prompt."""
    return field(body, "n", 1, int, bounds(1, MAX_N))


def prompt_logprobs(body: dict, stream: bool) -> int | None:
    """vLLM's `prompt_logprobs`: score every prompt token, with this many alternatives (none: None)."""
    k = field(body, "prompt_logprobs", None, int, bounds(0, MAX_LOGPROBS))
    if k is not None and stream:
        raise ApiError("'prompt_logprobs' is not available with 'stream': true (as in vLLM); ask without streaming",
                       "prompt_logprobs")
    return k


def stream_options(body: dict) -> tuple[bool, bool]:
    """(stream, include_usage)."""
    stream = flag(body, "stream", False)
    opts = body.get("stream_options")
    if opts is None:
        return stream, False
    if not isinstance(opts, dict):
        raise ApiError(f"'stream_options' must be an object, got {shown(opts)}", "stream_options")
    return stream, flag(opts, "include_usage", False)


def input_texts(body: dict) -> list[str]:
    """'input' of the embeddings and classify routes: a string or a non-empty list of strings."""
    texts = body.get("input")
    texts = [texts] if isinstance(texts, str) else texts
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise ApiError("'input' must be a string or a non-empty list of strings", "input")
    if len(texts) > MAX_INPUTS:
        raise ApiError(f"'input' holds {len(texts)} texts; at most {MAX_INPUTS} are allowed per request", "input")
    return texts


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
            raise ApiError(f"messages[{i}].role is {shown(role)}; this model's chat template knows {known}",
                           f"messages[{i}].role")
        if isinstance(content, list):           # [{"type": "text", "text": ...}, ...]
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise ApiError(f"messages[{i}].content parts must be {{\"type\": \"text\", \"text\": ...}} (this "
                               f"model reads text only)", f"messages[{i}].content")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise ApiError(f"messages[{i}].content must be a string, got {shown(content)}", f"messages[{i}].content")
        out.append({"role": role, "content": content})
    return out
