"""The classical baseline a classifier is judged against: TF-IDF features + logistic regression
(scikit-learn), once on word 1-2-grams and once on character 2-5-grams, trained on the same
training rows and scored on the same held-out rows as the model. On small tables this two-line
model is often hard to beat; a classifier behind it should say so, with what usually helps.

scikit-learn is an optional extra (`pip install "lmforge[baseline]"`): without it `fit_baselines`
warns once, with that hint, and returns None — the run goes on without a baseline.

    >>> fitted = fit_baselines(["good fun", "great fun", "bad day", "awful day"], ["pos", "pos", "neg", "neg"])
    >>> sorted(fitted)
    ['char', 'word']
    >>> fitted["word"].predict(["fun"]).tolist()
    ['pos']
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

BASELINE_NAMES = {"word": "word 1-2-grams", "char": "character 2-5-grams"}
MISSING_HINT = ("scikit-learn is not installed, so no TF-IDF baseline is reported beside this classifier; "
                "pip install \"lmforge[baseline]\" (or pass --no-baseline)")
# what usually closes the gap, most effective first (docs/finetuning.md, "Pretrain, then fine-tune")
FIXES = ("start from a pretrained encoder (an imported one such as all-MiniLM-L6-v2, or your own: `lmforge train "
         "--task mlm` on unlabelled text, then `lmforge finetune ENCODER --task classify`), train longer "
         "(--max-steps), or use the baseline itself")


def _pipeline(kind: str, seed: int):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    vectorizer = (TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True) if kind == "word" else
                  TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2))
    # C=10: TF-IDF rows are unit-length, so the default C=1 regularises too strongly on small tables.
    # saga with tol 1e-3: on the fortunes-topics table (10.6k rows, 26 labels) it fits 10x faster than
    # lbfgs (2 + 8 s against 46 + 53 s, word + char) to the same macro-F1 (0.463 / 0.526 against 0.464 / 0.526)
    return make_pipeline(vectorizer, LogisticRegression(C=10, solver="saga", tol=1e-3, max_iter=1000,
                                                        random_state=seed))


def fit_baselines(texts: list[str], labels: list[str], seed: int = 0) -> dict[str, Any] | None:
    """{"word": pipeline, "char": pipeline}, each fitted on (texts, labels); None (with a warning)
    when scikit-learn is missing. A kind that cannot be fitted (e.g. no n-gram occurs twice in a
    tiny table) is left out."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        warnings.warn(MISSING_HINT, stacklevel=2)
        return None
    fitted = {}
    for kind in BASELINE_NAMES:
        try:
            fitted[kind] = _pipeline(kind, seed).fit(texts, labels)
        except ValueError:              # an empty vocabulary (min_df), a single class: no such baseline
            continue
    return fitted


def score_baselines(fitted: dict[str, Any], texts: list[str],
                    score: Callable[[list[str]], dict[str, Any] | None]) -> dict[str, dict[str, Any]]:
    """{kind: score(the baseline's predicted labels for `texts`)}: `score` is what the model's own
    predictions are scored with, so that both are measured alike (kinds it returns None for are left out)."""
    out = {}
    for kind, pipe in fitted.items():
        m = score([str(p) for p in pipe.predict(texts)])
        if m is not None:
            out[kind] = m
    return out


def best_kind(scores: dict[str, dict[str, Any]]) -> str | None:
    """The baseline with the higher macro-F1 (None when there is none)."""
    return max(scores, key=lambda k: scores[k]["macro_f1"], default=None)


def flat_scores(scores: dict[str, dict[str, Any]], split: str) -> dict[str, float]:
    """The figures a log row and the summary keep: baseline_{word,char}_{split}_{accuracy,macro_f1},
    and baseline_{split}_macro_f1 / _accuracy of the better of the two."""
    out: dict[str, float] = {}
    for kind, m in scores.items():
        out[f"baseline_{kind}_{split}_accuracy"] = m["accuracy"]
        out[f"baseline_{kind}_{split}_macro_f1"] = m["macro_f1"]
    best = best_kind(scores)
    if best is not None:
        out[f"baseline_{split}_accuracy"] = scores[best]["accuracy"]
        out[f"baseline_{split}_macro_f1"] = scores[best]["macro_f1"]
    return out


def named_rows(scores: dict[str, dict[str, Any]], split: str) -> dict[str, dict[str, float]]:
    """Rows of a results table: {"TF-IDF <kind> + logistic regression": {SPLIT_macro_f1, SPLIT_accuracy}}."""
    return {f"TF-IDF {BASELINE_NAMES[k]} + logistic regression": {f"{split}_macro_f1": m["macro_f1"],
                                                                  f"{split}_accuracy": m["accuracy"]}
            for k, m in scores.items()}


def describe(scores: dict[str, dict[str, Any]], where: str) -> str:
    """One line: both baselines' macro-F1 and accuracy on `where`, the better one named."""
    parts = [f"{BASELINE_NAMES[k]} macro-F1 {m['macro_f1']:.4f} (accuracy {m['accuracy']:.4f})"
             for k, m in scores.items()]
    best = best_kind(scores)
    return (f"TF-IDF + logistic regression baseline on {where}: " + ", ".join(parts)
            + (f"; the better: {BASELINE_NAMES[best]}" if best else ""))


def verdict(model_f1: float, scores: dict[str, dict[str, Any]], where: str) -> str | None:
    """The plain comparison of the model's macro-F1 with the better baseline's on the same rows:
    behind (with the likely fixes) or ahead; None without a baseline."""
    best = best_kind(scores)
    if best is None:
        return None
    base = scores[best]["macro_f1"]
    if model_f1 < base:
        return (f"the model is BEHIND the TF-IDF baseline: macro-F1 {model_f1:.4f} against {base:.4f} for TF-IDF "
                f"{BASELINE_NAMES[best]} + logistic regression on {where}; likely fixes: {FIXES}")
    return (f"the model is ahead of the TF-IDF baseline: macro-F1 {model_f1:.4f} against {base:.4f} for TF-IDF "
            f"{BASELINE_NAMES[best]} + logistic regression on {where}")
