"""A conversation with a model: the chat template renders the turns, `generate` streams the
reply, and the oldest turns are dropped when the conversation outgrows the context window.

    >>> chat = Chat(lm.module, lm.tokenizer, system="Answer briefly.")    # doctest: +SKIP
    >>> chat.reply("What is a list?")                                       # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import sys
import warnings
from dataclasses import dataclass
from typing import Callable, TextIO

from ..data.chat import ChatTemplate, Message, chat_template
from ..errors import LmforgeError
from ..fileio import read_stdin_line
from ..options import device_name, option, validate
from .chat_template import chat_ids, jinja_template
from .core import GenerationConfig
from .dispatch import generate


class Chat:
    """The conversation so far (`messages`) and how to continue it."""

    def __init__(self, model, tokenizer, system: str = "", gen: GenerationConfig | None = None, draft=None):
        self.model, self.tokenizer, self.draft = model, tokenizer, draft
        self.gen = gen or GenerationConfig(max_new_tokens=200)
        self.template = chat_template(tokenizer)                 # lmforge's own (what SFT trained with)
        self.jinja = jinja_template(tokenizer) if self.template is None else None   # a Hugging Face model's
        if self.jinja is not None:
            chat_ids(tokenizer, [{"role": "user", "content": "hi"}])   # a template that does not render fails now
        elif self.template is None:
            warnings.warn("this model has no chat template (it was not instruction-tuned with `lmforge finetune "
                          "--task sft`); using the default one", stacklevel=2)
            self.template = ChatTemplate()
        self.system = [{"role": "system", "content": system}] if system else []
        self.messages: list[Message] = []       # user and assistant turns, oldest first
        self.dropped = 0                        # turns dropped to stay within the context

    def prompt_ids(self, messages: list[Message]) -> list[int]:
        if self.jinja is not None:
            return chat_ids(self.tokenizer, self.system + messages, add_generation_prompt=True)
        return self.template.render(self.tokenizer, self.system + messages, add_generation_prompt=True)[0]

    def _fit(self, messages: list[Message], budget: int) -> tuple[list[Message], list[int]]:
        """Drop the oldest user/assistant exchanges until the prompt fits in `budget` tokens."""
        while True:
            ids = self.prompt_ids(messages)
            if len(ids) <= budget:
                return messages, ids
            if len(messages) <= 1:
                raise LmforgeError(f"the message needs {len(ids)} tokens (with the system prompt and template) but "
                                   f"only {budget} of the model's {self.model.config.context_length}-token context "
                                   f"are left for it after the reply's --max-new-tokens; send a shorter message")
            messages = messages[2:]
            self.dropped += 2

    def reply(self, text: str, stream: Callable[[str], None] | None = None) -> str:
        """Add the user's `text`, generate (and stream) the assistant's reply, return it."""
        context = self.model.config.context_length
        reserve = min(self.gen.max_new_tokens, context // 4)           # room kept for the reply
        messages, ids = self._fit(self.messages + [{"role": "user", "content": text}], context - reserve)
        turn_start = [] if self.jinja is not None else [self.template.user.strip()]   # a new turn ends the reply
        gen = dataclasses.replace(self.gen, max_new_tokens=min(self.gen.max_new_tokens, context - len(ids)),
                                  stop=[*self.gen.stop, *turn_start])
        completion = generate(self.model, self.tokenizer, [ids], gen, draft=self.draft,
                              stream=None if stream is None else lambda _, piece: stream(piece))[0]
        reply = completion.text.strip()
        self.messages = messages + [{"role": "assistant", "content": reply}]
        return reply

    def reset(self) -> None:
        self.messages, self.dropped = [], 0


@dataclass
class ChatConfig:
    model_dir: str = option(None, "model directory (ideally instruction-tuned with `finetune --task sft`)",
                            positional=True)
    system: str = option("", "system prompt that starts the conversation")
    draft: str | None = option(None, "draft model directory for speculative decoding")
    device: str = option("auto", "auto, cpu or cuda", check=device_name)
    dtype: str = option("auto", "auto, float32, bfloat16")

    def __post_init__(self) -> None:
        validate(self)


def chat_loop(chat: Chat, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    """Read the user's messages line by line (a terminal or a pipe; default sys.stdin) and stream
    the replies. End of input (Ctrl-D) or /exit ends the chat; /reset starts over. Returns the
    number of replies."""
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    interactive = stdin.isatty()
    if interactive:
        stdout.write("chat: type a message and press Enter; /reset starts over, /exit or Ctrl-D ends\n")
    replies = 0
    while True:
        if interactive:
            stdout.write("you> ")
            stdout.flush()
        line = read_stdin_line(stdin)
        if not line or line.strip() == "/exit":
            return replies
        if line.strip() == "/reset":
            chat.reset()
            continue
        if not line.strip():
            continue
        stdout.write("assistant> ")
        stdout.flush()
        before = chat.dropped
        try:
            chat.reply(line.rstrip("\n"), stream=lambda piece: (stdout.write(piece), stdout.flush()))
        except LmforgeError as e:
            stdout.write(f"\n[{e}]\n")
            continue
        stdout.write("\n")
        replies += 1
        if chat.dropped > before:
            stdout.write(f"[dropped the oldest {chat.dropped - before} turns to stay within the context]\n")
