"""`lmforge VERB ...` — a thin layer: each verb builds the same dataclass the Python API takes.

Errors a user can fix (LmforgeError) print as one line without a traceback (exit code 2).
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import dataclass
from typing import Callable

from .errors import LmforgeError
from .options import add_options, from_args, option

VERBS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def verb(name: str, help: str):
    """Register `lmforge NAME` running the decorated function with the parsed namespace; its
    flags come from `@options_of(...)` (applied first, below `@verb`)."""
    def wrap(run):
        VERBS[name] = (help, getattr(run, "options", lambda parser: None), run)
        return run
    return wrap


def options_of(*classes, skip: tuple[str, ...] = (), defaults: dict | None = None):
    """Flags for every field of these dataclasses (`defaults` overrides their defaults)."""
    def deco(run):
        def add(parser):
            for cls in classes:
                add_options(parser, cls, skip=skip, defaults=defaults)
        run.options = add
        return run
    return deco


def print_summary(summary: dict) -> None:
    """The last line of a training verb: final losses and where the model is."""
    shown = {k: summary[k] for k in ("step", "train_loss", "val_loss", "val_ppl") if k in summary}
    print("finished: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items())
          + f"; model directory {summary['out']}" + (f"; merged model {summary['merged']}" if "merged" in summary
                                                      else ""))


# ---------------------------------------------------------------------------- quickstart
from .quickstart import QuickstartConfig  # noqa: E402


@verb("quickstart", "prepare, train and sample a small GPT on the Python docs bundled with Python (no arguments needed)")
@options_of(QuickstartConfig)
def _quickstart(ns):
    from .quickstart import quickstart
    quickstart(from_args(QuickstartConfig, ns))
    return 0


# ------------------------------------------------------------------------------- prepare
from .data.shards import PrepareConfig  # noqa: E402


@verb("prepare", "tokenize text files / directories / .jsonl into train and validation shards")
@options_of(PrepareConfig)
def _prepare(ns):
    from .data.shards import prepare
    meta = prepare(from_args(PrepareConfig, ns))
    print(f"wrote {ns.out}: {meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens "
          f"({meta['dtype']}), {meta['bytes']:,} bytes, {meta['bytes_per_token']:.2f} bytes/token, "
          f"vocabulary {meta['vocab_size']} ({meta['tokenizer']})")
    return 0


# --------------------------------------------------------------------------------- train
from .train.trainer import TrainConfig  # noqa: E402


@verb("train", "train a model on a prepared data directory (also under torchrun for DDP)")
@options_of(TrainConfig)
def _train(ns):
    from .train import train
    summary = train(from_args(TrainConfig, ns))
    print_summary(summary)
    return 0


# ------------------------------------------------------------------------------ finetune
from .adapt.lora import LoRAConfig  # noqa: E402
from .train.finetune import FINETUNE_DEFAULTS, FinetuneArgs  # noqa: E402


@verb("finetune", "fine-tune a model directory on new data, in full or with LoRA adapters (the task picks the "
                  "objective)")
@options_of(FinetuneArgs, LoRAConfig, TrainConfig, skip=("init_from", "objective", "preset"),
            defaults=FINETUNE_DEFAULTS)
def _finetune(ns):
    from .train.finetune import finetune
    summary = finetune(from_args(FinetuneArgs, ns), from_args(TrainConfig, ns), from_args(LoRAConfig, ns))
    print_summary(summary)
    return 0


# ------------------------------------------------------------------------------ generate
from .generate import GenerationConfig  # noqa: E402


@dataclass
class GenerateArgs:
    model_dir: str = option(None, "model directory", positional=True)
    prompts: list[str] = option([], "prompt(s); several prompts decode as one padded batch", positional=True)
    prompt_file: str | None = option(None, "read prompts from this file, one per line")
    device: str = option("auto", "auto, cpu or cuda")
    dtype: str = option("auto", "auto, float32, bfloat16")
    stream: bool = option(True, "print tokens as they are generated (single prompt)")
    json: bool = option(False, "print one JSON object per completion (text, finish reason, speed)")
    draft: str | None = option(None, "speculative decoding: a smaller model directory with the same tokenizer "
                                     "drafts --draft-tokens tokens per step for the model to verify")


@verb("generate", "generate text from a model directory")
@options_of(GenerateArgs, GenerationConfig)
def _generate(ns):
    from pathlib import Path

    from .api import load
    from .generate import generate
    args = from_args(GenerateArgs, ns)
    gen = from_args(GenerationConfig, ns)
    prompts = list(args.prompts)
    if args.prompt_file:
        path = Path(args.prompt_file)
        if not path.is_file():
            raise LmforgeError(f"prompt file {path} does not exist")
        prompts += [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    prompts = prompts or [""]
    lm = load(args.model_dir, device=args.device, dtype=args.dtype)
    draft = load(args.draft, device=args.device, dtype=args.dtype) if args.draft else None
    stream = None
    if args.stream and len(prompts) == 1 and not args.json:
        sys.stdout.write(prompts[0])

        def stream(_, piece):
            sys.stdout.write(piece)
            sys.stdout.flush()
    completions = generate(lm.module, lm.tokenizer, prompts, gen, stream=stream, draft=lm._draft_module(draft))
    for prompt, c in zip(prompts, completions):
        if args.json:
            speculative = {k: round(c.stats[k], 4) for k in ("acceptance_rate", "tokens_per_step") if k in c.stats}
            print(json.dumps({"prompt": prompt, "text": c.text, "finish_reason": c.finish_reason,
                              "tokens": len(c.ids), "tokens_per_s": round(c.stats["tokens_per_s"], 1),
                              **speculative}, ensure_ascii=False))
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


# ---------------------------------------------------------------------------------- eval
@dataclass
class EvalArgs:
    model_dir: str = option(None, "model directory", positional=True)
    text: str | None = option(None, "text file to measure perplexity on")
    stride: int | None = option(None, "sliding-window stride in tokens (default: the context length)")
    batch_size: int = option(8, "windows per forward pass")
    device: str = option("auto", "auto, cpu or cuda")


@verb("eval", "perplexity of a model directory on a text file (sliding window)")
@options_of(EvalArgs)
def _eval(ns):
    from .api import load
    from .evaluate.perplexity import perplexity, read_text_file
    args = from_args(EvalArgs, ns)
    if not args.text:
        raise LmforgeError("give the text to evaluate with --text FILE")
    lm = load(args.model_dir, device=args.device)
    result = perplexity(lm.module, lm.tokenizer, read_text_file(args.text), stride=args.stride,
                        batch_size=args.batch_size, progress=True)
    print(json.dumps({"file": args.text, **{k: round(v, 4) if isinstance(v, float) else v
                                            for k, v in result.items()}}))
    return 0


# ------------------------------------------------------------------- adapt and compress
@dataclass
class MergeLoraArgs:
    adapter_dir: str = option(None, "model directory of a LoRA run (holds adapter.safetensors)", positional=True)
    out_dir: str = option(None, "where to write the base model with the adapters merged in", positional=True)
    base: str | None = option(None, "the base model directory, if it moved since training")


@verb("merge-lora", "merge a LoRA run's adapters into its base model: a plain model directory for export")
@options_of(MergeLoraArgs)
def _merge_lora(ns):
    from .adapt.lora import merge_adapter
    args = from_args(MergeLoraArgs, ns)
    print(f"wrote {merge_adapter(args.adapter_dir, args.out_dir, args.base)}")
    return 0


from .generate.chat import ChatArgs  # noqa: E402


@verb("chat", "chat with a model in the terminal (reads your messages from stdin, streams the replies)")
@options_of(ChatArgs, GenerationConfig, skip=("stop",), defaults={"max_new_tokens": 200, "temperature": 0.7})
def _chat(ns):
    from .api import load
    from .generate.chat import Chat, chat_loop
    args = from_args(ChatArgs, ns)
    lm = load(args.model_dir, device=args.device, dtype=args.dtype)
    draft = load(args.draft, device=args.device, dtype=args.dtype) if args.draft else None
    chat_loop(Chat(lm.module, lm.tokenizer, args.system, from_args(GenerationConfig, ns), lm._draft_module(draft)))
    return 0


from .quantize import QuantizeArgs  # noqa: E402


@verb("quantize", "weight-only int8 / int4 quantization of a model directory (with an optional size, speed and "
                  "perplexity report)")
@options_of(QuantizeArgs)
def _quantize(ns):
    from .quantize import format_report, quantize
    result = quantize(from_args(QuantizeArgs, ns))
    q = result["quantization"]
    print(f"wrote {result['out']}: {len(q['modules'])} Linear layers in int{q['bits']}"
          + (f" (groups of {q['group_size']})" if q["group_size"] else ""))
    if result["report"]:
        print(format_report(result["report"]))
    return 0


from .train.distill import DistillArgs  # noqa: E402


@verb("distill", "train a smaller student model on a teacher's soft targets (knowledge distillation)")
@options_of(DistillArgs, TrainConfig, skip=("init_from", "objective", "preset"))
def _distill(ns):
    from .train.distill import distill
    summary = distill(from_args(DistillArgs, ns), from_args(TrainConfig, ns))
    print_summary(summary)
    return 0


# ------------------------------------------------------------------------------- presets
@verb("presets", "list the model presets with their sizes")
def _presets(ns):
    from .config import PRESETS
    print(f"{'preset':<14}{'family':<9}{'params':>10}  layers x width, heads/kv, context, positions, mlp")
    for name, c in sorted(PRESETS.items()):
        print(f"{name:<14}{c.family:<9}{c.num_params() / 1e6:>9.1f}M  {c.n_layer} x {c.d_model}, "
              f"{c.n_head}/{c.kv_heads}, {c.context_length}, {c.position}, {c.mlp}")
    return 0


# ------------------------------------------------------------------ Hugging Face interop
@dataclass
class ImportArgs:
    hf_dir: str = option(None, "Hugging Face model directory (config.json, model.safetensors or its sharded index, "
                               "tokenizer.json)", positional=True)
    out_dir: str = option(None, "lmforge model directory to write", positional=True)
    overwrite: bool = option(False, "replace a model already in OUT_DIR")
    progress: bool = option(True, "show a progress bar")


@dataclass
class ExportArgs:
    model_dir: str = option(None, "lmforge model directory", positional=True)
    out_dir: str = option(None, "directory to write", positional=True)
    format: str = option("hf", "hf: a directory transformers loads with from_pretrained", choices=["hf"])
    overwrite: bool = option(False, "replace a model already in OUT_DIR")
    progress: bool = option(True, "show a progress bar")


@verb("import", "convert a Hugging Face GPT-2 or Llama checkpoint into an lmforge model directory")
@options_of(ImportArgs)
def _import(ns):
    from .interop import import_hf
    args = from_args(ImportArgs, ns)
    done = import_hf(args.hf_dir, args.out_dir, overwrite=args.overwrite, progress=args.progress)
    print(f"imported {args.hf_dir} ({done['architecture']}, {done['params'] / 1e6:.2f}M parameters, "
          f"{done['dtype']}) into {done['out']}")
    return 0


@verb("export", "write an lmforge model directory in Hugging Face format (GPT-2 or Llama)")
@options_of(ExportArgs)
def _export(ns):
    from .interop import export_hf
    args = from_args(ExportArgs, ns)
    done = export_hf(args.model_dir, args.out_dir, overwrite=args.overwrite, progress=args.progress)
    print(f"exported {args.model_dir} as {done['architecture']} ({done['params'] / 1e6:.2f}M parameters, "
          f"{done['dtype']}) into {done['out']}; load it with transformers' from_pretrained")
    return 0


# ---------------------------------------------------------------------------------- main
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmforge", description="lmforge: tokenize, train, evaluate and "
                                     "generate with transformer language models.")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"lmforge {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for name, (help, add, run) in VERBS.items():
        p = sub.add_parser(name, help=help, description=help)
        add(p)
        p.set_defaults(_run=run)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"lmforge: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    if not getattr(ns, "verb", None):
        parser.print_help()
        return 1
    previous = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        return ns._run(ns) or 0
    except LmforgeError as e:
        print(f"lmforge {ns.verb}: error: {e}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = previous


if __name__ == "__main__":
    sys.exit(main())
