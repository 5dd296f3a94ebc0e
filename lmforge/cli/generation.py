"""The verbs that write text with a model: generate (prompts in, completions out), chat (a
conversation in the terminal) and serve (an OpenAI-compatible HTTP server)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass

from ..errors import LmforgeError
from ..generate import GenerationConfig
from ..generate.chat import ChatConfig
from ..options import device_name, from_args, option, validate
from ..serve import ServeConfig
from .core import options_of, verb


@dataclass
class GenerateCommandConfig:
    model_dir: str = option(None, "model directory", positional=True)
    prompts: list[str] = option([], "prompt(s); several prompts decode as one padded batch", positional=True)
    prompt_file: str | None = option(None, "read prompts from this file, one per line")
    device: str = option("auto", "auto, cpu or cuda", check=device_name)
    dtype: str = option("auto", "auto, float32, bfloat16")
    stream: bool = option(True, "print tokens as they are generated (single prompt)")
    json: bool = option(False, "print one JSON object per completion (text, finish reason, speed)")
    draft: str | None = option(None, "speculative decoding: a smaller model directory with the same tokenizer "
                                     "drafts --draft-tokens tokens per step for the model to verify")

    def __post_init__(self) -> None:
        validate(self)


@verb("generate", "generate text from a model directory")
@options_of(GenerateCommandConfig, GenerationConfig)
def _generate(ns):
    from ..api import load
    from ..generate import generate
    args = from_args(GenerateCommandConfig, ns)
    gen = from_args(GenerationConfig, ns)
    prompts = list(args.prompts)
    if args.prompt_file:
        from ..fileio import read_text
        prompts += [line for line in read_text(args.prompt_file).splitlines() if line.strip()]
    prompts = prompts or [""]
    lm = load(args.model_dir, device=args.device, dtype=args.dtype)
    draft = load(args.draft, device=args.device, dtype=args.dtype) if args.draft else None
    def write(_, piece):
        sys.stdout.write(piece)
        sys.stdout.flush()
    if gen.logprobs is not None and not args.json:
        raise LmforgeError("--logprobs is printed with --json; add --json")
    stream = write if args.stream and len(prompts) == 1 and not args.json else None
    if stream is not None:
        sys.stdout.write(prompts[0])
    completions = generate(lm.module, lm.tokenizer, prompts, gen, stream=stream, draft=lm.draft_module(draft))
    for prompt, c in zip(prompts, completions):
        if args.json:
            extra = {k: round(c.stats[k], 4) if isinstance(c.stats[k], float) else c.stats[k]
                     for k in ("acceptance_rate", "tokens_per_step", "window", "reencodes", "compiled") if k in c.stats}
            if c.logprobs is not None:
                extra["logprobs"] = c.logprobs
            print(json.dumps({"prompt": prompt, "text": c.text, "finish_reason": c.finish_reason,
                              "tokens": len(c.ids), "tokens_per_s": round(c.stats["tokens_per_s"], 1),
                              **extra}, ensure_ascii=False))
        elif stream is not None:
            print()
        else:
            print(f"--- {prompt}{c.text}")
    if draft is not None and not args.json:
        sys.stdout.flush()
        st = completions[0].stats
        print(f"speculative decoding: {st['accepted']} of {st['drafted']} drafted tokens accepted "
              f"({100 * st['acceptance_rate']:.1f}%), {st['tokens_per_step']:.2f} tokens per model step, "
              f"{st['tokens_per_s']:.1f} tokens/s", file=sys.stderr)
    return 0


@verb("chat", "chat with a model in the terminal (reads your messages from stdin, streams the replies)")
@options_of(ChatConfig, GenerationConfig, skip=("stop",), defaults={"max_new_tokens": 200, "temperature": 0.7})
def _chat(ns):
    from ..api import load
    from ..generate.chat import Chat, chat_loop
    args, gen = from_args(ChatConfig, ns), from_args(GenerationConfig, ns)     # both checked before any work
    lm = load(args.model_dir, device=args.device, dtype=args.dtype)
    draft = load(args.draft, device=args.device, dtype=args.dtype) if args.draft else None
    chat_loop(Chat(lm.module, lm.tokenizer, args.system, gen, lm.draft_module(draft)))
    return 0


@verb("serve", "an OpenAI-compatible HTTP server for decoders and encoder-decoders (continuous batching), with a "
                "playground page at /")
@options_of(ServeConfig)
def _serve(ns):
    from ..serve import serve
    serve(from_args(ServeConfig, ns))
    return 0
