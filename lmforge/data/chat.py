"""Conversations: the chat template and supervised fine-tuning (SFT) batches.

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
so a fine-tuned model chats with the template it learned. SFT trains on the assistant tokens
only (content + the closing <eos>); headers, system and user text are context, never targets.
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import DataError
from ..fileio import open_text
from ..tokenizers import Tokenizer
from ..train.objective import Objective
from .pretrain import lm_loss

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


def chat_template(tokenizer: Tokenizer) -> ChatTemplate | None:
    """The template stored with this tokenizer (None for a model never instruction-tuned)."""
    stored = tokenizer.extra.get(TEMPLATE_KEY)
    return ChatTemplate(**stored) if stored else None


def set_chat_template(tokenizer: Tokenizer, template: ChatTemplate) -> None:
    """Attach `template`; it is written to tokenizer_config.json when the tokenizer is saved."""
    tokenizer.extra[TEMPLATE_KEY] = dataclasses.asdict(template)


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
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path} line {lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where} is not valid JSON ({e.msg} at column {e.colno}); fix or remove it") from None
            if not isinstance(record, dict) or "messages" not in record:
                raise DataError(f"{where} has no \"messages\" field; each line must be {{\"messages\": [...]}}")
            messages = check_messages(record["messages"], where)
            if not any(m["role"] == "assistant" for m in messages):
                raise DataError(f"{where} has no assistant message, so nothing to learn; add the reply or drop it")
            conversations.append(messages)
    if not conversations:
        raise DataError(f"{path} holds no conversations")
    return conversations


class SFTObjective(Objective):
    """Next-token loss on the assistant tokens of chat conversations (right-padded batches).

    Conversations longer than context_length + 1 tokens are cut at the end; any left without an
    assistant token are skipped (with a warning). The last 5% of conversations (at least one)
    are the validation split. The tokenizer gets the chat template (the default one unless it
    already has one), so it is saved with the fine-tuned model.
    """

    name = "sft"
    reports_perplexity = True     # per assistant token

    def __init__(self, path: str | Path, context_length: int, tokenizer: Tokenizer):
        self.template = chat_template(tokenizer) or ChatTemplate()
        set_chat_template(tokenizer, self.template)
        self.pad_id = tokenizer.pad_id or 0
        examples, cut = [], 0
        for messages in read_chat_jsonl(path):
            ids, target = self.template.render(tokenizer, messages)
            cut += len(ids) > context_length + 1
            ids, target = ids[: context_length + 1], target[: context_length + 1]
            if any(target[1:]):
                examples.append((ids, target))
        if cut:
            warnings.warn(f"{cut} conversations in {path} are longer than the context ({context_length + 1} tokens) "
                          f"and were cut at the end", stacklevel=2)
        if not examples:
            raise DataError(f"no conversation in {path} has an assistant token within the first {context_length} "
                            f"tokens; use shorter conversations (or a model with a longer context)")
        n_val = max(1, len(examples) // 20) if len(examples) > 1 else 0
        n_train = len(examples) - n_val
        self.examples = {"train": examples[:n_train], "val": examples[n_train:] or examples}

    def sample(self, split: str, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(len(self.examples[split]), (n,), generator=generator)

    def collate(self, split: str, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        rows = [self.examples[split][i] for i in indices.tolist()]
        T = max(len(ids) for ids, _ in rows) - 1
        x = torch.full((len(rows), T), self.pad_id, dtype=torch.long)          # (B, T) inputs, right-padded
        y = torch.full((len(rows), T), -100, dtype=torch.long)                 # (B, T) targets, -100 = no loss
        for r, (ids, target) in enumerate(rows):
            seq, is_target = torch.tensor(ids), torch.tensor(target)
            x[r, : len(ids) - 1] = seq[:-1]
            y[r, : len(ids) - 1] = torch.where(is_target[1:], seq[1:], -100)
        return {"x": x, "y": y}

    def logits_and_targets(self, model, batch):
        return model(batch["x"]), batch["y"]

    def loss(self, model, batch):
        return lm_loss(*self.logits_and_targets(model, batch))
