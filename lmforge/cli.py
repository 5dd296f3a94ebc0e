"""`lmforge VERB ...` — a thin layer: each verb builds the same dataclass the Python API takes.

Every verb also takes `--config FILE.yaml` (its settings under the flags' names; flags typed
on the command line win) and `--print-config` (print the resolved settings as YAML and stop).
`--resume` reads the run's own `train_config.yaml` the same way. Errors a user can fix
(LmforgeError) print as one line without a traceback (exit code 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import warnings
from dataclasses import dataclass
from typing import Callable

from .errors import LmforgeError
from .options import add_options, at_least, device_name, field_names, from_args, option, validate

VERBS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}


def verb(name: str, help: str):
    """Register `lmforge NAME` running the decorated function with the parsed namespace; its
    flags come from `@options_of(...)` (applied first, below `@verb`)."""
    def wrap(run):
        VERBS[name] = (help, getattr(run, "options", lambda parser: None), run)
        return run
    return wrap


def options_of(*classes, skip: tuple[str, ...] = (), defaults: dict | None = None,
               only: dict[type, tuple[str, ...]] | None = None):
    """Flags for every field of these dataclasses (`defaults` overrides their defaults; `only`
    limits a class to some of its fields); a field shared by two classes (e.g. a common base)
    becomes one flag."""
    def deco(run):
        def add(parser):
            seen = set(skip)
            for cls in classes:
                add_options(parser, cls, skip=tuple(seen), defaults=defaults, only=(only or {}).get(cls))
                seen |= field_names(cls)
        run.options = add
        return run
    return deco


SUMMARY_KEYS = ("step", "train_loss", "val_loss", "val_ppl", "val_accuracy", "val_macro_f1", "val_bleu", "val_chrf",
                "test_accuracy", "test_macro_f1", "test_bleu", "test_chrf")


def print_summary(summary: dict) -> None:
    """The last line of a training verb: final metrics and where the model is."""
    if os.environ.get("RANK", "0") != "0":          # under torchrun: rank 0 speaks for the run
        return
    shown = {k: summary[k] for k in SUMMARY_KEYS if k in summary}
    print("finished: " + ", ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in shown.items())
          + f"; model directory {summary['out']}" + (f"; merged model {summary['merged']}" if "merged" in summary
                                                      else ""))
    if summary.get("warning"):
        print(f"warning: {summary['warning']}", file=sys.stderr)


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
from .tasks import TASK_OPTIONS  # noqa: E402   task -> its options dataclass; the flags apply to that task
from .train.trainer import TrainConfig  # noqa: E402


def _with_task_options(cfg: TrainConfig, ns) -> TrainConfig:
    cls = TASK_OPTIONS.get(cfg.task)
    return dataclasses.replace(cfg, task_options=from_args(cls, ns)) if cls else cfg


@verb("train", "train a model: on a prepared data directory (clm, mlm) or a table (classify, seq2seq); also "
               "under torchrun for DDP")
@options_of(TrainConfig, *TASK_OPTIONS.values())
def _train(ns):
    from .train import train
    print_summary(train(_with_task_options(from_args(TrainConfig, ns), ns)))
    return 0


# ------------------------------------------------------------------------------ finetune
from .adapt.lora import LoRAConfig  # noqa: E402
from .train.finetune import FINETUNE_DEFAULTS, FinetuneArgs  # noqa: E402


@verb("finetune", "fine-tune a model directory on new data, in full or with LoRA adapters (the task picks the "
                  "objective)")
@options_of(FinetuneArgs, LoRAConfig, TrainConfig, *TASK_OPTIONS.values(), skip=("init_from", "preset"),
            defaults=FINETUNE_DEFAULTS)
def _finetune(ns):
    from .train.finetune import finetune
    args = from_args(FinetuneArgs, ns)
    cfg = _with_task_options(dataclasses.replace(from_args(TrainConfig, ns), task=args.task), ns)
    print_summary(finetune(args, cfg, lora=from_args(LoRAConfig, ns)))
    return 0


# ------------------------------------------------------------------------------ generate
from .generate import GenerationConfig  # noqa: E402


@dataclass
class GenerateArgs:
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
@options_of(GenerateArgs, GenerationConfig)
def _generate(ns):
    from .api import load
    from .generate import generate
    args = from_args(GenerateArgs, ns)
    gen = from_args(GenerationConfig, ns)
    prompts = list(args.prompts)
    if args.prompt_file:
        from .fileio import read_text
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
                     for k in ("acceptance_rate", "tokens_per_step", "window", "reencodes") if k in c.stats}
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


# ---------------------------------------------------------------------------------- eval
@dataclass
class EvalArgs:
    model_dir: str = option(None, "model directory", positional=True)
    text: str | None = option(None, "text file to measure perplexity on")
    stride: int | None = option(None, "sliding-window stride in tokens (default: the context length)",
                                check=at_least(1))
    batch_size: int = option(8, "windows per forward pass", check=at_least(1))
    device: str = option("auto", "auto, cpu or cuda", check=device_name)

    def __post_init__(self) -> None:
        validate(self)


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


@dataclass
class ScoreArgs:
    model_dir: str = option(None, "model directory", positional=True)
    text: str = option(None, "the text to score", positional=True)
    continuation: str | None = option(None, "score only this continuation after TEXT (lm-eval's loglikelihood)")
    device: str = option("auto", "auto, cpu or cuda")


@verb("score", "per-token log-probabilities of a text under a model (or of a continuation after it)")
@options_of(ScoreArgs)
def _score(ns):
    from .api import load
    args = from_args(ScoreArgs, ns)
    lm = load(args.model_dir, device=args.device)
    if args.continuation is not None:
        logprob, greedy = lm.loglikelihood(args.text, args.continuation)
        print(json.dumps({"context": args.text, "continuation": args.continuation, "logprob": round(logprob, 4),
                          "greedy": greedy}, ensure_ascii=False))
        return 0
    result = lm.score(args.text)
    for t in result["tokens"]:
        print(f"{t['logprob']:9.4f}  {t['id']:6d}  {json.dumps(t['token'], ensure_ascii=False)}")
    print(f"total {result['logprob']:.4f} over {len(result['tokens'])} tokens")
    return 0


# ------------------------------------------------------------------- adapt and compress
@dataclass
class MergeLoraArgs:
    adapter_dir: str = option(None, "model directory of a LoRA run (holds adapter.safetensors)", positional=True)
    out_dir: str = option(None, "where to write the base model with the adapters merged in", positional=True)
    base: str | None = option(None, "the base model directory, if it moved since training")
    overwrite: bool = option(False, "replace a model already in OUT_DIR (never the adapter or base directory)")

    def __post_init__(self) -> None:
        validate(self)


@verb("merge-lora", "merge a LoRA run's adapters into its base model: a plain model directory for export")
@options_of(MergeLoraArgs)
def _merge_lora(ns):
    from .adapt.lora import merge_adapter
    args = from_args(MergeLoraArgs, ns)
    print(f"wrote {merge_adapter(args.adapter_dir, args.out_dir, args.base, overwrite=args.overwrite)}")
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
    chat_loop(Chat(lm.module, lm.tokenizer, args.system, from_args(GenerationConfig, ns), lm.draft_module(draft)))
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
@options_of(DistillArgs, TrainConfig, skip=("init_from", "task", "preset"))
def _distill(ns):
    from .train.distill import distill
    summary = distill(from_args(DistillArgs, ns), from_args(TrainConfig, ns))
    print_summary(summary)
    return 0


# --------------------------------------------------------------------- classify, translate
def _input_texts(verb_name: str, texts: list[str], file: str | None, column: str, column_flag: str,
                 ref_column: str | None = None, ref_flag: str = "") -> tuple[list[str], list[str | None] | None]:
    """The texts a verb runs on: those given as arguments, then the lines of --file (or its
    `column`, for a CSV / TSV / JSONL table). With `ref_column`, also that column's values, one
    per text (None for the argument texts); else None."""
    from .data.tables import read_table, read_texts
    texts, refs = list(texts), None
    if file and ref_column:
        rows = read_table(file, [column, ref_column], (), {column: column_flag, ref_column: ref_flag})
        refs = [None] * len(texts) + [r[ref_column] for r in rows]
        texts += [r[column] for r in rows]
    elif file:
        texts += read_texts(file, column, column_flag)
    if not texts:
        raise LmforgeError(f"nothing to {verb_name}: give texts as arguments or --file FILE")
    return texts, refs


@dataclass
class ClassifyArgs:
    model_dir: str = option(None, "classifier model directory (from `lmforge finetune --task classify`)",
                            positional=True)
    texts: list[str] = option([], "text(s) to classify", positional=True)
    file: str | None = option(None, "also classify every line of this text file, or a column of a CSV / TSV / "
                                    "JSONL table (--text-column)")
    text_column: str = option("text", "with a table --file: the column holding the text")
    label_column: str | None = option(None, "with a table --file: a column of true labels; prints accuracy, "
                                            "per-class scores and macro-F1 against them")
    top_k: int = option(1, "show the k most likely labels per text", check=at_least(1))
    batch_size: int = option(64, "texts per forward pass", check=at_least(1))
    json: bool = option(False, "print one JSON object per text (label, score, every label's probability)")
    device: str = option("auto", "auto, cpu or cuda", check=device_name)

    def __post_init__(self) -> None:
        validate(self)


@verb("classify", "label texts with a classifier model directory (label and probability per text)")
@options_of(ClassifyArgs)
def _classify(ns):
    from .api import load
    args = from_args(ClassifyArgs, ns)
    texts, truth = _input_texts("classify", args.texts, args.file, args.text_column, "--text-column",
                                args.label_column, "--label-column")
    lm = load(args.model_dir, device=args.device)
    results = lm.classify(texts, batch_size=args.batch_size)
    for text, r in zip(texts, results):
        ranked = sorted(r["probs"].items(), key=lambda kv: -kv[1])[: max(1, args.top_k)]
        if args.json:
            print(json.dumps({"text": text, "label": r["label"], "score": round(r["score"], 4),
                              "probs": {k: round(v, 4) for k, v in ranked}}, ensure_ascii=False))
        else:
            print("  ".join(f"{k} {v:.3f}" for k, v in ranked) + f"\t{text}")
    if truth is not None:
        from .evaluate.classification import format_metrics, label_metrics
        metrics = label_metrics(lm.config.labels, truth, [r["label"] for r in results])
        if metrics is not None:
            print(format_metrics(metrics, top=30), file=sys.stderr)
    return 0


from .api import TRANSLATE_DEFAULTS, TRANSLATE_OPTIONS  # noqa: E402


@dataclass
class TranslateArgs:
    model_dir: str = option(None, "encoder-decoder model directory (from `lmforge train --task seq2seq`)",
                            positional=True)
    texts: list[str] = option([], "text(s) to translate", positional=True)
    file: str | None = option(None, "also translate every line of this text file, or a column of a CSV / TSV / "
                                    "JSONL table (--source-column)")
    source_column: str = option("source", "with a table --file: the column holding the source text")
    target_column: str | None = option(None, "with a table --file: a column of reference translations; prints "
                                             "BLEU and chrF against them")
    batch_size: int = option(32, "texts decoded together", check=at_least(1))
    json: bool = option(False, "print one JSON object per text")
    device: str = option("auto", "auto, cpu or cuda", check=device_name)

    def __post_init__(self) -> None:
        validate(self)


@verb("translate", "translate (or summarise) texts with an encoder-decoder model directory (greedy or beam search)")
@options_of(TranslateArgs, GenerationConfig, defaults=TRANSLATE_DEFAULTS, only={GenerationConfig: TRANSLATE_OPTIONS})
def _translate(ns):
    from .api import load
    args = from_args(TranslateArgs, ns)
    options = {k: getattr(ns, k) for k in TRANSLATE_OPTIONS}
    GenerationConfig(**{**TRANSLATE_DEFAULTS, **options})         # checks the decoding flags before any work
    texts, refs = _input_texts("translate", args.texts, args.file, args.source_column, "--source-column",
                               args.target_column, "--target-column")
    lm = load(args.model_dir, device=args.device)
    outputs = lm.translate(texts, batch_size=args.batch_size,
                           **options)
    for text, out in zip(texts, outputs):
        print(json.dumps({"source": text, "translation": out}, ensure_ascii=False) if args.json else out)
    if refs is not None:
        from .evaluate.bleu import translation_scores
        refs = refs[len(args.texts):]                        # the --file rows: the argument texts have none
        s = translation_scores(outputs[len(args.texts):], refs)
        print(f"BLEU {s['bleu']:.2f} ({s['bleu_tokenize']} tokens), chrF {s['chrf']:.2f} over {len(refs)} pairs",
              file=sys.stderr)
    return 0


# ------------------------------------------------------------------------------- presets
@verb("presets", "list the model presets with their sizes")
def _presets(ns):
    from .config import PRESETS
    from .model import num_params
    print(f"{'preset':<14}{'family':<9}{'params':>10}  layers x width, heads/kv, context, positions, mlp")
    for name, c in sorted(PRESETS.items()):
        print(f"{name:<14}{c.family:<9}{num_params(c) / 1e6:>9.1f}M  {c.n_layer} x {c.d_model}, "
              f"{c.n_head}/{c.kv_heads}, {c.context_length}, {c.position}, {c.mlp}")
    return 0


# ------------------------------------------------------------------ Hugging Face interop
@dataclass
class ImportArgs:
    hf_dir: str = option(None, "Hugging Face model directory (config.json, model.safetensors or its sharded index, "
                               "tokenizer.json), or a .gguf file (llama or gpt2; F32 / F16 / BF16 / Q8_0 / Q4_0 / "
                               "Q4_K tensors are dequantized to float32)", positional=True)
    out_dir: str = option(None, "lmforge model directory to write", positional=True)
    overwrite: bool = option(False, "replace what OUT_DIR holds, as a whole (never an input directory)")
    progress: bool = option(True, "show a progress bar")

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class ExportArgs:
    model_dir: str = option(None, "lmforge model directory", positional=True)
    out_dir: str = option(None, "directory to write (hf), or the .gguf file to write (gguf)", positional=True)
    format: str = option("hf", "hf: a directory transformers loads with from_pretrained; gguf: one file that "
                               "llama.cpp, Ollama and LM Studio run", choices=["hf", "gguf"])
    outtype: str = option("auto", "gguf tensor type of the matrices: auto (as stored), f32, f16, bf16, q8_0; norms and "
                                  "biases stay f32", choices=["auto", "f32", "f16", "bf16", "q8_0"])
    overwrite: bool = option(False, "replace what OUT_DIR holds, as a whole (never an input directory)")
    progress: bool = option(True, "show a progress bar")

    def __post_init__(self) -> None:
        validate(self)


@verb("import", "convert a Hugging Face GPT-2, Llama or BERT checkpoint, or a Llama / GPT-2 GGUF file, into an "
                "lmforge model directory")
@options_of(ImportArgs)
def _import(ns):
    from .interop import import_gguf, import_hf, is_gguf_file
    args = from_args(ImportArgs, ns)
    convert = import_gguf if is_gguf_file(args.hf_dir) else import_hf
    done = convert(args.hf_dir, args.out_dir, overwrite=args.overwrite, progress=args.progress)
    print(f"imported {args.hf_dir} ({done['architecture']}, {done['params'] / 1e6:.2f}M parameters, "
          f"{done['dtype']}) into {done['out']}")
    return 0


@verb("export", "write an lmforge model directory in Hugging Face format (GPT-2, Llama or BERT) or as a GGUF file "
                "(Llama or GPT-2 kind)")
@options_of(ExportArgs)
def _export(ns):
    from .interop import export_gguf, export_hf
    args = from_args(ExportArgs, ns)
    if args.format == "gguf":
        done = export_gguf(args.model_dir, args.out_dir, args.outtype, overwrite=args.overwrite,
                           progress=args.progress)
        print(f"exported {args.model_dir} as {done['architecture']} ({done['params'] / 1e6:.2f}M parameters, "
              f"{done['outtype']}, {done['bytes'] / 1e6:.1f} MB) into {done['out']}; run it with "
              f"`llama-cli -m {done['out']}` or an Ollama Modelfile `FROM ./{os.path.basename(done['out'])}`")
        return 0
    if args.outtype != "auto":
        raise LmforgeError("--outtype is for --format gguf; the hf format keeps the stored dtype")
    done = export_hf(args.model_dir, args.out_dir, overwrite=args.overwrite, progress=args.progress)
    print(f"exported {args.model_dir} as {done['architecture']} ({done['params'] / 1e6:.2f}M parameters, "
          f"{done['dtype']}) into {done['out']}; load it with transformers' from_pretrained")
    return 0


# --------------------------------------------------------------------------------- embed
@dataclass
class EmbedArgs:
    model_dir: str = option(None, "encoder (or decoder) model directory, e.g. an imported all-MiniLM-L6-v2",
                            positional=True)
    texts: list[str] = option([], "text(s) to embed", positional=True)
    file: str | None = option(None, "also embed every line of this text file, or a column of a CSV / TSV / JSONL "
                                    "table (--text-column)")
    text_column: str = option("text", "with a table --file: the column holding the text")
    similarity: bool = option(False, "print the cosine similarity of every pair of texts instead of the vectors")
    device: str = option("auto", "auto, cpu or cuda", check=device_name)

    def __post_init__(self) -> None:
        validate(self)


from .embed import EmbedOptions  # noqa: E402


@verb("embed", "sentence embeddings of texts (one JSON vector per line), or their cosine similarities")
@options_of(EmbedArgs, EmbedOptions)
def _embed(ns):
    from .api import load
    args, options = from_args(EmbedArgs, ns), from_args(EmbedOptions, ns)        # both checked before any work
    texts, _ = _input_texts("embed", args.texts, args.file, args.text_column, "--text-column")
    vectors = load(args.model_dir, device=args.device).embed(texts, **dataclasses.asdict(options))
    if args.similarity:
        import torch.nn.functional as F
        unit = F.normalize(vectors, dim=-1)
        cosines = unit @ unit.T                                                   # (N, N)
        print("  ".join(f"{j:>6}" for j in range(len(texts))))
        for i, text in enumerate(texts):
            print("  ".join(f"{c:6.3f}" for c in cosines[i].tolist()) + f"  [{i}] {text}")
        return 0
    for text, v in zip(texts, vectors.tolist()):
        print(json.dumps({"text": text, "embedding": [round(x, 6) for x in v]}, ensure_ascii=False))
    return 0


# ----------------------------------------------------------------------------- attention
@dataclass
class AttentionArgs:
    model_dir: str = option(None, "model directory", positional=True)
    text: str = option(None, "the text whose attention to draw", positional=True)
    layer: int = option(0, "layer to draw (0 is the first, -1 the last)")
    head: int | None = option(None, "head to draw (default: a grid of all heads of the layer)")
    kind: str = option("auto", "encoder-decoders: cross (the decoder reading the source; auto), encoder or decoder",
                       choices=("auto", "self", "cross", "encoder", "decoder"))
    target: str | None = option(None, "encoder-decoders: the target text (default: the model's greedy translation)")
    out: str = option("attention.png", "PNG file to write")
    device: str = option("auto", "auto, cpu or cuda")


@verb("attention", "draw a model's attention weights for a text (one head, or all heads of a layer) as a PNG")
@options_of(AttentionArgs)
def _attention(ns):
    from .api import load
    from .viz.attention import plot_attention
    args = from_args(AttentionArgs, ns)
    lm = load(args.model_dir, device=args.device)
    maps, (queries, keys) = lm.attention_maps(args.text, kind=args.kind, target=args.target, with_tokens=True)
    n_layers, n_heads = maps.shape[:2]
    if not -n_layers <= args.layer < n_layers:
        raise LmforgeError(f"--layer {args.layer} does not exist: the model has {n_layers} layers (0..{n_layers - 1})")
    if args.head is not None and not 0 <= args.head < n_heads:
        raise LmforgeError(f"--head {args.head} does not exist: each layer has {n_heads} heads (0..{n_heads - 1})")
    layer = args.layer % n_layers
    what = "all heads" if args.head is None else f"head {args.head}"
    out = plot_attention(maps[layer], queries, keys, args.out, args.head,
                         f"{lm.path.name}: layer {layer}, {what}")
    print(f"wrote {out} (layer {layer} of {n_layers}, {what} of {n_heads}, {len(queries)} x {len(keys)} tokens)")
    return 0


# --------------------------------------------------------------------------------- serve
from .serve import ServeArgs  # noqa: E402


@verb("serve", "an OpenAI-compatible HTTP server for decoders and encoder-decoders (continuous batching), with a "
                "playground page at /")
@options_of(ServeArgs)
def _serve(ns):
    from .serve import serve
    serve(from_args(ServeArgs, ns))
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
        p.add_argument("--config", metavar="FILE.yaml", help="read settings from this YAML file (the flags' names, "
                       "e.g. `batch_size: 16`); flags on the command line override it")
        p.add_argument("--print-config", action="store_true", help="print the resolved settings as YAML (a --config "
                       "file) and stop")
        p.set_defaults(_run=run, _parser=p)
    return parser


def _settings(ns: argparse.Namespace) -> dict:
    """The resolved settings of a parsed verb, as a run file holds them (a training verb: only the
    chosen task's own options)."""
    from .runfile import settable
    names = list(settable(ns._parser))
    task = getattr(ns, "task", None)
    if task is not None:
        others = set().union(*(field_names(c) for t, c in TASK_OPTIONS.items() if t != task))
        own = field_names(TASK_OPTIONS[task]) if task in TASK_OPTIONS else set()
        names = [n for n in names if n not in others or n in own or n in field_names(TrainConfig)]
    return {n: getattr(ns, n) for n in names}


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse twice when settings come from files: the run's own train_config.yaml (--resume), then
    --config; flags on the command line win over both."""
    from pathlib import Path

    from .runfile import TRAIN_CONFIG_FILE, apply_run_file
    ns = parser.parse_args(argv)
    if not getattr(ns, "verb", None):
        return ns
    saved = Path(ns.out) / TRAIN_CONFIG_FILE if getattr(ns, "resume", False) and getattr(ns, "out", None) else None
    if saved is not None and saved.is_file():
        apply_run_file(ns._parser, saved, strict=False)
    if ns.config:
        apply_run_file(ns._parser, ns.config)
    if ns.config or saved is not None and saved.is_file():
        ns = parser.parse_args(argv)
    return ns


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"lmforge: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        ns = _parse(parser, argv)
    except LmforgeError as e:
        verb = next((a for a in (argv if argv is not None else sys.argv[1:]) if a in VERBS), "")
        print(f"lmforge {verb}: error: {e}".replace("lmforge : ", "lmforge: "), file=sys.stderr)
        return 2
    if not getattr(ns, "verb", None):
        parser.print_help()
        return 1
    if ns.print_config:
        from .runfile import dump_yaml
        print(dump_yaml(_settings(ns)), end="")
        return 0
    if os.environ.get("LMFORGE_KEEP_FREED_MEMORY", "1") != "0":
        from .runtime import keep_freed_memory
        keep_freed_memory()                # fewer page faults per step; this process is ours
    previous = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        return ns._run(ns) or 0
    except LmforgeError as e:
        print(f"lmforge {ns.verb}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:                   # a full disk, a read-only directory, a path through a file, ...
        if os.environ.get("LMFORGE_DEBUG"):
            raise
        from .fileio import os_error_message
        print(f"lmforge {ns.verb}: error: {os_error_message(e, writing=True)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:              # a second Ctrl-C, or one outside a training loop
        print(f"\nlmforge {ns.verb}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = previous


if __name__ == "__main__":
    sys.exit(main())
