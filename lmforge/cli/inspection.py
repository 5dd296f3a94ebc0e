"""The verbs that measure what a model computes on a given text: eval (perplexity over a file,
sliding window; or the ROUGE of its summaries of a table's documents, beside the lead
baseline's), score (per-token log-probabilities) and attention (the attention weights, drawn
as a PNG)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..errors import LmforgeError
from ..generate import GenerationConfig
from ..generate.summarize import SUMMARIZE_DEFAULTS, SUMMARIZE_OPTIONS, summarization_config
from ..options import at_least, device_name, from_args, option, validate
from .core import options_of, verb


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
    summarization_config(**options)                               # checks the decoding flags before any work
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
