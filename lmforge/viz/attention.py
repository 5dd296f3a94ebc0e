"""A matplotlib drawing of attention maps — one head, or all heads of a layer — as
`lmforge.inspect.attention_maps` gives them (the `hook_pattern` of every layer)."""

from __future__ import annotations

import math
from pathlib import Path

import torch


def plot_attention(layer_maps: torch.Tensor, queries: list[str], keys: list[str], out_png: str | Path,
                   head: int | None = None, title: str = "") -> Path:
    """Heatmap of one head (`head`) or a grid of all heads of a layer: layer_maps (heads, Tq, Tk)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    heads = [head] if head is not None else list(range(layer_maps.shape[0]))
    cols = min(4, len(heads))
    rows = math.ceil(len(heads) / cols)
    size = 6 if len(heads) == 1 else 3
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    label = [repr(t)[1:-1].replace(" ", "␣") or "·" for t in keys]
    for ax, h in zip(axes.flat, heads):
        ax.imshow(layer_maps[h].numpy(), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
        ax.set_title(f"head {h}", fontsize=9)
        if len(heads) == 1 and len(keys) <= 64:
            ax.set_xticks(range(len(keys)), label, rotation=90, fontsize=7)
            ax.set_yticks(range(len(queries)), [repr(t)[1:-1].replace(" ", "␣") or "·" for t in queries], fontsize=7)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
    for ax in list(axes.flat)[len(heads):]:
        ax.axis("off")
    fig.suptitle(title + "  (rows: queries, columns: keys)", fontsize=10)
    fig.tight_layout()
    from ..modeldir import atomic_write
    atomic_write(Path(out_png), lambda tmp: fig.savefig(tmp, dpi=80, format="png"))
    plt.close(fig)
    return Path(out_png)
