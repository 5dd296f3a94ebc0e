"""Input attribution: how much each input token moves one output, over the input embeddings.

The output f is a classifier's logit for a label (default: the predicted one), or a language
model's logit for the next token after the text (default: its top prediction). The input x is
the token embeddings (`hook_embed`, so position embeddings and the rest of the model stay as
they are); the baseline x0 is all zeros, as Captum's default.

- gradient x input:      x * df/dx
- integrated gradients:  (x - x0) * integral over a in [0, 1] of df/dx at x0 + a (x - x0), by
  Gauss-Legendre quadrature over `steps` points (Captum's default `gausslegendre`); the
  attributions add up to f(x) - f(x0) (completeness), and `delta` says how far they are off.

A token's score is the sum over its embedding's dimensions; `attributions` keeps them all.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..data.classify import encode_for_classification
from ..errors import LmforgeError
from ..options import at_least, option, validate
from .hooks import bodies
from .prompts import Prompt, prompt, run, single_token, token_strings


@dataclass
class AttributeConfig:
    target: str | None = option(None, "what to explain: a classifier's label, or a language model's next token "
                                      "(one token); default: the model's own prediction")
    method: str = option("ig", "ig (integrated gradients) or gxi (gradient x input)", choices=("ig", "gxi"))
    steps: int = option(50, "integrated gradients: points of the path integral", check=at_least(2))
    batch_size: int = option(16, "integrated gradients: path points per forward pass", check=at_least(1))

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class InputAttribution:
    """`Model.attribute`: each input token's share of the output `target`."""
    tokens: list[str]
    target: str
    method: str
    scores: torch.Tensor           # (T,) per token
    attributions: torch.Tensor     # (T, d) per embedding dimension
    output: float                  # f(x)
    baseline_output: float         # f(x0): zero embeddings
    steps: int | None = None

    @property
    def delta(self) -> float:
        """Completeness error: sum of the attributions - (f(x) - f(x0)) (integrated gradients: ~0)."""
        return float(self.scores.sum()) - (self.output - self.baseline_output)

    def to_dict(self) -> dict:
        return {"tool": "attribute", "tokens": self.tokens, "target": self.target, "method": self.method,
                "steps": self.steps, "scores": [round(v, 6) for v in self.scores.tolist()],
                "output": round(self.output, 6), "baseline_output": round(self.baseline_output, 6),
                "delta": round(self.delta, 6)}

    def table(self) -> str:
        what = "integrated gradients" if self.method == "ig" else "gradient x input"
        lines = [f"{what} for {self.target!r}: f(x) {self.output:.4f}, f(baseline) {self.baseline_output:.4f}, "
                 f"sum {float(self.scores.sum()):.4f} (delta {self.delta:+.2e})", "pos  token         score"]
        return "\n".join(lines + [f"{i:<4d} {repr(t)[1:-1][:12]:13s} {s:+.4f}"
                                  for i, (t, s) in enumerate(zip(self.tokens, self.scores.tolist()))])

    def plot(self, out_png, title: str = ""):
        from ..viz.inspect import plot_attribution
        return plot_attribution(self, out_png, title)


@torch.no_grad()
def _subject(lm, text: str, target: str | None):
    """(the prompt, the head to run, pick: output -> the value f to explain (B,), f's name)."""
    model, cfg = lm.module, lm.config
    if cfg.labels:                                                          # a classifier: in the layout it trained on
        ids, _, _ = encode_for_classification(lm.tokenizer, cfg.family, [text], None, cfg.context_length)
        p = Prompt(torch.tensor(ids, device=next(model.parameters()).device), token_strings(lm.tokenizer, ids[0]))
        label = target if target is not None else cfg.labels[int(run(model, p, head="classify")[0][0].argmax())]
        if label not in cfg.labels:
            raise LmforgeError(f"{label!r} is not a label of this classifier; its labels: {', '.join(cfg.labels)}")
        index = cfg.labels.index(label)
        return p, "classify", lambda out: out[:, index], label
    if cfg.family != "decoder":
        raise LmforgeError(f"input attribution takes classifiers (a model with labels) and decoder language models; "
                           f"this {cfg.family} model has no labels")
    p = prompt(lm, text)
    if target is None:
        token = int(run(model, p)[0][0, -1].argmax())
        target = lm.tokenizer.decode([token], skip_special_tokens=False)
    else:
        token = single_token(lm.tokenizer, target, "the target")
    return p, None, lambda out: out[:, -1, token], target


def gauss_legendre(steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Points a in (0, 1) and weights of Gauss-Legendre quadrature (Captum's `gausslegendre`)."""
    nodes, weights = np.polynomial.legendre.leggauss(steps)
    return torch.tensor(0.5 * (nodes + 1)), torch.tensor(0.5 * weights)


def _gradients(f, xs: torch.Tensor) -> torch.Tensor:
    xs = xs.detach().requires_grad_(True)
    return torch.autograd.grad(f(xs).sum(), xs)[0]


def attribute(lm, text: str, **options) -> InputAttribution:
    """Attribute the model's output for `text` to its input tokens. Options are `AttributeConfig`
    fields."""
    o = AttributeConfig(**options)
    model = lm.module
    p, head, pick, target = _subject(lm, text, o.target)
    embed = bodies(model)[0][0] + "hook_embed"
    x = run(model, p, [embed])[1][embed][0].float()                        # (T, d) the token embeddings
    x0 = torch.zeros_like(x)

    def f(emb: torch.Tensor) -> torch.Tensor:                              # (n, T, d) embeddings -> (n,)
        out, _ = run(model, p, edits={embed: lambda a, name: emb.to(a.dtype)}, batch=emb.shape[0], head=head)
        return pick(out).float()

    if o.method == "gxi":
        attributions = x * _gradients(f, x[None])[0]
    else:
        alphas, weights = (t.to(x) for t in gauss_legendre(o.steps))
        total = torch.zeros_like(x)
        for start in range(0, o.steps, o.batch_size):
            a, w = alphas[start:start + o.batch_size, None, None], weights[start:start + o.batch_size, None, None]
            total += (w * _gradients(f, x0 + a * (x - x0))).sum(0)
        attributions = (x - x0) * total
    with torch.no_grad():
        fx, f0 = f(torch.stack([x, x0])).tolist()
    return InputAttribution(p.tokens, target, o.method, attributions.sum(-1).cpu(), attributions.cpu(), fx, f0,
                            o.steps if o.method == "ig" else None)
