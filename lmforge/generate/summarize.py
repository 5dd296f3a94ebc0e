"""Summarization with either family. An encoder-decoder (`lmforge train --task seq2seq` on a
document / summary table) decodes the document as `translate` does; a decoder fine-tuned with
`--task sft` on conversations whose user message is a document and whose assistant reply is
its summary gets each document as a user message in its chat template — the prompt format it
was fine-tuned on — and writes the reply. Both take the same options (`SUMMARIZE_OPTIONS`),
beam search by default.

    >>> summarize(model, tokenizer, tokenizer, [document], summarization_config())   # doctest: +SKIP
    ['Debian system administration tools']
"""

from __future__ import annotations

import dataclasses

from ..errors import LmforgeError
from .chat import Chat
from .core import GenerationConfig
from .dispatch import generate
from .seq2seq import TRANSLATE_OPTIONS, translate, verb_config

# the GenerationConfig fields a summary takes, and their defaults: common practice for abstractive
# summarizers (BART and PEGASUS decode with 4 beams and no repeated 3-gram), a maximum that fits a
# paragraph-long summary; measured on the Debian descriptions in docs/summarization.md
SUMMARIZE_OPTIONS = (*TRANSLATE_OPTIONS, "min_new_tokens")
SUMMARIZE_DEFAULTS = {"num_beams": 4, "max_new_tokens": 128, "no_repeat_ngram_size": 3}


def summarization_config(**options) -> GenerationConfig:
    """The decoding options of a summary: `SUMMARIZE_OPTIONS` only, over `SUMMARIZE_DEFAULTS`."""
    return verb_config("summarize", SUMMARIZE_OPTIONS, SUMMARIZE_DEFAULTS, options)


def summarize(model, tokenizer, target_tokenizer, documents: list[str], gen: GenerationConfig | None = None, *,
              batch_size: int = 32) -> list[str]:
    """A summary of each document (empty documents give ""), with an encoder-decoder or a decoder."""
    gen = gen or summarization_config()
    if model.config.family == "seq2seq":
        return translate(model, tokenizer, target_tokenizer, documents, gen, batch_size=batch_size)
    if model.config.family != "decoder":
        raise LmforgeError(f"this model is an {model.config.family}; summarize needs an encoder-decoder (`lmforge "
                           f"train --task seq2seq`) or a decoder fine-tuned on summaries (`--task sft`)")
    chat = Chat(model, tokenizer)
    context = model.config.context_length
    budget = max(context // 2, context - gen.max_new_tokens)            # prompt tokens, leaving room for the summary
    out = [""] * len(documents)
    todo = [i for i, d in enumerate(documents) if d.strip()]
    for start in range(0, len(todo), batch_size):
        chunk = todo[start: start + batch_size]
        prompts = [document_prompt(chat, documents[i], budget) for i in chunk]
        new = min(gen.max_new_tokens, context - max(len(p) for p in prompts))
        turn_start = [] if chat.jinja is not None else [chat.template.user.strip()]   # a new turn ends the reply
        step = dataclasses.replace(gen, temperature=0.0, max_new_tokens=new, min_new_tokens=min(gen.min_new_tokens, new),
                                   stop=[*gen.stop, *turn_start])
        for i, completion in zip(chunk, generate(model, tokenizer, prompts, step)):
            out[i] = completion.text.strip()
    return out


def document_prompt(chat: Chat, document: str, budget: int) -> list[int]:
    """The document as the user's message, ready for the assistant's reply, in at most `budget`
    tokens: a longer document loses its end (the start is what a summary draws on most)."""
    tokenizer = chat.tokenizer
    for attempt in range(4):
        ids = chat.prompt_ids([{"role": "user", "content": document}])
        if len(ids) <= budget:
            return ids
        doc_ids = tokenizer.encode(document)
        document = tokenizer.decode(doc_ids[: max(0, len(doc_ids) - (len(ids) - budget) - 8 * attempt)])
    raise LmforgeError(f"the chat template alone needs more than {budget} tokens of the model's "
                       f"{chat.model.config.context_length}-token context; lower --max-new-tokens")
