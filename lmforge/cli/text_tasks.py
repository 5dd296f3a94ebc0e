"""The verbs that run a trained task over texts given as arguments or read from a file:
classify (labels, and scores against a label column), translate (and BLEU / chrF against a
reference column), summarize (and ROUGE against a reference column) and embed (vectors, or
their cosine similarities)."""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass

from ..embed import EmbedConfig
from ..errors import LmforgeError
from ..generate import GenerationConfig
from ..generate.seq2seq import TRANSLATE_DEFAULTS, TRANSLATE_OPTIONS, translation_config
from ..generate.summarize import SUMMARIZE_DEFAULTS, SUMMARIZE_OPTIONS, summarization_config
from ..options import at_least, device_name, from_args, option, validate
from .core import options_of, verb


def _input_texts(verb_name: str, texts: list[str], file: str | None, column: str, column_flag: str,
                 ref_column: str | None = None, ref_flag: str = "") -> tuple[list[str], list[str | None] | None]:
    """The texts a verb runs on: those given as arguments, then the lines of --file (or its
    `column`, for a table: CSV / TSV / JSONL / Parquet / Arrow). With `ref_column`, also that column's values, one
    per text (None for the argument texts); else None."""
    from ..data.tables import read_table, read_texts
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
class ClassifyCommandConfig:
    model_dir: str = option(None, "classifier model directory (from `lmforge finetune --task classify`)",
                            positional=True)
    texts: list[str] = option([], "text(s) to classify", positional=True)
    file: str | None = option(None, "also classify every line of this text file, or a column of a table: CSV / "
                                    "TSV / JSONL / Parquet / Arrow (--text-column)")
    text_column: str = option("text", "with a table --file: the column holding the text")
    label_column: str | None = option(None, "with a table --file: a column of true labels; prints accuracy, "
                                            "per-class scores and macro-F1 against them")
    top_k: int = option(1, "show the k most likely labels per text", check=at_least(1))
    batch_size: int = option(64, "texts per forward pass", check=at_least(1))
    json: bool = option(False, "print one JSON object per text (label, score, every label's probability)")
    device: str = option("auto", "auto, cpu or cuda", check=device_name)
    baseline: bool = option(True, "with --label-column: also score TF-IDF + logistic regression fitted on the "
                                  "training split of the model's own training table (scikit-learn)")
    ensemble: list[str] = option([], "more classifier directories with the same labels (fine-tunes of the same "
                                     "table, e.g. other seeds): every text gets the average of all their "
                                     "probabilities")

    def __post_init__(self) -> None:
        validate(self)


@verb("classify", "label texts with a classifier model directory (label and probability per text)")
@options_of(ClassifyCommandConfig)
def _classify(ns):
    from ..api import load
    args = from_args(ClassifyCommandConfig, ns)
    texts, truth = _input_texts("classify", args.texts, args.file, args.text_column, "--text-column",
                                args.label_column, "--label-column")
    lm = load(args.model_dir, device=args.device)
    results = lm.classify(texts, batch_size=args.batch_size,
                          ensemble=[load(d, device=args.device) for d in args.ensemble])
    for text, r in zip(texts, results):
        ranked = sorted(r["probs"].items(), key=lambda kv: -kv[1])[: max(1, args.top_k)]
        if args.json:
            print(json.dumps({"text": text, "label": r["label"], "score": round(r["score"], 4),
                              "probs": {k: round(v, 4) for k, v in ranked}}, ensure_ascii=False))
        else:
            print("  ".join(f"{k} {v:.3f}" for k, v in ranked) + f"\t{text}")
    if truth is not None:
        from ..evaluate.classification import format_metrics, label_metrics
        metrics = label_metrics(lm.config.labels, truth, [r["label"] for r in results])
        if metrics is not None:
            print(format_metrics(metrics, top=30), file=sys.stderr)
            if args.baseline:
                _print_baseline(args.model_dir, lm.config.labels, texts, truth, metrics["macro_f1"])
    return 0


def _print_baseline(model_dir: str, labels: list[str], texts: list[str], truth: list[str | None],
                    model_f1: float) -> None:
    """The TF-IDF baseline on the same labelled rows, and how the model compares (stderr)."""
    from ..evaluate.baseline import describe, verdict
    from ..tasks.classify import baseline_for_file
    result = baseline_for_file(model_dir, labels, texts, truth)
    if isinstance(result, str):
        print(result, file=sys.stderr)
    elif result is not None and result[0]:
        scores, where = result
        print(describe(scores, where), file=sys.stderr)
        print(verdict(model_f1, scores, where), file=sys.stderr)


