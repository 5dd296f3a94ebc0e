"""The verbs that measure what a model computes on a given text: eval (perplexity over a file,
sliding window; or the ROUGE of its summaries of a table's documents, beside the lead
baseline's), score (per-token log-probabilities), attention (the attention weights, drawn as a
PNG) and inspect (the glass box: `lmforge inspect lens|dla|patch|attribute|heads|attention`, one
sub-command per tool of `lmforge.inspect`, each printing a table or --json and writing a PNG)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import LmforgeError
from ..generate import GenerationConfig
from ..generate.summarize import SUMMARIZE_DEFAULTS, SUMMARIZE_OPTIONS, summarization_config
from ..options import at_least, device_name, from_args, option, validate
from .core import options_of, sub_commands, verb


@dataclass
class EvalCommandConfig:
    model_dir: str = option(None, "model directory", positional=True)
    text: str | None = option(None, "text file to measure perplexity on")
    pairs: str | None = option(None, "instead: a CSV / TSV / JSONL table of documents and reference summaries; "
                                     "prints the ROUGE of the model's summaries and of the lead baseline")
    source_column: str = option("source", "with --pairs: the column holding the documents")
    target_column: str = option("target", "with --pairs: the column holding the reference summaries")
    stride: int | None = option(None, "sliding-window stride in tokens (default: the context length)",
                                check=at_least(1))
    batch_size: int = option(8, "windows (with --pairs: documents) per forward pass", check=at_least(1))
    device: str = option("auto", "auto, cpu or cuda", check=device_name)

    def __post_init__(self) -> None:
        validate(self)


def _rounded(result: dict) -> dict:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in result.items()}


@verb("eval", "perplexity of a model directory on a text file (sliding window), or the ROUGE of its summaries")
@options_of(EvalCommandConfig, GenerationConfig, defaults=SUMMARIZE_DEFAULTS, only={GenerationConfig: SUMMARIZE_OPTIONS})
def _eval(ns):
    from ..api import load
    from ..evaluate.perplexity import perplexity, read_text_file
    args = from_args(EvalCommandConfig, ns)
    summarization_config(**{k: getattr(ns, k) for k in SUMMARIZE_OPTIONS})   # the decoding flags, before any work
    if args.pairs:
        return _eval_summaries(ns, args)
    if not args.text:
        raise LmforgeError("give the text to evaluate with --text FILE (or a table of documents and summaries "
                           "with --pairs FILE)")
    lm = load(args.model_dir, device=args.device)
    result = perplexity(lm.module, lm.tokenizer, read_text_file(args.text), stride=args.stride,
                        batch_size=args.batch_size, progress=True)
    print(json.dumps({"file": args.text, **_rounded(result)}))
    return 0


def _eval_summaries(ns, args: EvalCommandConfig) -> int:
    """`eval --pairs`: one JSON line, the ROUGE of the model's summaries and of the lead baseline."""
    from ..api import load
    from ..data.tables import read_table
    from ..evaluate.rouge import lead, rouge_scores
    if args.text:
        raise LmforgeError("give --text FILE (perplexity) or --pairs FILE (ROUGE of summaries), not both")
    options = {k: getattr(ns, k) for k in SUMMARIZE_OPTIONS}
    flags = {args.source_column: "--source-column", args.target_column: "--target-column"}
    rows = read_table(args.pairs, [args.source_column, args.target_column], (), flags)
    documents = [r[args.source_column] for r in rows]
    references = [r[args.target_column] for r in rows]
    lm = load(args.model_dir, device=args.device)
    summaries = lm.summarize(documents, batch_size=args.batch_size, **options)
    model, baseline = rouge_scores(summaries, references), rouge_scores([lead(d) for d in documents], references)
    print(json.dumps({"file": args.pairs, "pairs": len(rows), **_rounded(model),
                      "lead": _rounded({k: v for k, v in baseline.items() if k.startswith("rouge") and
                                        isinstance(v, float)})}))
    return 0


@dataclass
class ScoreCommandConfig:
    model_dir: str = option(None, "model directory", positional=True)
    text: str = option(None, "the text to score", positional=True)
    continuation: str | None = option(None, "score only this continuation after TEXT (lm-eval's loglikelihood)")
    device: str = option("auto", "auto, cpu or cuda", check=device_name)

    def __post_init__(self) -> None:
        validate(self)


@verb("score", "per-token log-probabilities of a text under a model (or of a continuation after it)")
@options_of(ScoreCommandConfig)
def _score(ns):
    from ..api import load
    args = from_args(ScoreCommandConfig, ns)
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


@dataclass
class AttentionCommandConfig:
    model_dir: str = option(None, "model directory", positional=True)
    text: str = option(None, "the text whose attention to draw", positional=True)
    layer: int = option(0, "layer to draw (0 is the first, -1 the last)")
    head: int | None = option(None, "head to draw (default: a grid of all heads of the layer)")
    kind: str = option("auto", "encoder-decoders: cross (the decoder reading the source; auto), encoder or decoder",
                       choices=("auto", "self", "cross", "encoder", "decoder"))
    target: str | None = option(None, "encoder-decoders: the target text (default: the model's greedy translation)")
    out: str = option("attention.png", "PNG file to write")
    device: str = option("auto", "auto, cpu or cuda", check=device_name)

    def __post_init__(self) -> None:
        validate(self)


