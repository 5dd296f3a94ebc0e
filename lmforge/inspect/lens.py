"""The logit lens: the residual stream before each block (and after the last) read through the
final norm and the output head, as if the model stopped there.

For every layer and position: the top-k tokens and their probabilities, and the rank and
probability of the expected token — the one that actually comes next in a causal stream (a
decoder, the decoder of an encoder-decoder), the token itself in an encoder (what its masked-LM
head reconstructs). The last row is the model's own output. Rows are labelled as
TransformerLens' `accumulated_resid` labels them: `0_pre`, `1_pre`, ..., `final_post`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import LmforgeError
from ..options import at_least, option, validate
from .hooks import bodies
from .prompts import prompt, run, token_strings


@dataclass
class LensConfig:
    top_k: int = option(5, "tokens to keep per layer and position", check=at_least(1))

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class LogitLens:
    """`Model.logit_lens`: rows = `layers` (L + 1), columns = `tokens` (T)."""
    tokens: list[str]
    layers: list[str]
    top_ids: torch.Tensor          # (L+1, T, k)
    top_tokens: list[list[list[str]]]
    top_probs: torch.Tensor        # (L+1, T, k)
    expected: list[int | None]     # per position: the token the lens is scored on (None: a causal stream's last)
    expected_rank: torch.Tensor    # (L+1, T) 0 = top-1; -1 where nothing is expected
    expected_prob: torch.Tensor    # (L+1, T) NaN where nothing is expected

    def to_dict(self) -> dict:
        nan_free = [[None if p != p else round(p, 6) for p in row] for row in self.expected_prob.tolist()]
        return {"tool": "lens", "tokens": self.tokens, "layers": self.layers, "top_tokens": self.top_tokens,
                "top_probs": [[[round(p, 6) for p in ps] for ps in row] for row in self.top_probs.tolist()],
                "expected": self.expected, "expected_rank": self.expected_rank.tolist(), "expected_prob": nan_free}

    def table(self) -> str:
        """Top-1 token and its probability per layer (rows) and position (columns)."""
        width = 12
        head = "layer".ljust(11) + "".join(repr(t)[1:-1][:width - 1].ljust(width) for t in self.tokens)
        rows = [head]
        for i, name in enumerate(self.layers):
            cells = [f"{repr(self.top_tokens[i][t][0])[1:-1][:6]} {self.top_probs[i, t, 0]:.2f}"
                     for t in range(len(self.tokens))]
            rows.append(name.ljust(11) + "".join(c[:width - 1].ljust(width) for c in cells))
        return "\n".join(rows)

    def plot(self, out_png, title: str = ""):
        from ..viz.inspect import plot_lens
        return plot_lens(self, out_png, title)


def readout(model, resid: torch.Tensor) -> torch.Tensor:
    """Residual stream (..., d) of the stream the lens reads -> logits (..., vocab) through the
    final norm and the output head."""
    family = model.config.family
    if family == "encoder":
        if model.mlm_head is None:
            raise LmforgeError("the logit lens reads the residual stream through the output head, and this encoder "
                               "has none (mlm_head=false); use it on a masked-LM encoder, a decoder or an "
                               "encoder-decoder")
        return model.mlm_logits(model.transformer.norm(resid))
    body = model.decoder if family == "seq2seq" else model.transformer
    vocab = model.config.tgt_vocab_size if family == "seq2seq" else model.config.vocab_size
    return model.lm_head(body.norm(resid))[..., :vocab]


def lens_points(model) -> tuple[list[str], list[str]]:
    """(hook point names, TransformerLens labels) of the residual stream the lens reads."""
    prefix, body = bodies(model)[-1]
    n = len(body.blocks)
    names = [f"{prefix}blocks.{i}.hook_resid_pre" for i in range(n)] + [f"{prefix}blocks.{n - 1}.hook_resid_post"]
    return names, [f"{i}_pre" for i in range(n)] + ["final_post"]


@torch.no_grad()
def logit_lens(lm, text: str, target: str | None = None, **options) -> LogitLens:
    """The logit lens of `text` (an encoder-decoder: of its decoder reading `target`). Options
    are `LensConfig` fields."""
    o = LensConfig(**options)
    model = lm.module
    p = prompt(lm, text, target)
    names, labels = lens_points(model)
    _, store = run(model, p, names)
    resid = torch.stack([store[n][0] for n in names])                      # (L+1, T, d)
    probs = readout(model, resid).float().softmax(-1)                     # (L+1, T, vocab)
    top_probs, top_ids = probs.topk(min(o.top_k, probs.shape[-1]), dim=-1)
    ids = p.ids[0].tolist()
    expected = ids if model.config.family == "encoder" else ids[1:] + [None]
    tok = lm.target_tokenizer if model.config.family == "seq2seq" else lm.tokenizer
    rank = torch.full(probs.shape[:2], -1, dtype=torch.long)
    prob = torch.full(probs.shape[:2], float("nan"))
    for t, e in enumerate(expected):
        if e is not None:
            prob[:, t] = probs[:, t, e].cpu()
            rank[:, t] = (probs[:, t] > probs[:, t, e:e + 1]).sum(-1).cpu()
    top_tokens = [[token_strings(tok, row) for row in layer] for layer in top_ids.tolist()]
    return LogitLens(p.tokens, labels, top_ids.cpu(), top_tokens, top_probs.cpu(), expected, rank, prob)
