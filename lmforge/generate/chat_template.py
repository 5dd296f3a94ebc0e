"""Chat templates as Jinja, the way Hugging Face models ship them.

A model's `tokenizer_config.json` may carry a Jinja `chat_template` (Llama 3, ChatML / Qwen,
Gemma, Zephyr, ...). `render_chat` renders it in jinja2's `ImmutableSandboxedEnvironment` — a
template may loop, branch and call `raise_exception(message)`, but cannot reach Python
internals (attribute access such as `__class__` is refused) — with the variables `transformers`
passes: `messages`, `add_generation_prompt` and the special tokens (`bos_token`, `eos_token`, ...).
`chat_ids` then tokenizes the text as `transformers`' `apply_chat_template` does (special-token
text such as `<|im_start|>` becomes its id; nothing else is added).

Names other modules build on:

    render_chat(template, messages, add_generation_prompt=True, **special_tokens) -> str
    chat_ids(tokenizer, messages, add_generation_prompt=True) -> list[int]   # the tokenizer's own template
    jinja_template(tokenizer) -> str | None                                   # its Jinja source, if any

lmforge's own template (`data.chat.ChatTemplate`, what `finetune --task sft` trains with) is
stored beside its Jinja equivalent (`ChatTemplate.jinja()`), so an exported model chats the same
in `transformers`.

    >>> render_chat("{% for m in messages %}[{{ m.role }}] {{ m.content }}\\n{% endfor %}",
    ...             [{"role": "user", "content": "hi"}])
    '[user] hi\\n'
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache

from ..errors import LmforgeError

TEMPLATE_KEY = "chat_template"      # the key transformers reads in tokenizer_config.json


class TemplateRaised(Exception):
    """What a template's `raise_exception(message)` raises."""


def _raise_exception(message: str):
    raise TemplateRaised(message)


def _tojson(value, ensure_ascii: bool = False, indent=None, separators=None, sort_keys: bool = False):
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@lru_cache(maxsize=32)
def _compile(source: str):
    from jinja2.ext import loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)


def render_chat(template: str, messages: list[dict], add_generation_prompt: bool = True, **variables) -> str:
    """The conversation rendered by the Jinja `template`; a template that fails to compile or to
    render (a syntax error, its own raise_exception, a sandbox violation) is a LmforgeError
    naming the error."""
    from jinja2 import TemplateError
    from jinja2.exceptions import SecurityError
    try:
        return _compile(template).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                         **variables)
    except SecurityError as e:
        raise LmforgeError(f"the chat template tried something the sandbox forbids ({e}); it was refused — "
                           f"use a template that only formats the messages") from None
    except TemplateRaised as e:
        raise LmforgeError(f"the chat template refused the conversation: {e}") from None
    except TemplateError as e:
        line = getattr(e, "lineno", None)
        where = f" (line {line})" if line else ""
        raise LmforgeError(f"the chat template does not render: {type(e).__name__}{where}: {e}; fix "
                           f"chat_template in tokenizer_config.json") from None
    except (TypeError, ValueError, KeyError, AttributeError, IndexError) as e:
        raise LmforgeError(f"the chat template does not render: {type(e).__name__}: {e}; fix chat_template "
                           f"in tokenizer_config.json") from None


def jinja_template(tokenizer) -> str | None:
    """The tokenizer's Jinja chat template (a name -> template dict picks "default")."""
    source = tokenizer.extra.get(TEMPLATE_KEY)
    if isinstance(source, list):            # transformers also stores [{"name": ..., "template": ...}]
        source = {t.get("name"): t.get("template") for t in source if isinstance(t, dict)}
    if isinstance(source, dict):
        source = source.get("default")
    return source if isinstance(source, str) and source.strip() else None


def special_token_variables(tokenizer) -> dict[str, str]:
    """bos_token, eos_token, ... as the template sees them ("" for a role the tokenizer lacks)."""
    return {f"{role}_token": tok or "" for role, tok in tokenizer.special.items()}


def encode_with_specials(tokenizer, text: str) -> list[int]:
    """Token ids of template text, where special-token text (`<|im_start|>`) is that token."""
    hf = tokenizer.hf
    before = hf.encode_special_tokens
    hf.encode_special_tokens = False
    try:
        return hf.encode(text, add_special_tokens=False).ids
    finally:
        hf.encode_special_tokens = before


def chat_ids(tokenizer, messages: list[dict], add_generation_prompt: bool = True,
             template: str | None = None) -> list[int]:
    """The conversation's token ids under the tokenizer's Jinja template (or `template`)."""
    source = template or jinja_template(tokenizer)
    if source is None:
        raise LmforgeError("this tokenizer has no Jinja chat_template in tokenizer_config.json")
    text = render_chat(source, messages, add_generation_prompt, **special_token_variables(tokenizer))
    return encode_with_specials(tokenizer, text)
