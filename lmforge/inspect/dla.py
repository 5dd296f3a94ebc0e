"""Direct logit attribution: how much each head, each MLP and the embeddings write toward one
token's logit (or the difference between two tokens' logits) at one position.

In a pre-norm model the last residual stream is a sum of what each part wrote — embeddings,
every head's output (`hook_result`), every attention's output bias, every MLP's output — and
the head reads it through the final norm. Holding that norm's scale at its value for this
position (TransformerLens' `apply_ln_to_stack`), the logit is linear in the stream, so each
piece gets its share:  piece -> (centred(piece) / scale) * norm weight . W_U[answer]  (minus
W_U[wrong]). The pieces sum to the logit minus the norm's bias term (`constant`), which a test
holds. A post-norm model normalises after every block, so there is no such sum: refused.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import LmforgeError
from ..model.blocks import norm_parts
from ..options import option, validate
from .hooks import bodies
from .prompts import prompt, run, single_token


@dataclass
class DlaConfig:
    answer: str = option(None, "the token whose logit to attribute (one token, e.g. ' Paris')")
    wrong: str | None = option(None, "attribute the difference answer - wrong instead (one token)")
    position: int = option(-1, "position to read (0 is the first token, -1 the last)")

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class LogitAttribution:
    """`Model.dla`: what each part writes toward `answer` (minus `wrong`) at `position`."""
    tokens: list[str]
    position: int
    answer: str
    wrong: str | None
    heads: torch.Tensor          # (L, H) self-attention heads
    attn_bias: torch.Tensor      # (L,) the attention output biases
    mlps: torch.Tensor           # (L,)
    embed: float                 # token (+ position, + segment) embeddings
    constant: float              # the final norm's bias term: the pieces + constant = logit
    logit: float                 # the model's logit (difference)
    cross_heads: torch.Tensor | None = None   # (L, H) an encoder-decoder's cross-attention heads
    cross_bias: torch.Tensor | None = None

    def pieces(self) -> list[tuple[str, float]]:
        """(name, contribution) of every piece, in the model's order."""
        out = [("embed", self.embed)]
        for layer in range(self.heads.shape[0]):
            out += [(f"L{layer}H{h}", float(v)) for h, v in enumerate(self.heads[layer])]
            out.append((f"L{layer} attn bias", float(self.attn_bias[layer])))
            if self.cross_heads is not None:
                out += [(f"L{layer}X{h}", float(v)) for h, v in enumerate(self.cross_heads[layer])]
                out.append((f"L{layer} cross bias", float(self.cross_bias[layer])))
            out.append((f"L{layer} MLP", float(self.mlps[layer])))
        return out

    def total(self) -> float:
        return sum(v for _, v in self.pieces()) + self.constant

    def to_dict(self) -> dict:
        return {"tool": "dla", "tokens": self.tokens, "position": self.position, "answer": self.answer,
                "wrong": self.wrong, "logit": round(self.logit, 6), "constant": round(self.constant, 6),
                "pieces": {k: round(v, 6) for k, v in self.pieces()}}

    def table(self, top: int = 12) -> str:
        what = f"{self.answer!r}" + (f" - {self.wrong!r}" if self.wrong else "")
        rows = sorted(self.pieces(), key=lambda kv: -abs(kv[1]))[:top]
        lines = [f"logit {what} at position {self.position} ({self.tokens[self.position]!r}): {self.logit:.4f} "
                 f"= pieces {self.logit - self.constant:.4f} + norm bias {self.constant:.4f}", "piece            logit"]
        return "\n".join(lines + [f"{name:16s} {value:+.4f}" for name, value in rows])

    def plot(self, out_png, title: str = ""):
        from ..viz.inspect import plot_dla
        return plot_dla(self, out_png, title)


def _stream(model) -> tuple[str, torch.nn.Module]:
    family, (prefix, body) = model.config.family, bodies(model)[-1]
    if family == "encoder" or model.config.norm_position != "pre":
        raise LmforgeError(f"direct logit attribution takes pre-norm decoders and encoder-decoders (GPT, Llama kinds); "
                           f"this is a {model.config.norm_position}-norm {family} model, whose stream is normalised "
                           "after every block, so the parts do not add up to the logit")
    return prefix, body


def _direction(model, tok, o: DlaConfig) -> tuple[torch.Tensor, list[int], list[float]]:
    """(W_U[answer] - W_U[wrong], the token ids, their signs)."""
    ids = [single_token(tok, o.answer, "the answer")]
    ids += [single_token(tok, o.wrong, "the wrong answer")] if o.wrong else []
    signs = [1.0, -1.0][: len(ids)]
    return sum(s * model.lm_head.weight[i].float() for s, i in zip(signs, ids)), ids, signs


@torch.no_grad()
def dla(lm, text: str, target: str | None = None, **options) -> LogitAttribution:
    """Direct logit attribution at one position of `text` (an encoder-decoder: of its decoder
    reading `target`). Options are `DlaConfig` fields."""
    o = DlaConfig(**options)
    if not o.answer:                      # here, not in DlaConfig: its fields are checked one at a time
        raise LmforgeError("direct logit attribution needs the answer token (--answer TOKEN)")
    model = lm.module
    prefix, body = _stream(model)
    p = prompt(lm, text, target)
    T = p.ids.shape[1]
    if not -T <= o.position < T:
        raise LmforgeError(f"position {o.position} does not exist: the text has {T} tokens (0..{T - 1})")
    pos = o.position % T
    direction, ids, signs = _direction(model, lm.target_tokenizer if p.source_ids is not None else lm.tokenizer, o)
    kinds = [("attn", "hook_attn_out")] + [("cross_attn", "hook_cross_attn_out")] * (p.source_ids is not None)
    at = [f"{prefix}blocks.{i}." for i in range(len(body.blocks))]
    names = [f"{prefix}blocks.0.hook_resid_pre", f"{prefix}ln_final.hook_scale"]
    names += [a + n for a in at for k, out in kinds for n in (f"{k}.hook_result", out)]
    names += [a + "hook_mlp_out" for a in at]
    logits, store = run(model, p, names)
    scale = store[f"{prefix}ln_final.hook_scale"][0, pos].float()
    w = body.norm.weight.float() * direction                                # (d,)

    def written(name: str, blocks: list[str] = at) -> torch.Tensor:       # (L, ..., d) at pos
        return torch.stack([store[a + name][0, pos] for a in blocks])

    def share(x: torch.Tensor) -> torch.Tensor:                             # written -> share of the logit
        return ((norm_parts(body.norm, x)[0] / scale) @ w).cpu()

    def heads_and_bias(kind: str, out: str) -> list[torch.Tensor]:         # (L, H) heads, (L,) output biases
        result = written(f"{kind}.hook_result")
        return [share(result), share(written(out) - result.sum(1))]

    cross = heads_and_bias(*kinds[1]) if len(kinds) > 1 else [None, None]
    bias = getattr(body.norm, "bias", None)
    constant = float(bias.float() @ direction) if bias is not None else 0.0
    logit = float(sum(s * logits[0, pos, i].float() for s, i in zip(signs, ids)))
    embed = float(share(written("hook_resid_pre", at[:1]))[0])
    return LogitAttribution(p.tokens, pos, o.answer, o.wrong, *heads_and_bias(*kinds[0]),
                            share(written("hook_mlp_out")), embed, constant, logit, *cross)
