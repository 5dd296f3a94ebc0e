"""Turning request text into prompt ids — the model's chat template, plain text, JSON mode —
through the generation package's pieces, so the server prompts a model exactly as
`lmforge generate` and `lmforge chat` do."""

from __future__ import annotations

from ..data.chat import ChatTemplate, chat_template
from ..errors import LmforgeError
from ..generate.core import encode_prompt


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


def chat_prompt(tokenizer, messages: list[dict[str, str]]) -> tuple[list[int], list[str]]:
    """(prompt ids ending with the assistant's header, stop strings that end its turn)."""
    template = chat_template(tokenizer) or ChatTemplate()
    ids, _ = template.render(tokenizer, messages, add_generation_prompt=True)
    return ids, [template.user.strip()]


def json_constraint(tokenizer):
    """A fresh JSON-mode constraint for one sequence (`allowed()` mask, `advance(token)`)."""
    raise LmforgeError("response_format json_object is not available in this build yet; drop response_format")
