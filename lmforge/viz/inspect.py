"""Pictures of the glass-box tools (`lmforge.inspect`): heatmaps and bars drawn with matplotlib,
one function per tool, each taking the tool's result and writing a PNG (whole or not at all)."""

from __future__ import annotations

from pathlib import Path

import torch

_MAX_LABELS = 64            # tick labels beyond this many would overlap: left off


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _label(token: str) -> str:
    return repr(token)[1:-1].replace(" ", "␣") or "·"


def _save(fig, out_png, title: str) -> Path:
    from ..modeldir import atomic_write
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    atomic_write(Path(out_png), lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    _plt().close(fig)
    return Path(out_png)


def _heatmap(fig, ax, values: torch.Tensor, x: list[str], y: list[str], title: str, cbar: str,
             diverging: bool = False, text: list[list[str]] | None = None, vmax: float | None = None) -> None:
    """values (rows, columns) with labelled axes; `diverging`: red/blue around 0; `text`: cell labels."""
    v = values.float().numpy()
    if diverging:
        limit = vmax or max(float(abs(values).max()), 1e-9)
        im = ax.imshow(v, cmap="RdBu", vmin=-limit, vmax=limit, aspect="auto")
    else:
        im = ax.imshow(v, cmap="viridis", vmin=0.0, vmax=vmax, aspect="auto")
    for ticks, labels in ((ax.set_xticks, x), (ax.set_yticks, y)):
        if len(labels) <= _MAX_LABELS:
            ticks(range(len(labels)), labels, fontsize=7, **({"rotation": 90} if ticks == ax.set_xticks else {}))
        else:
            ticks([])
    if text is not None and v.size <= 600:
        norm = im.norm
        for i, row in enumerate(text):
            for j, t in enumerate(row):
                shade = float(norm(v[i, j]))                              # 0..1 along the colour map
                dark = abs(shade - 0.5) > 0.3 if diverging else shade < 0.5
                ax.text(j, i, t, ha="center", va="center", fontsize=6, color="white" if dark else "black")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=cbar)


def plot_lens(lens, out_png, title: str = "") -> Path:
    """Logit lens: the top-1 token of every layer (rows) and position (columns), coloured by its probability."""
    plt = _plt()
    L, T = lens.top_probs.shape[:2]
    fig, ax = plt.subplots(figsize=(min(3 + 0.6 * T, 24), 1.5 + 0.45 * L))
    text = [[_label(lens.top_tokens[i][t][0])[:5] for t in range(T)] for i in range(L)]
    _heatmap(fig, ax, lens.top_probs[:, :, 0], [_label(t) for t in lens.tokens], lens.layers,
             "logit lens: top token (columns: input tokens; the lens predicts the next one)", "top-1 probability",
             text=text, vmax=1.0)
    return _save(fig, out_png, title)


def plot_dla(attr, out_png, title: str = "") -> Path:
    """Direct logit attribution: heads (layers x heads), and per layer the MLP and attention bias."""
    plt = _plt()
    L, H = attr.heads.shape
    fig, (left, right) = plt.subplots(1, 2, figsize=(4 + 0.7 * H + 5, 1.5 + 0.5 * L))
    what = repr(attr.answer) + (f" - {attr.wrong!r}" if attr.wrong else "")
    _heatmap(fig, left, attr.heads, [f"H{h}" for h in range(H)], [f"L{i}" for i in range(L)],
             f"heads' direct effect on {what}", "logit", diverging=True,
             text=[[f"{v:.2f}" for v in row] for row in attr.heads.tolist()])
    parts = [("embed", attr.embed)] + [(f"L{i} MLP", float(attr.mlps[i])) for i in range(L)]
    parts += [(f"L{i} attn bias", float(attr.attn_bias[i])) for i in range(L)]
    right.barh([p for p, _ in parts][::-1], [v for _, v in parts][::-1],
               color=["tab:red" if v > 0 else "tab:blue" for _, v in parts][::-1])
    right.axvline(0, color="black", lw=0.5)
    right.set_title(f"embeddings, MLPs, biases (logit {attr.logit:.2f})", fontsize=9)
    right.tick_params(labelsize=7)
    return _save(fig, out_png, title)


def plot_patching(result, out_png, title: str = "") -> Path:
    """Activation patching: restored logit difference per (layer, position) and per (layer, head)."""
    plt = _plt()
    L, T = result.resid.shape
    H = result.heads.shape[1]
    fig, (left, right) = plt.subplots(1, 2, figsize=(min(4 + 0.5 * T, 20) + 3 + 0.6 * H, 1.8 + 0.45 * L),
                                      gridspec_kw={"width_ratios": [max(T, 2), max(H, 2)]})
    layers = [f"L{i}" for i in range(L)]
    _heatmap(fig, left, result.resid, [_label(t) for t in result.tokens], layers,
             "residual stream (blocks.l.hook_resid_pre)", "restored", diverging=True, vmax=1.0)
    _heatmap(fig, right, result.heads, [f"H{h}" for h in range(H)], layers, "heads (hook_z, every position)",
             "restored", diverging=True, vmax=1.0, text=[[f"{v:.2f}" for v in row] for row in result.heads.tolist()])
    return _save(fig, out_png, title)


def plot_attribution(attr, out_png, title: str = "") -> Path:
    """Input attribution: one bar per input token."""
    plt = _plt()
    T = len(attr.tokens)
    fig, ax = plt.subplots(figsize=(min(3 + 0.35 * T, 24), 3.5))
    scores = attr.scores.tolist()
    ax.bar(range(T), scores, color=["tab:red" if s > 0 else "tab:blue" for s in scores])
    ax.axhline(0, color="black", lw=0.5)
    if T <= _MAX_LABELS:
        ax.set_xticks(range(T), [_label(t) for t in attr.tokens], rotation=90, fontsize=7)
    method = "integrated gradients" if attr.method == "ig" else "gradient x input"
    ax.set_title(f"{method} for {attr.target!r} (sum {sum(scores):.3f}; f(x) - f(0) = "
                 f"{attr.output - attr.baseline_output:.3f})", fontsize=9)
    return _save(fig, out_png, title)


def plot_head_scores(scores, out_png, title: str = "") -> Path:
    """Head scores: one (layers x heads) heatmap per score."""
    plt = _plt()
    table = scores.scores()
    L, H = scores.entropy.shape
    fig, axes = plt.subplots(1, len(table), figsize=(len(table) * (2.5 + 0.6 * H), 1.5 + 0.5 * L), squeeze=False)
    for ax, (name, values) in zip(axes[0], table.items()):
        entropy = name == "entropy"
        _heatmap(fig, ax, values, [f"H{h}" for h in range(H)], [f"L{i}" for i in range(L)],
                 name.replace("_", " "), "nats" if entropy else "attention", vmax=None if entropy else 1.0,
                 text=[[f"{v:.2f}" for v in row] for row in values.tolist()])
    return _save(fig, out_png, title)
