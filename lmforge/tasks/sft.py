"""Supervised fine-tuning on conversations (task `sft`): next-token loss on the assistant tokens
of a chat JSONL file (`lmforge.data.chat` reads it and renders the template). With
`eval_replies`, every evaluation also writes the last reply of validation conversations and
logs its ROUGE against the real one: the score of a decoder fine-tuned on document -> summary
conversations (`lmforge summarize` gives such a model a document the same way)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..config import ModelConfig
from ..data.chat import ChatTemplate, Message, chat_template, read_chat_jsonl, set_chat_template
from ..errors import ConfigError, DataError
from ..options import at_least, option, validate
from ..tokenizers import Tokenizer
from .base import NextTokenTask

REPLY_TOKENS = 128          # most tokens of a reply written for eval_replies (it ends at <eos> before)


@dataclass
class SFTConfig:
    eval_replies: int = option(0, "sft: at each evaluation, write (greedily) the last assistant reply of this many "
                                  "validation conversations and log its ROUGE against the real reply (0: none)",
                               check=at_least(0))

    def __post_init__(self) -> None:
        validate(self)


class SFTTask(NextTokenTask):
    """Next-token loss on the assistant tokens of chat conversations (right-padded batches).

    Conversations longer than context_length + 1 tokens are cut at the end; any left without an
    assistant token are skipped (with a warning). The last 5% of conversations (at least one)
    are the validation split. The tokenizer gets the chat template (the default one unless it
    already has one), so it is saved with the fine-tuned model.
    """

    name = "sft"                  # perplexity per assistant token
    in_passes = True

    def __init__(self, path: str | Path, context_length: int, tokenizer: Tokenizer, options: SFTConfig | None = None):
        self.options = options or SFTConfig()
        self.template = chat_template(tokenizer) or ChatTemplate()
        set_chat_template(tokenizer, self.template)
        self.tokenizer, self.context_length = tokenizer, context_length
        self.pad_id = tokenizer.pad_id or 0
        examples, conversations, cut = [], [], 0
        for messages in read_chat_jsonl(path):
            ids, target = self.template.render(tokenizer, messages)
            cut += len(ids) > context_length + 1
            ids, target = ids[: context_length + 1], target[: context_length + 1]
            if any(target[1:]):
                examples.append((ids, target))
                conversations.append(messages)
        if cut:
            warnings.warn(f"{cut} conversations in {path} are longer than the context ({context_length + 1} tokens) "
                          f"and were cut at the end", stacklevel=2)
        if not examples:
            raise DataError(f"no conversation in {path} has an assistant token within the first {context_length} "
                            f"tokens; use shorter conversations (or a model with a longer context)")
        n_val = max(1, len(examples) // 20) if len(examples) > 1 else 0
        n_train = len(examples) - n_val
        self.examples = {"train": examples[:n_train], "val": examples[n_train:] or examples}
        self.replies = self._replies(conversations[n_train:] or conversations)

    def sample(self, split: str, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(len(self.examples[split]), (n,), generator=generator)

    def train_examples(self) -> int:
        return len(self.examples["train"])

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


    # ---- written replies (eval_replies) ---------------------------------------------------------
    def _replies(self, conversations: list[list[Message]]) -> list[tuple[list[int], str]]:
        """(prompt ids, the real reply) of the first `eval_replies` validation conversations whose
        prompt — everything before the last assistant message — leaves room for a reply."""
        out = []
        room = self.context_length - min(REPLY_TOKENS, self.context_length // 4)
        for messages in conversations:
            if len(out) == self.options.eval_replies:
                break
            last = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
            prompt = self.template.render(self.tokenizer, messages[:last], add_generation_prompt=True)[0]
            if len(prompt) <= room:
                out.append((prompt, messages[last]["content"]))
        if self.options.eval_replies and not out:
            warnings.warn(f"no validation conversation leaves room for a reply within the context of "
                          f"{self.context_length} tokens; eval_replies logs nothing", stacklevel=3)
        return out

    def evaluate(self, model, device, autocast) -> dict[str, float]:
        from ..evaluate.rouge import ROUGE_TYPES, rouge_scores
        from ..generate import GenerationConfig, generate
        if not self.replies:
            return {}
        longest = max(len(p) for p, _ in self.replies)
        gen = GenerationConfig(temperature=0.0, max_new_tokens=min(REPLY_TOKENS, self.context_length - longest),
                               stop=[self.template.user.strip()], compile=False)  # a new turn ends the reply;
        # compile=False: the model is in training (the default could compile it mid-run)
        written = []
        with autocast():
            for start in range(0, len(self.replies), 16):
                prompts = [p for p, _ in self.replies[start: start + 16]]
                written += [c.text.strip() for c in generate(model, self.tokenizer, prompts, gen)]
        s = rouge_scores(written, [reply for _, reply in self.replies])
        return {f"val_{kind}": s[kind] for kind in ROUGE_TYPES}


def build(cfg, config: ModelConfig, tokenizer) -> SFTTask:
    if config.family != "decoder":
        raise ConfigError(f"task sft needs a decoder model, but {cfg.init_from or cfg.preset} is a {config.family}")
    if tokenizer is None:
        raise ConfigError("task sft fine-tunes an existing model on chats: pass its directory "
                          "(`lmforge finetune MODEL_DIR --task sft`)")
    return SFTTask(cfg.data, config.context_length, tokenizer, cfg.options_for(SFTConfig))