@verb("attention", "draw a model's attention weights for a text (one head, or all heads of a layer) as a PNG")
@options_of(AttentionCommandConfig)
def _attention(ns):
    from ..api import load
    from ..viz.attention import plot_attention
    args = from_args(AttentionCommandConfig, ns)
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


# ---- lmforge inspect TOOL: the glass box (lmforge.inspect) ---------------------------------------------
@dataclass
class InspectCommandConfig:
    model_dir: str = option(None, "model directory", positional=True)
    out: str | None = option(None, "PNG file to write (default: TOOL.png)")
    json: bool = option(False, "print the result as JSON instead of a table")
    device: str = option("auto", "auto, cpu or cuda", check=device_name)

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class LensCommandConfig(InspectCommandConfig):
    text: str = option(None, "the text to read layer by layer", positional=True)
    target: str | None = option(None, "encoder-decoders: the text the decoder reads (default: the greedy translation)")


@dataclass
class DlaCommandConfig(InspectCommandConfig):
    text: str = option(None, "the text whose logit to attribute", positional=True)
    target: str | None = option(None, "encoder-decoders: the text the decoder reads (default: the greedy translation)")


@dataclass
class PatchCommandConfig(InspectCommandConfig):
    text: str = option(None, "the clean prompt", positional=True)


@dataclass
class AttributeCommandConfig(InspectCommandConfig):
    text: str = option(None, "the text whose input tokens to score", positional=True)


@dataclass
class HeadsCommandConfig(InspectCommandConfig):
    pass


def _show(result, args, tool: str, what: str) -> int:
    """Print a tool's result (a table, or JSON with --json) and draw it."""
    out = result.plot(args.out or f"{tool}.png", f"{Path(args.model_dir).name}: {what}")
    if args.json:
        print(json.dumps(result.to_dict(), ensure_ascii=False))
        print(f"wrote {out}", file=sys.stderr)
    else:
        print(result.table())
        print(f"wrote {out}")
    return 0


def _lens(ns) -> int:
    from ..api import load
    from ..inspect import LensConfig
    args = from_args(LensCommandConfig, ns)
    lens = load(args.model_dir, device=args.device).logit_lens(args.text, args.target,
                                                               **vars(from_args(LensConfig, ns)))
    return _show(lens, args, "lens", "logit lens")


def _dla(ns) -> int:
    from ..api import load
    from ..inspect import DlaConfig
    args, o = from_args(DlaCommandConfig, ns), from_args(DlaConfig, ns)
    attr = load(args.model_dir, device=args.device).dla(args.text, o.answer, o.wrong, o.position, args.target)
    return _show(attr, args, "dla", "direct logit attribution")


def _patch(ns) -> int:
    from ..api import load
    from ..inspect import PatchConfig
    args, o = from_args(PatchCommandConfig, ns), from_args(PatchConfig, ns)
    result = load(args.model_dir, device=args.device).patch(args.text, o.corrupted, o.answer, o.wrong)
    return _show(result, args, "patch", "activation patching")


def _attribute(ns) -> int:
    from ..api import load
    from ..inspect import AttributeConfig
    args = from_args(AttributeCommandConfig, ns)
    attr = load(args.model_dir, device=args.device).attribute(args.text, **vars(from_args(AttributeConfig, ns)))
    return _show(attr, args, "attribute", "input attribution")


def _heads(ns) -> int:
    from ..api import load
    from ..inspect import HeadScoresConfig
    args = from_args(HeadsCommandConfig, ns)
    scores = load(args.model_dir, device=args.device).head_scores(**vars(from_args(HeadScoresConfig, ns)))
    return _show(scores, args, "heads", "head scores")


def _tools() -> dict[str, tuple[str, tuple[type, ...], Callable]]:
    from ..inspect import AttributeConfig, DlaConfig, HeadScoresConfig, LensConfig, PatchConfig
    return {
        "lens": ("the logit lens: each layer's top tokens per position, read through the final norm and head",
                 (LensCommandConfig, LensConfig), _lens),
        "dla": ("direct logit attribution: what each head and MLP writes toward a token's logit",
                (DlaCommandConfig, DlaConfig), _dla),
        "patch": ("activation patching from a clean prompt into a corrupted one, per layer and position / head",
                  (PatchCommandConfig, PatchConfig), _patch),
        "attribute": ("input attribution (integrated gradients, gradient x input) of a label or the next token",
                      (AttributeCommandConfig, AttributeConfig), _attribute),
        "heads": ("previous-token, induction and entropy scores of every head", (HeadsCommandConfig, HeadScoresConfig),
                  _heads),
        "attention": ("draw the attention weights for a text (as `lmforge attention`)", (AttentionCommandConfig,),
                      _attention),
    }


@verb("inspect", "see why a model answers: lens, dla, patch, attribute, heads, attention (`lmforge inspect TOOL -h`)")
@sub_commands(_tools, metavar="TOOL")
def _inspect(ns):                   # argparse requires a tool, whose own run function runs instead
    raise LmforgeError("name a tool: lmforge inspect lens|dla|patch|attribute|heads|attention MODEL ...")
