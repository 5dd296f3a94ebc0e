"""Loss curves from metrics.jsonl (matplotlib, no display needed)."""

from __future__ import annotations

import json
from pathlib import Path


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by an interruption
    return rows


def plot_loss(metrics_path: str | Path, out_png: str | Path) -> Path | None:
    """Train loss (and validation loss, if logged) against step, written to `out_png`; with the
    rows of `train --inspect-interval`, beside it each layer's highest head scores and its
    logit-lens loss."""
    rows = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in rows if r.get("kind") == "train" and "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in rows if r.get("kind") == "eval" and "val_loss" in r]
    if not train and not val:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    inspected = [r for r in rows if r.get("kind") == "inspect"]
    fig, axes = plt.subplots(1, 3 if inspected else 1, figsize=(18 if inspected else 7, 4), squeeze=False)
    ax = axes[0, 0]
    if train:
        ax.plot(*zip(*train), label="train", lw=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation", lw=1.5)
    _finish(ax, "loss", Path(metrics_path).parent.name)
    if inspected:
        _plot_inspection(axes[0, 1], axes[0, 2], inspected)
    fig.tight_layout()
    from ..modeldir import atomic_write
    atomic_write(Path(out_png), lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return Path(out_png)


def _finish(ax, ylabel: str, title: str) -> None:
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def _series(rows: list[dict], prefix: str) -> dict[str, list[tuple[int, float]]]:
    """{key suffix: [(step, value)]} of the keys of `rows` that start with `prefix`, in first-seen order."""
    found: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        for k, v in r.items():
            if k.startswith(prefix) and isinstance(v, (int, float)):
                found.setdefault(k[len(prefix):], []).append((r["step"], v))
    return found


def _plot_inspection(heads_ax, lens_ax, rows: list[dict]) -> None:
    """The {"kind": "inspect"} rows: per layer, the highest induction (solid) and previous-token
    (dashed) head score; and the logit-lens loss of each layer's residual stream."""
    for (kind, style) in (("induction_L", "-"), ("previous_token_L", "--")):
        for layer, points in _series(rows, kind).items():
            name = kind.removesuffix("_L").replace("_", "-")
            heads_ax.plot(*zip(*points), style, color=f"C{int(layer) % 10}", lw=1.2, label=f"{name} L{layer}")
    heads_ax.set_ylim(0, 1.02)
    _finish(heads_ax, "highest head score in the layer", "heads: induction (solid), previous token (dashed)")
    for label, points in _series(rows, "lens_loss_").items():
        lens_ax.plot(*zip(*points), lw=1.2, label=label)
    if lens_ax.lines:
        _finish(lens_ax, "loss (nats)", "logit lens: loss read at each layer")
    else:
        lens_ax.set_axis_off()


def plot_confusion(matrix: list[list[int]], labels: list[str], out_png: str | Path, title: str = "") -> Path:
    """A confusion matrix (rows: true class, columns: predicted) as a heat map, counts in cells."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    cm = np.asarray(matrix)
    n = len(labels)
    size = min(4 + 0.45 * n, 24)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    row_sums = np.maximum(cm.sum(1, keepdims=True), 1)
    im = ax.imshow(cm / row_sums, cmap="Blues", vmin=0, vmax=1)     # colour: fraction of the true class
    ax.set_xticks(range(n), labels, rotation=90 if n > 6 else 0)
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 30:
        for i in range(n):
            for j in range(n):
                if cm[i, j]:
                    ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7 if n > 12 else 9,
                            color="white" if cm[i, j] / row_sums[i, 0] > 0.5 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    ax.set_title(title)
    fig.tight_layout()
    from ..modeldir import atomic_write
    atomic_write(Path(out_png), lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return Path(out_png)
