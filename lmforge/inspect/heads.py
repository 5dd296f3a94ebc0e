"""Attention patterns and what they say about each head.

`attention_maps`: the weights every head puts on every key token (`hook_pattern`) of one kind of
attention — self attention in a decoder or an encoder; an encoder-decoder's encoder, decoder or
cross attention (the decoder reading the source).

`head_scores` runs a repeated random sequence (n random tokens, then the same n again, after the
model's usual first token) and scores each head, as TransformerLens' main demo does:

- previous token: mean attention from each token to the one before it;
- induction: mean attention along the stripe at offset 1 - n, i.e. from a token of the second
  copy to the token that followed its first occurrence (what an induction head predicts from);
- entropy: mean over query tokens of -sum p log p (nats): 0 for a head that looks at one token.

Cross attention has entropy only (its keys are another sequence).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from ..errors import LmforgeError
from ..options import SEED, at_least, option, validate
from .prompts import Prompt, prompt, run, token_strings

KINDS = {"decoder": ("self",), "encoder": ("self",), "seq2seq": ("cross", "encoder", "decoder")}


def check_kind(family: str, kind: str) -> str:
    """The attention kind to look at in a `family` model ("auto": its first)."""
    kinds = KINDS[family]
    if kind == "auto":
        return kinds[0]
    if kind not in kinds:
        raise LmforgeError(f"attention kind {kind!r} does not exist in a {family} model; use one of "
                           f"{', '.join(kinds)}")
    return kind


def pattern_names(model, kind: str) -> list[str]:
    """The `hook_pattern` points of one kind of attention, one per layer."""
    if kind == "self":
        return [f"blocks.{i}.attn.hook_pattern" for i in range(len(model.transformer.blocks))]
    body = model.encoder if kind == "encoder" else model.decoder
    attn = "cross_attn" if kind == "cross" else "attn"
    return [f"{'encoder' if kind == 'encoder' else 'decoder'}.blocks.{i}.{attn}.hook_pattern"
            for i in range(len(body.blocks))]


def _patterns(model, p: Prompt, kind: str) -> torch.Tensor:
    names = pattern_names(model, kind)
    with torch.no_grad():
        store = run(model, p, names)[1]
    return torch.stack([store[n][0] for n in names]).float().cpu()          # (L, H, Tq, Tk)


def _sides(p: Prompt, kind: str) -> tuple[list[str], list[str]]:
    """(query token strings, key token strings) of one kind of attention over prompt `p`."""
    if p.source_tokens is None:
        return p.tokens, p.tokens
    return {"encoder": (p.source_tokens, p.source_tokens), "decoder": (p.tokens, p.tokens),
            "cross": (p.tokens, p.source_tokens)}[kind]


def attention_maps(lm, text: str, kind: str = "auto", target: str | None = None, max_tokens: int | None = None):
    """(maps (layers, heads, queries, keys) float32, (query token strings, key token strings))."""
    kind = check_kind(lm.config.family, kind)
    p = prompt(lm, text, target, limit=max_tokens)
    return _patterns(lm.module, p, kind), _sides(p, kind)


@dataclass
class HeadScoresConfig:
    seq_len: int | None = option(None, "random tokens per copy (default: 50, or what fits the context twice)",
                                 check=at_least(2))
    seed: int = option(0, "seed of the random sequence", check=SEED)
    alphabet: str | None = option(None, "draw the random tokens from the tokens of this text (default: the "
                                        "whole vocabulary, special tokens left out)")
    kind: str = option("auto", "encoder-decoders: decoder (auto), encoder or cross attention",
                       choices=("auto", "self", "cross", "encoder", "decoder"))

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class HeadScores:
    """`Model.head_scores`: (layers, heads) scores of one kind of attention."""
    kind: str
    tokens: list[str]              # the repeated random sequence (the queries')
    seq_len: int
    entropy: torch.Tensor
    previous_token: torch.Tensor | None = None
    induction: torch.Tensor | None = None

    def scores(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in (("previous_token", self.previous_token), ("induction", self.induction),
                                  ("entropy", self.entropy)) if v is not None}

    def to_dict(self) -> dict:
        return {"tool": "heads", "kind": self.kind, "seq_len": self.seq_len, "tokens": self.tokens,
                **{k: [[round(x, 6) for x in row] for row in v.tolist()] for k, v in self.scores().items()}}

    def table(self) -> str:
        scores = self.scores()
        first = "induction" if self.induction is not None else "entropy"
        L, H = self.entropy.shape
        order = sorted(((i, h) for i in range(L) for h in range(H)), key=lambda lh: -float(scores[first][lh]))
        lines = [f"{self.kind} attention heads on a random sequence of {self.seq_len} tokens written twice",
                 "head     " + "".join(f"{k:>16s}" for k in scores)]
        return "\n".join(lines + [f"L{i}H{h:<5d}" + "".join(f"{float(v[i, h]):16.3f}" for v in scores.values())
                                  for i, h in order])

    def plot(self, out_png, title: str = ""):
        from ..viz.inspect import plot_head_scores
        return plot_head_scores(self, out_png, title)


def _pool(tokenizer, alphabet: str | None) -> list[int]:
    if alphabet is not None:
        ids = sorted(set(tokenizer.encode(alphabet)))
        if len(ids) < 2:
            raise LmforgeError(f"--alphabet {alphabet!r} has {len(ids)} distinct token(s); give at least 2")
        return ids
    return [i for i in range(tokenizer.vocab_size) if i not in tokenizer.special_ids]


def repeated_prompt(lm, n: int, seed: int, alphabet: str | None) -> Prompt:
    """n random tokens written twice, in the model's layout (see `prompts.prompt`)."""
    rng = random.Random(seed)
    device = next(lm.module.parameters()).device

    def twice(tokenizer) -> list[int]:
        once = rng.choices(_pool(tokenizer, alphabet), k=n)
        return once + once

    tok, family = lm.tokenizer, lm.config.family
    if family == "seq2seq":
        src, tgt_tok = twice(tok) + [tok.eos_id] * (tok.eos_id is not None), lm.target_tokenizer
        tgt = [tgt_tok.bos_id] + twice(tgt_tok)
        return Prompt(torch.tensor([tgt], device=device), token_strings(tgt_tok, tgt),
                      torch.tensor([src], device=device), token_strings(tok, src))
    first = [tok.bos_id] if tok.bos_id is not None and (family == "encoder" or tok.add_bos) else []
    ids = first + twice(tok) + [tok.eos_id] * (family == "encoder" and tok.eos_id is not None)
    return Prompt(torch.tensor([ids], device=device), token_strings(tok, ids))


