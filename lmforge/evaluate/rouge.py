"""ROUGE with Google's `rouge-score` (the reference implementation, a port of Lin's ROUGE-1.5.5,
so scores compare with published ones): the F-measures of ROUGE-1, ROUGE-2, ROUGE-L (longest
common subsequence over the whole text) and ROUGE-Lsum (over sentences: rouge-score splits a
summary at newlines), averaged over the pairs, 0-100. Porter stemming is on, as the
summarization papers report (ROUGE-1.5.5's `-m`).

rouge-score's tokenizer lowercases and keeps only a-z and 0-9, so text in another script would
score 0: when at least a fifth of the references' letters are not ASCII, `UnicodeTokenizer`
(words of letters and digits in any script; Chinese and Japanese one character per token)
replaces it, without stemming (Porter's is for English).

    >>> s = rouge_scores(["the cats sat on the mat"], ["the cat sat on the mat"])
    >>> round(s["rouge1"], 2), round(s["rouge2"], 2), s["rouge_tokenize"]
    (100.0, 100.0, 'default')

`lead` is the lead baseline: the document's first sentence, the summary to beat.
"""

from __future__ import annotations

import re

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL", "rougeLsum")
ROUGE_NAMES = {"rouge1": "ROUGE-1", "rouge2": "ROUGE-2", "rougeL": "ROUGE-L", "rougeLsum": "ROUGE-Lsum"}

_HAN_KANA = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff]")      # no spaces between words
_UNICODE_TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff]|[^\W_]+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


class UnicodeTokenizer:
    """rouge-score's tokenizer interface (`tokenize(text) -> tokens`) for text in any script:
    lowercased runs of letters and digits, each Chinese / Japanese character a token of its own."""

    def tokenize(self, text: str) -> list[str]:
        return _UNICODE_TOKEN.findall(text.lower())


def rouge_tokenize_for(references: list[str]) -> str:
    """"unicode" when at least a fifth of the reference letters are not ASCII, else "default"
    (rouge-score's own tokenizer, with stemming)."""
    letters = [c for c in "".join(references) if c.isalnum()]
    foreign = sum(1 for c in letters if not c.isascii())
    return "unicode" if letters and foreign / len(letters) >= 0.2 else "default"


def rouge_scorer_for(references: list[str]):
    """(rouge_score.rouge_scorer.RougeScorer for these references, its tokenizer's name)."""
    from rouge_score import rouge_scorer
    tokenize = rouge_tokenize_for(references)
    if tokenize == "unicode":
        return rouge_scorer.RougeScorer(list(ROUGE_TYPES), tokenizer=UnicodeTokenizer()), tokenize
    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True), tokenize


def rouge_scores(predictions: list[str], references: list[str]) -> dict[str, float | str | bool]:
    """Mean ROUGE-1 / 2 / L / Lsum F-measures (0-100) of `predictions` against one reference each,
    and how the text was tokenized ("rouge_tokenize", "rouge_stemmer")."""
    assert len(predictions) == len(references), "one reference per prediction"
    scorer, tokenize = rouge_scorer_for(references)
    totals = dict.fromkeys(ROUGE_TYPES, 0.0)
    for prediction, reference in zip(predictions, references):
        scores = scorer.score(reference, prediction)           # rouge-score's order: (target, prediction)
        for kind in ROUGE_TYPES:
            totals[kind] += scores[kind].fmeasure
    n = max(len(predictions), 1)
    return {**{kind: 100 * total / n for kind, total in totals.items()}, "rouge_tokenize": tokenize,
            "rouge_stemmer": tokenize == "default"}


def format_rouge(scores: dict) -> str:
    """"ROUGE-1 41.20, ROUGE-2 19.05, ROUGE-L 38.11, ROUGE-Lsum 38.11"."""
    return ", ".join(f"{ROUGE_NAMES[kind]} {scores[kind]:.2f}" for kind in ROUGE_TYPES)


def lead(document: str) -> str:
    """The lead baseline's summary: the document's first sentence (up to its first newline, then
    up to the first ".", "!" or "?" followed by a space)."""
    first_line = document.strip().split("\n", 1)[0]
    return _SENTENCE_END.split(first_line, maxsplit=1)[0].strip()
