"""Turning request text into prompt ids — the model's chat template, plain text, JSON mode —
through the generation package's pieces, so the server prompts a model exactly as
`lmforge generate` and `lmforge chat` do."""

from __future__ import annotations

from ..data.chat import ROLES, ChatTemplate, chat_template
from ..errors import LmforgeError
from ..generate.chat_template import chat_ids, jinja_template
from ..generate.core import encode_prompt
from ..generate.json_mode import JsonState, json_table


def encode_text(tokenizer, text: str) -> list[int]:
    """A completion prompt's ids (bos first when the tokenizer says so); an empty prompt starts
    from the end-of-text token, as `lmforge generate ""` does."""
    ids = encode_prompt(tokenizer, text)
    if not ids:
        start = tokenizer.eos_id if tokenizer.eos_id is not None else tokenizer.bos_id
        ids = [start] if start is not None else []
    if not ids:
        raise LmforgeError("empty prompt: give at least one token of text")
    return ids


def chat_roles(tokenizer) -> tuple[str, ...] | None:
    """The roles lmforge's template knows; None for a Jinja template (it judges roles itself)."""
    return None if chat_template(tokenizer) is None and jinja_template(tokenizer) is not None else ROLES


def chat_prompt(tokenizer, messages: list[dict[str, str]]) -> tuple[list[int], list[str]]:
    """(prompt ids ending with the assistant's header, stop strings that end its turn), rendered
    as `lmforge chat` renders them: lmforge's own template, else the tokenizer's Jinja
    `chat_template` (a Hugging Face model's), else the default template."""
    template = chat_template(tokenizer)
    if template is None and jinja_template(tokenizer) is not None:
        return chat_ids(tokenizer, messages, add_generation_prompt=True), []
    template = template or ChatTemplate()
    ids, _ = template.render(tokenizer, messages, add_generation_prompt=True)
    return ids, [template.user.strip()]


def json_constraint(tokenizer, vocab_size: int) -> JsonState:
    """A fresh JSON-mode state for one sequence (the per-tokenizer mask table is built once)."""
    return JsonState(json_table(tokenizer, vocab_size))
