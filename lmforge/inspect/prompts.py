"""A text as each family reads it, one forward pass over it, and the trace of that pass.

`prompt(lm, text)` lays a text out the way the model saw texts in training — a decoder: the
tokens (after <bos> when its tokenizer adds one); an encoder: <bos> text <eos>; an encoder-
decoder: the source text <eos> into the encoder and <bos> target into the decoder — and keeps
the token strings. `forward` runs the model's own forward on it (a batch of copies, for
patching and attribution); `trace` records named activations (`hooks.recording`) along the way.
`lm` is anything with `module`, `config`, `tokenizer` and `target_tokenizer` (`lmforge.Model`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..errors import LmforgeError
from .hooks import PatchFn, editing, hook_names, recording


@dataclass
class Prompt:
    """The token ids (1, T) of the residual stream being inspected — the decoder's for an
    encoder-decoder, whose encoder reads `source_ids` (1, S) — and their token strings."""
    ids: torch.Tensor
    tokens: list[str]
    source_ids: torch.Tensor | None = None
    source_tokens: list[str] | None = None


@dataclass
class Trace:
    """What `Model.trace` returns: the activations of the named hook points for one text (batch
    dimension dropped: (T, d) for the residual stream, (heads, T, T) for patterns, (T, heads,
    head_dim) for z, ...), the token strings, and the output logits (T, vocab) (None for an
    encoder without an output head)."""
    tokens: list[str]
    activations: dict[str, torch.Tensor]
    logits: torch.Tensor | None
    source_tokens: list[str] | None = None
    names: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.activations[name]


def token_strings(tokenizer, ids: list[int]) -> list[str]:
    return [tokenizer.decode([i], skip_special_tokens=False) for i in ids]


def encode(lm, text: str, limit: int | None = None) -> list[int]:
    """`text` in the family's layout (see the module docstring), at most `limit` tokens."""
    tok, family = lm.tokenizer, lm.config.family
    limit = min(limit or lm.config.context_length, lm.config.context_length)
    if family == "decoder":
        ids = tok.encode(text, bos=tok.add_bos)[:limit]
    else:
        bos = [tok.bos_id] if family == "encoder" and tok.bos_id is not None else []
        eos = [tok.eos_id] if tok.eos_id is not None else []
        ids = (bos + tok.encode(text))[: limit - len(eos)] + eos
    if not ids:
        raise LmforgeError("inspecting a model needs a text of at least one token")
    return ids


def prompt(lm, text: str, target: str | None = None, limit: int | None = None) -> Prompt:
    """`text` laid out for the model; an encoder-decoder also needs the `target` its decoder reads."""
    device = next(lm.module.parameters()).device
    limit = min(limit or lm.config.context_length, lm.config.context_length)
    ids = encode(lm, text, limit)
    if lm.config.family != "seq2seq":
        return Prompt(torch.tensor([ids], device=device), token_strings(lm.tokenizer, ids))
    if target is None:
        raise LmforgeError("an encoder-decoder needs the target text its decoder reads")
    tgt_tok = lm.target_tokenizer
    tgt = ([tgt_tok.bos_id] + tgt_tok.encode(target))[:limit]
    return Prompt(torch.tensor([tgt], device=device), token_strings(tgt_tok, tgt),
                  torch.tensor([ids], device=device), token_strings(lm.tokenizer, ids))


def forward(model, p: Prompt, batch: int = 1, head: str | None = None) -> torch.Tensor:
    """The model's output on `batch` copies of the prompt: logits (B, T, vocab) — an encoder
    without a masked-LM head: its hidden states (B, T, d); head "classify": class logits (B, C)."""
    ids = p.ids.expand(batch, -1)
    family = model.config.family
    if head is not None:
        return model(ids, head=head)
    if family == "seq2seq":
        return model(p.source_ids.expand(batch, -1), ids)
    if family == "encoder" and model.mlm_head is None:
        return model(ids, head="hidden")
    return model(ids)


def run(model, p: Prompt, record: list[str] | tuple[str, ...] = (), edits: dict[str, PatchFn] | None = None,
        batch: int = 1, head: str | None = None, keep_graph: bool = False) -> tuple[torch.Tensor, dict]:
    """`forward` in eval mode with `edits` applied (`hooks.editing`), returning the output and the
    activations of the points `record` {name: (batch, ...)} (`hooks.recording`)."""
    was_training = model.training
    model.eval()
    try:
        with editing(model, edits or {}), recording(model, record, keep_graph) as seen:
            out = forward(model, p, batch, head)
    finally:
        model.train(was_training)
    return out, seen.store


def single_token(tokenizer, text: str, what: str) -> int:
    """The id of `text`, which must be exactly one token (an answer to look for)."""
    ids = tokenizer.encode(text)
    if len(ids) != 1:
        pieces = ", ".join(repr(t) for t in token_strings(tokenizer, ids)) or "none"
        raise LmforgeError(f"{what} {text!r} must be one token; it is {len(ids)} ({pieces})")
    return ids[0]


@torch.no_grad()
def trace(lm, text: str, names: list[str] | tuple[str, ...] | None = None, target: str | None = None) -> Trace:
    """The activations of the hook points `names` (default: all; globs allowed) for `text`."""
    model = lm.module
    p = prompt(lm, text, target)
    out, store = run(model, p, list(names) if names is not None else hook_names(model))
    logits = out[0].float() if not (model.config.family == "encoder" and model.mlm_head is None) else None
    order = [n for n in hook_names(model) if n in store]
    return Trace(p.tokens, {n: store[n][0] for n in order}, logits, p.source_tokens, order)
