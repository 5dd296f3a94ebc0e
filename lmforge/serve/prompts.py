"""Turning request text into prompt ids — the model's chat template, plain text, JSON mode, an
encoder-decoder's source — through the generation package's pieces, so the server prompts a
model exactly as `lmforge generate`, `lmforge chat` and `lmforge translate` do."""

from __future__ import annotations

from ..data.chat import ROLES, ChatTemplate, chat_template
from ..data.pairs import source_ids
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


def source_prompt(tokenizer, text: str) -> list[int]:
    """An encoder-decoder's prompt: the source text's ids and <eos>, as `lmforge translate` reads it."""
    if not text.strip():
        raise LmforgeError("empty prompt: give the text to translate (or summarise)")
    return source_ids(tokenizer, text)


def chat_source(tokenizer, messages: list[dict[str, str]]) -> list[int]:
    """An encoder-decoder has no chat template: a chat request's source is its last message,
    which must be the user's (a chat UI in front of a translation model translates what is typed)."""
    if messages[-1]["role"] != "user":
        raise LmforgeError(f"the last message is the {messages[-1]['role']}'s; an encoder-decoder model answers "
                           f"(translates) the last user message, so end 'messages' with one")
    return source_prompt(tokenizer, messages[-1]["content"])
