"""Supervised fine-tuning on conversations (task `sft`): next-token loss on the assistant tokens
of a chat JSONL file (`lmforge.data.chat` reads it and renders the template)."""

from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ..config import ModelConfig
from ..data.chat import ChatTemplate, chat_template, read_chat_jsonl, set_chat_template
from ..errors import ConfigError, DataError
from ..tokenizers import Tokenizer
from .base import NextTokenTask


class SFTTask(NextTokenTask):
    """Next-token loss on the assistant tokens of chat conversations (right-padded batches).

    Conversations longer than context_length + 1 tokens are cut at the end; any left without an
    assistant token are skipped (with a warning). The last 5% of conversations (at least one)
    are the validation split. The tokenizer gets the chat template (the default one unless it
    already has one), so it is saved with the fine-tuned model.
    """

    name = "sft"                  # perplexity per assistant token

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


def build(cfg, config: ModelConfig, tokenizer) -> SFTTask:
    if config.family != "decoder":
        raise ConfigError(f"task sft needs a decoder model, but {cfg.init_from or cfg.preset} is a {config.family}")
    if tokenizer is None:
        raise ConfigError("task sft fine-tunes an existing model on chats: pass its directory "
                          "(`lmforge finetune MODEL_DIR --task sft`)")
    return SFTTask(cfg.data, config.context_length, tokenizer)
