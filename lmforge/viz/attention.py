"""Attention maps: the weights every head puts on every earlier token, for decoders, encoders
and encoder-decoders (encoder self attention, decoder self attention, decoder-to-source cross
attention), and a matplotlib drawing of one head or of all heads of a layer.

The model computes them itself: each `Attention` module appends its weights to `recorded`
while that is a list (`model.attention.attention_weights`), and this module turns that on for one
forward pass.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..errors import LmforgeError

KINDS = {"decoder": ("self",), "encoder": ("self",), "seq2seq": ("cross", "encoder", "decoder")}


def _attention_modules(model, kind: str) -> list:
    family = model.config.family
    if family == "seq2seq":
        if kind == "encoder":
            return [b.attn for b in model.encoder.blocks]
        return [b.cross_attn if kind == "cross" else b.attn for b in model.decoder.blocks]
    return [b.attn for b in model.transformer.blocks]


def check_kind(family: str, kind: str) -> str:
    kinds = KINDS[family]
    if kind == "auto":
        return kinds[0]
    if kind not in kinds:
        raise LmforgeError(f"attention kind {kind!r} does not exist in a {family} model; use one of "
                           f"{', '.join(kinds)}")
    return kind


@torch.no_grad()
def attention_maps(model, src_ids: list[int], tgt_ids: list[int] | None = None, kind: str = "auto") -> torch.Tensor:
    """(layers, heads, queries, keys) float32 attention weights for one token sequence (src_ids;
    an encoder-decoder also needs the decoder's input ids tgt_ids)."""
    kind = check_kind(model.config.family, kind)
    modules = _attention_modules(model, kind)
    device = next(model.parameters()).device
    src = torch.tensor([src_ids], device=device)
    was_training = model.training
    model.eval()
    for m in modules:
        m.recorded = []
    try:
        if model.config.family == "seq2seq":
            assert tgt_ids is not None, "an encoder-decoder needs the decoder's input ids"
            model(src, torch.tensor([tgt_ids], device=device))
        elif model.config.family == "encoder":
            model.hidden_states(src)
        else:
            model(src)
        maps = [m.recorded[0][0] for m in modules]            # (heads, Tq, Tk) each
    finally:
        for m in modules:
            m.recorded = None
        model.train(was_training)
    return torch.stack(maps).float().cpu()


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