@dataclass
class TranslateCommandConfig:
    model_dir: str = option(None, "encoder-decoder model directory (from `lmforge train --task seq2seq`)",
                            positional=True)
    texts: list[str] = option([], "text(s) to translate", positional=True)
    file: str | None = option(None, "also translate every line of this text file, or a column of a table: CSV / "
                                    "TSV / JSONL / Parquet / Arrow (--source-column)")
    source_column: str = option("source", "with a table --file: the column holding the source text")
    target_column: str | None = option(None, "with a table --file: a column of reference translations; prints "
                                             "BLEU and chrF against them")
    batch_size: int = option(32, "texts decoded together", check=at_least(1))
    json: bool = option(False, "print one JSON object per text")
    device: str = option("auto", "auto, cpu or cuda", check=device_name)

    def __post_init__(self) -> None:
        validate(self)


@verb("translate", "translate (or summarise) texts with an encoder-decoder model directory (greedy or beam search)")
@options_of(TranslateCommandConfig, GenerationConfig, defaults=TRANSLATE_DEFAULTS, only={GenerationConfig: TRANSLATE_OPTIONS})
def _translate(ns):
    def scores(outputs: list[str], refs: list[str]) -> str:
        from ..evaluate.bleu import format_bleu, translation_scores
        return format_bleu(translation_scores(outputs, refs))
    return _decode_texts(ns, TranslateCommandConfig, "translate", TRANSLATE_OPTIONS, translation_config,
                         ("source", "translation"), scores)


@dataclass
class SummarizeCommandConfig(TranslateCommandConfig):
    model_dir: str = option(None, "encoder-decoder model directory (from `lmforge train --task seq2seq` on documents "
                                  "and summaries) or decoder fine-tuned on them (`lmforge finetune --task sft`)",
                            positional=True)
    texts: list[str] = option([], "document(s) to summarize", positional=True)
    file: str | None = option(None, "also summarize every line of this text file, or a column of a CSV / TSV / "
                                    "JSONL table (--source-column)")
    source_column: str = option("source", "with a table --file: the column holding the documents")
    target_column: str | None = option(None, "with a table --file: a column of reference summaries; prints ROUGE "
                                             "against them")


@verb("summarize", "summarize texts with an encoder-decoder or an SFT decoder (beam search; ROUGE against "
                   "references)")
@options_of(SummarizeCommandConfig, GenerationConfig, defaults=SUMMARIZE_DEFAULTS,
            only={GenerationConfig: SUMMARIZE_OPTIONS})
def _summarize(ns):
    def scores(outputs: list[str], refs: list[str]) -> str:
        from ..evaluate.rouge import format_rouge, rouge_scores
        s = rouge_scores(outputs, refs)
        return format_rouge(s) + ("" if s["rouge_stemmer"] else " (Unicode words, no stemming)")
    return _decode_texts(ns, SummarizeCommandConfig, "summarize", SUMMARIZE_OPTIONS, summarization_config,
                         ("document", "summary"), scores)


def _decode_texts(ns, command: type, verb_name: str, names: tuple[str, ...], decoding_config,
                  keys: tuple[str, str], scores) -> int:
    """translate / summarize: decode the texts with the model's `verb_name` method, print the
    outputs (or JSON objects with `keys`), and `scores(outputs, references)` against --target-column."""
    from ..api import load
    args = from_args(command, ns)
    options = {k: getattr(ns, k) for k in names}
    decoding_config(**options)                                    # checks the decoding flags before any work
    texts, refs = _input_texts(verb_name, args.texts, args.file, args.source_column, "--source-column",
                               args.target_column, "--target-column")
    lm = load(args.model_dir, device=args.device)
    outputs = getattr(lm, verb_name)(texts, batch_size=args.batch_size, **options)
    for text, out in zip(texts, outputs):
        print(json.dumps({keys[0]: text, keys[1]: out}, ensure_ascii=False) if args.json else out)
    if refs is not None:
        refs = refs[len(args.texts):]                        # the --file rows: the argument texts have none
        print(f"{scores(outputs[len(args.texts):], refs)} over {len(refs)} pairs", file=sys.stderr)
    return 0


@dataclass
class EmbedCommandConfig:
    model_dir: str = option(None, "encoder (or decoder) model directory, e.g. an imported all-MiniLM-L6-v2",
                            positional=True)
    texts: list[str] = option([], "text(s) to embed", positional=True)
    file: str | None = option(None, "also embed every line of this text file, or a column of a table: CSV / TSV / "
                                    "JSONL / Parquet / Arrow (--text-column)")
    text_column: str = option("text", "with a table --file: the column holding the text")
    similarity: bool = option(False, "print the cosine similarity of every pair of texts instead of the vectors")
    device: str = option("auto", "auto, cpu or cuda", check=device_name)

    def __post_init__(self) -> None:
        validate(self)


@verb("embed", "sentence embeddings of texts (one JSON vector per line), or their cosine similarities")
@options_of(EmbedCommandConfig, EmbedConfig)
def _embed(ns):
    from ..api import load
    args, options = from_args(EmbedCommandConfig, ns), from_args(EmbedConfig, ns)        # both checked before any work
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
