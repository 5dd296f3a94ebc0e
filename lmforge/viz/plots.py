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
    """Train loss (and validation loss, if logged) against step, written to `out_png`."""
    rows = read_metrics(metrics_path)
    train = [(r["step"], r["loss"]) for r in rows if r.get("kind") == "train" and "loss" in r]
    val = [(r["step"], r["val_loss"]) for r in rows if r.get("kind") == "eval" and "val_loss" in r]
    if not train and not val:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train), label="train", lw=1)
    if val:
        ax.plot(*zip(*val), "o-", label="validation", lw=1.5)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(Path(metrics_path).parent.name)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    from ..modeldir import atomic_write
    atomic_write(Path(out_png), lambda tmp: fig.savefig(tmp, dpi=100, format="png"))
    plt.close(fig)
    return Path(out_png)


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
