"""Classification metrics: accuracy, per-class precision / recall / F1, macro averages and the
confusion matrix (rows: true class, columns: predicted class).

A class never predicted has precision 0, a class absent from the truth has recall 0 (as
scikit-learn with zero_division=0); macro averages weigh every class equally. `label_metrics`
scores label names (a classifier's predictions against a labelled file, some rows unlabelled).

    >>> m = classification_metrics([0, 0, 1, 1], [0, 1, 1, 1], ["neg", "pos"])
    >>> m["accuracy"], m["per_class"]["pos"]["precision"], round(m["macro_f1"], 4)
    (0.75, 0.6667, 0.7333)
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch

REPORT_FILE, CONFUSION_PNG = "classification_report.json", "confusion_matrix.png"


def confusion_matrix(y_true: list[int] | torch.Tensor, y_pred: list[int] | torch.Tensor, n_classes: int) -> torch.Tensor:
    """(C, C) counts: entry [t, p] = examples of class t predicted as p."""
    t = torch.as_tensor(y_true, dtype=torch.long)
    p = torch.as_tensor(y_pred, dtype=torch.long)
    return torch.bincount(t * n_classes + p, minlength=n_classes * n_classes).view(n_classes, n_classes)


def classification_metrics(y_true, y_pred, labels: list[str]) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1/support, macro precision/recall/F1, confusion matrix."""
    C = len(labels)
    cm = confusion_matrix(y_true, y_pred, C).double()
    tp = cm.diag()
    predicted, actual = cm.sum(0), cm.sum(1)
    precision = torch.where(predicted > 0, tp / predicted.clamp(min=1), torch.zeros_like(tp))
    recall = torch.where(actual > 0, tp / actual.clamp(min=1), torch.zeros_like(tp))
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12), torch.zeros_like(tp))
    total = cm.sum().item()
    r4 = lambda x: round(float(x), 4)  # noqa: E731
    return {
        "accuracy": r4(tp.sum().item() / total) if total else 0.0,
        "macro_precision": r4(precision.mean()), "macro_recall": r4(recall.mean()), "macro_f1": r4(f1.mean()),
        "examples": int(total),
        "per_class": {lab: {"precision": r4(precision[i]), "recall": r4(recall[i]), "f1": r4(f1[i]),
                            "support": int(actual[i])} for i, lab in enumerate(labels)},
        "labels": list(labels),
        "confusion_matrix": cm.long().tolist(),
    }


def label_metrics(labels: list[str], truth: list[str | None], predicted: list[str]) -> dict[str, Any] | None:
    """`classification_metrics` of predicted labels against true ones, over the rows that have a
    true label (None: not given). Rows whose true label the model was never trained on are left
    out, with a warning; the classes scored are those of `labels` that occur (as scikit-learn).
    None when no row is left to score.

    >>> m = label_metrics(["neg", "pos", "meh"], ["neg", None, "pos", "pos"], ["neg", "neg", "pos", "neg"])
    >>> m["labels"], m["accuracy"], m["examples"]
    (['neg', 'pos'], 0.6667, 3)
    """
    pairs = [(t, p) for t, p in zip(truth, predicted) if t is not None]
    unseen = sorted({t for t, _ in pairs if t not in labels})
    if unseen:
        n = sum(t in unseen for t, _ in pairs)
        warnings.warn(f"{n} row(s) have labels the model was never trained on ({', '.join(map(repr, unseen[:10]))}); "
                      f"they are left out of the scores — the model knows {', '.join(labels)}")
    known = [(t, p) for t, p in pairs if t in labels]
    if not known:
        return None
    present = [lab for lab in labels if any(lab in tp for tp in known)]          # as scikit-learn: labels that occur
    y, yhat = zip(*[(present.index(t), present.index(p)) for t, p in known])
    return classification_metrics(list(y), list(yhat), present)


def format_metrics(m: dict[str, Any], top: int | None = None) -> str:
    """A short text table: per-class rows (optionally only the `top` largest), then the averages."""
    rows = sorted(m["per_class"].items(), key=lambda kv: -kv[1]["support"])
    if top is not None:
        rows = rows[:top]
    width = max([len(k) for k, _ in rows] + [9])
    lines = [f"{'class':<{width}}  precision  recall     f1  support"]
    lines += [f"{k:<{width}}  {v['precision']:9.3f}  {v['recall']:6.3f}  {v['f1']:5.3f}  {v['support']:7d}"
              for k, v in rows]
    if top is not None and len(m["per_class"]) > top:
        lines.append(f"... {len(m['per_class']) - top} more classes in the JSON report")
    lines.append(f"accuracy {m['accuracy']:.4f}, macro precision {m['macro_precision']:.4f}, macro recall "
                 f"{m['macro_recall']:.4f}, macro-F1 {m['macro_f1']:.4f} over {m['examples']} examples")
    return "\n".join(lines)


def write_report(m: dict[str, Any], out_dir: str | Path, extra: dict[str, Any] | None = None) -> tuple[Path, Path]:
    """classification_report.json and confusion_matrix.png in `out_dir`."""
    from ..modeldir import write_json
    from ..viz.plots import plot_confusion
    out_dir = Path(out_dir)
    write_json(out_dir / REPORT_FILE, {**(extra or {}), **m})
    plot_confusion(m["confusion_matrix"], m["labels"], out_dir / CONFUSION_PNG,
                   title=f"accuracy {m['accuracy']:.3f}, macro-F1 {m['macro_f1']:.3f}")
    return out_dir / REPORT_FILE, out_dir / CONFUSION_PNG
