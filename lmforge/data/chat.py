"""Conversations: the chat file format and the chat template (SFT training is `lmforge.tasks.sft`).

A chat file is JSONL, one conversation per line, in the common "messages" format:

    {"messages": [{"role": "system", "content": "You are terse."},
                  {"role": "user", "content": "Capital of France?"},
                  {"role": "assistant", "content": "Paris."}]}

`ChatTemplate` turns a conversation into token ids. It starts with the end-of-text token (the
document separator the model saw in pretraining); each message is its role's header, its
content, then "\n" after system and user messages and the end-of-text token after assistant
messages — so generation stops by itself at the end of the reply:

    <eos><|system|>\nYou are terse.\n<|user|>\nCapital of France?\n<|assistant|>\nParis.<eos>

The template lives in the model directory (tokenizer_config.json, key "lmforge_chat_template"),
so a fine-tuned model chats with the template it learned; its Jinja equivalent (`jinja()`) is
stored beside it as "chat_template", so the exported model chats the same in `transformers`. SFT trains on the assistant tokens
only (content + the closing <eos>); headers, system and user text are context, never targets.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from ..fileio import open_text
from ..tokenizers import Tokenizer
from .rows import json_objects

ROLES = ("system", "user", "assistant")
TEMPLATE_KEY = "lmforge_chat_template"
Message = dict[str, str]


@dataclass
class ChatTemplate:
    system: str = "<|system|>\n"        # header before a system message
    user: str = "<|user|>\n"            # header before a user message
    assistant: str = "<|assistant|>\n"  # header before an assistant message (and the generation prompt)
    end: str = "\n"                     # after a system or user message (assistant messages end with <eos>)

    def render(self, tokenizer: Tokenizer, messages: list[Message],
               add_generation_prompt: bool = False) -> tuple[list[int], list[bool]]:
        """(ids, is_target): is_target is True exactly at the assistant tokens (content + <eos>).
        With `add_generation_prompt` the ids end with the assistant header, ready to generate."""
        eos = tokenizer.eos_id
        if eos is None:
            raise DataError("chat needs a tokenizer with an end-of-text token (eos_token in tokenizer_config.json) "
                            "to end the assistant's turns; set one")
        ids, target = [eos], [False]

        def add(piece: list[int], is_target: bool) -> None:
            ids.extend(piece)
            target.extend([is_target] * len(piece))

        for m in messages:
            add(tokenizer.encode(getattr(self, m["role"])), False)
            reply = m["role"] == "assistant"
            add(tokenizer.encode(m["content"]), reply)
            add([eos] if reply else tokenizer.encode(self.end), reply)
        if add_generation_prompt:
            add(tokenizer.encode(self.assistant), False)
        return ids, target

    def jinja(self) -> str:
        """This template as Jinja, for `transformers`' apply_chat_template (same text as `render`)."""
        lit = json.dumps       # a JSON string is a valid Jinja string literal
        return ("{{ eos_token }}{% for message in messages %}"
                f"{{% if message['role'] == 'system' %}}{{{{ {lit(self.system)} }}}}"
                f"{{% elif message['role'] == 'user' %}}{{{{ {lit(self.user)} }}}}"
                f"{{% else %}}{{{{ {lit(self.assistant)} }}}}{{% endif %}}"
                "{{ message['content'] }}"
                f"{{% if message['role'] == 'assistant' %}}{{{{ eos_token }}}}{{% else %}}{{{{ {lit(self.end)} }}}}"
                "{% endif %}{% endfor %}"
                f"{{% if add_generation_prompt %}}{{{{ {lit(self.assistant)} }}}}{{% endif %}}")


def chat_template(tokenizer: Tokenizer) -> ChatTemplate | None:
    """The template stored with this tokenizer (None for a model never instruction-tuned)."""
    stored = tokenizer.extra.get(TEMPLATE_KEY)
    return ChatTemplate(**stored) if stored else None


def set_chat_template(tokenizer: Tokenizer, template: ChatTemplate) -> None:
    """Attach `template`; it is written to tokenizer_config.json when the tokenizer is saved."""
    tokenizer.extra[TEMPLATE_KEY] = dataclasses.asdict(template)
    tokenizer.extra["chat_template"] = template.jinja()


def check_messages(messages, where: str) -> list[Message]:
    if not isinstance(messages, list) or not messages:
        raise DataError(f"{where}: \"messages\" must be a non-empty list of {{\"role\", \"content\"}} objects")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise DataError(f"{where}: message {i} is {json.dumps(m, ensure_ascii=False)[:80]}; each message needs "
                            f"\"role\" ({', '.join(ROLES)}) and a string \"content\"")
        if m["role"] == "system" and i > 0:
            raise DataError(f"{where}: a system message may only come first (message {i})")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def read_chat_jsonl(path: str | Path) -> list[list[Message]]:
    """Conversations from a JSONL file; a malformed line is an error naming its line number."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"chat data {path} does not exist; give a .jsonl file with one "
                        f"{{\"messages\": [...]}} conversation per line")
    conversations = []
    with open_text(path) as f:
        for lineno, record in json_objects(enumerate(f, 1), path):
            where = f"{path}:{lineno}"
            if "messages" not in record:
                raise DataError(f"{where} has no \"messages\" field; each line must be {{\"messages\": [...]}}")
            messages = check_messages(record["messages"], where)
            if not any(m["role"] == "assistant" for m in messages):
                raise DataError(f"{where} has no assistant message, so nothing to learn; add the reply or drop it")
            conversations.append(messages)
    if not conversations:
        raise DataError(f"{path} holds no conversations")
    return conversations