def head_scores(lm, **options) -> HeadScores:
    """Previous-token, induction and entropy scores of every head. Options are
    `HeadScoresConfig` fields."""
    o = HeadScoresConfig(**options)
    kind = check_kind(lm.config.family, "decoder" if o.kind == "auto" and lm.config.family == "seq2seq" else o.kind)
    n = o.seq_len or min(50, (lm.config.context_length - 2) // 2)
    if 2 * n + 2 > lm.config.context_length:
        raise LmforgeError(f"--seq-len {n} does not fit twice in the model's context of {lm.config.context_length} "
                           f"tokens; use at most {(lm.config.context_length - 2) // 2}")
    p = repeated_prompt(lm, n, o.seed, o.alphabet)
    pattern = _patterns(lm.module, p, kind)                                  # (L, H, Tq, Tk)
    entropy = -(pattern * pattern.clamp_min(1e-30).log()).sum(-1).mean(-1)
    queries = _sides(p, kind)[0]
    if kind == "cross":
        return HeadScores(kind, queries, n, entropy)
    previous = pattern.diagonal(offset=-1, dim1=-2, dim2=-1).mean(-1)
    induction = pattern.diagonal(offset=1 - n, dim1=-2, dim2=-1).mean(-1)
    return HeadScores(kind, queries, n, entropy, previous, induction)
