"""Sequence-to-sequence training (task `seq2seq`): source / target columns of a table (any format
`data/tables.py` reads) -> teacher-forced batches for an encoder-decoder, label-smoothed
cross-entropy, validation scores on greedy outputs, and a final test report with beam search
written into the model directory. The scores are BLEU / chrF (translation) or, with
`metric="rouge"`, ROUGE-1 / 2 / L / Lsum (summarization). The encoding is `lmforge.data.pairs`'.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ..config import ModelConfig
from ..data.batching import pad_right
from ..data.pairs import TARGET_TOKENIZER_DIR, encode_pairs, load_target_tokenizer
from ..data.tables import TableConfig, read_table, split_indices, table_tokenizer
from ..errors import ConfigError
from ..options import at_least, option
from ..tokenizers import Tokenizer
from .base import Task

REPORT_FILE = "translation_report.json"
SUMMARY_REPORT_FILE = "summarization_report.json"          # metric="rouge"


@dataclass
class Seq2SeqConfig(TableConfig):
    source_column: str = option("source", "table column holding the source text (e.g. en)")
    target_column: str = option("target", "table column holding the target text (e.g. zh)")
    separate_vocab: bool = option(False, "training from scratch: a tokenizer per side (stored as target_tokenizer/ "
                                         "in the model directory) instead of one shared vocabulary")
    label_smoothing: float = option(0.1, "label smoothing of the training loss (validation loss is plain "
                                         "cross-entropy)")
    metric: str = option("bleu", "how validation and test outputs are scored: bleu (BLEU and chrF, sacrebleu: "
                                 "translation) or rouge (ROUGE-1/2/L/Lsum, rouge-score: summarization)",
                         choices=("bleu", "rouge"))
    eval_translations: int = option(64, "validation pairs translated (greedily) for BLEU / chrF (or ROUGE) at each "
                                        "evaluation (0: none)", check=at_least(0))
    test_beams: int = option(4, "beam size for the final test-set translations", check=at_least(1))
    no_repeat_ngram_size: int = option(4, "validation and test translations: never repeat an n-gram of this many "
                                          "tokens (0 disables it; 4 measured best on en -> zh)", check=at_least(0))

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ConfigError(f"label_smoothing={self.label_smoothing} must be in [0, 1)")


class Seq2SeqTask(Task):
    name = "seq2seq"
    in_passes = True
    reports_perplexity = True

    def __init__(self, path: str | Path, config, tokenizer: Tokenizer | None, options: Seq2SeqConfig | None = None,
                 tokenizer_dir: str | Path | None = None):
        o = self.options = options or Seq2SeqConfig()
        self.path = Path(path)
        if config.family != "seq2seq":
            raise ConfigError(f"task seq2seq needs an encoder-decoder model, not a {config.family}; pick "
                              f"--preset seq2seq-mini (or seq2seq-tiny, transformer-base)")
        flags = {o.source_column: "--source-column", o.target_column: "--target-column"}
        rows = read_table(path, [o.source_column, o.target_column], (), flags)
        sources = [r[o.source_column] for r in rows]
        targets = [r[o.target_column] for r in rows]
        if tokenizer is None:                                   # from scratch: tokenizers trained on the pairs
            if o.separate_vocab:
                self.tokenizer = table_tokenizer(o, sources)
                self.target_tokenizer = table_tokenizer(o, targets)
            else:
                self.tokenizer = self.target_tokenizer = table_tokenizer(o, sources + targets)
            tokenizer = self.tokenizer
        else:
            self.target_tokenizer = load_target_tokenizer(tokenizer_dir, tokenizer) if tokenizer_dir else tokenizer
        if self.target_tokenizer.bos_id is None or self.target_tokenizer.eos_id is None:
            raise ConfigError("the target tokenizer has no <bos> / <eos> token; seq2seq needs both to start and end "
                              "a translation")
        self.src_tok, self.pad_id = tokenizer, tokenizer.pad_id or 0
        self.tgt_pad = self.target_tokenizer.pad_id or 0
        src_ids, tgt_ids, truncated = encode_pairs(tokenizer, self.target_tokenizer, sources, targets,
                                                   config.context_length)
        if truncated:
            warnings.warn(f"{truncated} of {len(rows)} pairs of {path} have a side longer than the model's context "
                          f"of {config.context_length} tokens and were truncated", stacklevel=2)
        idx = split_indices(len(rows), o.val_fraction, o.test_fraction, o.split_seed)
        self.splits = {s: ([src_ids[i] for i in ii], [tgt_ids[i] for i in ii]) for s, ii in idx.items()}
        self.texts = {s: ([sources[i] for i in ii], [targets[i] for i in ii]) for s, ii in idx.items()}
        print(f"pairs {path}: {len(rows)} rows, split " + ", ".join(f"{s} {len(v[0])}" for s, v in self.splits.items()))

    def model_changes(self) -> dict[str, Any]:
        if self.tokenizer is None:
            return {}
        separate = self.target_tokenizer is not self.tokenizer
        return {"vocab_size": self.tokenizer.vocab_size,
                "target_vocab_size": self.target_tokenizer.vocab_size if separate else None}

    def extra_files(self, out_dir: Path) -> None:
        if self.target_tokenizer is not self.src_tok:
            self.target_tokenizer.save(Path(out_dir) / TARGET_TOKENIZER_DIR)

    def sample(self, split: str, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(len(self.splits[split][0]), (n,), generator=generator)

    def train_examples(self) -> int:
        return len(self.splits["train"][0])

    def collate(self, split: str, indices: torch.Tensor) -> dict[str, torch.Tensor]:
        src, tgt = self.splits[split]
        idx = indices.tolist()
        x, valid = pad_right([src[i] for i in idx], self.pad_id)
        y_in, _ = pad_right([tgt[i][:-1] for i in idx], self.tgt_pad)
        labels, _ = pad_right([tgt[i][1:] for i in idx], self.tgt_pad, fill=-100)
        return {"src": x, "src_valid": valid, "tgt": y_in, "labels": labels}

    def loss(self, model, batch):
        logits = model(batch["src"], batch["tgt"], src_valid=batch["src_valid"])     # (B, T, V)
        smoothing = self.options.label_smoothing if model.training else 0.0
        return F.cross_entropy(logits.float().flatten(0, 1), batch["labels"].flatten(), ignore_index=-100,
                               label_smoothing=smoothing)

    def tokens_in(self, batch):
        return int(batch["src_valid"].sum() + (batch["labels"] != -100).sum())

    # ---- translation quality -----------------------------------------------------------------
    def _translate(self, model, split: str, n: int | None, num_beams: int) -> tuple[list[str], list[str], list[str]]:
        from ..generate.seq2seq import generate_seq2seq_ids
        src_ids = self.splits[split][0][:n]
        sources, references = (t[:n] for t in self.texts[split])
        hyps = []
        for start in range(0, len(src_ids), 32):
            ids, _ = generate_seq2seq_ids(model, src_ids[start: start + 32], bos_id=self.target_tokenizer.bos_id,
                                          eos_id=self.target_tokenizer.eos_id, pad_id=self.tgt_pad,
                                          num_beams=num_beams, no_repeat_ngram_size=self.options.no_repeat_ngram_size)
            hyps += [self.target_tokenizer.decode(s) for s in ids]
        return list(sources), hyps, list(references)

    def _scores(self, hypotheses: list[str], references: list[str]) -> tuple[dict[str, float], dict, str]:
        """(the scores logged, everything the scorer reports, one printable line) of the outputs."""
        if self.options.metric == "rouge":
            from ..evaluate.rouge import ROUGE_TYPES, format_rouge, rouge_scores
            s = rouge_scores(hypotheses, references)
            return {kind: s[kind] for kind in ROUGE_TYPES}, s, format_rouge(s)
        from ..evaluate.bleu import format_bleu, translation_scores
        s = translation_scores(hypotheses, references)
        return {"bleu": s["bleu"], "chrf": s["chrf"]}, s, format_bleu(s)

    def evaluate(self, model, device, autocast) -> dict[str, float]:
        if self.options.eval_translations <= 0:
            return {}
        with autocast():
            _, hyps, refs = self._translate(model, "val", self.options.eval_translations, 1)
        return {f"val_{k}": v for k, v in self._scores(hyps, refs)[0].items()}

    def sampler(self) -> Callable[[torch.nn.Module], str]:
        def sample(model) -> str:
            src, hyp, _ = self._translate(model, "val", 1, 1)
            return f"{src[0]} => {hyp[0]}"
        return sample

    def report(self, model, out_dir: Path, device, autocast) -> dict[str, Any]:
        from ..modeldir import write_json
        split = "test" if self.splits["test"][0] else "val"
        with autocast():
            sources, hyps, refs = self._translate(model, split, None, self.options.test_beams)
        logged, s, line = self._scores(hyps, refs)
        rouge = self.options.metric == "rouge"
        name, output = (SUMMARY_REPORT_FILE, "summary") if rouge else (REPORT_FILE, "translation")
        samples = [{"source": a, "reference": r, output: h} for a, h, r in zip(sources, hyps, refs)]
        write_json(Path(out_dir) / name, {"split": split, "data": str(self.path), "pairs": len(hyps),
                                          "num_beams": self.options.test_beams, **s, "samples": samples})
        print(f"\n{split} set ({len(hyps)} pairs, beam {self.options.test_beams}): {line}")
        for x in samples[:3]:
            print(f"  source:      {x['source']}\n  reference:   {x['reference']}\n  {output + ':':<13}{x[output]}")
        print(f"wrote {Path(out_dir) / name}")
        return {f"{split}_{k}": v for k, v in logged.items()}


def build(cfg, config: ModelConfig, tokenizer) -> Seq2SeqTask:
    tokenizer_dir = cfg.out if cfg.resume else cfg.init_from
    return Seq2SeqTask(cfg.data, config, tokenizer, cfg.options_for(Seq2SeqConfig), tokenizer_dir)
