"""Named hook points, a trace that records them and a context that edits them, on any family.

The model code calls `module.hook(name, tensor)` at each of its points only while `hook` is set
(see `model/blocks.py`); here is who sets it. The names are TransformerLens' — the residual
stream `blocks.{i}.hook_resid_pre / hook_resid_mid / hook_resid_post`, `hook_attn_out`,
`hook_mlp_out`, the attention's `attn.hook_q / hook_k / hook_v / hook_attn_scores / hook_pattern
/ hook_z / hook_result`, the MLP's `mlp.hook_pre / hook_post`, `hook_embed`, `hook_pos_embed`,
`ln_final.hook_normalized` — so that notebooks and papers carry over. An encoder-decoder has
the same names under `encoder.` and `decoder.`, plus the decoder's `cross_attn.*`,
`hook_cross_attn_out` and `hook_resid_mid_cross`.

    with recording(model, ["blocks.*.hook_resid_post"]) as store:   # a trace: name -> tensor
        model(idx)
    with editing(model, {"blocks.1.attn.hook_z": zero_head_3}):     # a patch, in any forward
        model.generate(...)

Nothing is registered while no context is open (every `hook` is None); inside one, only the
modules that own a wanted point get a hook, so attention runs its fused kernel unless one of its
own points (pattern, z, ...) is wanted. Contexts nest: edits apply in the order the contexts
were opened, and recordings see the edited tensor. Not thread-safe: one context per model at
a time across threads.
"""

from __future__ import annotations

import contextlib
import fnmatch
from typing import Callable, Iterator

import torch
import torch.nn as nn

from ..errors import LmforgeError

PatchFn = Callable[[torch.Tensor, str], "torch.Tensor | None"]   # (activation, name) -> new activation, or None

ATTENTION = ("hook_q", "hook_k", "hook_v", "hook_attn_scores", "hook_pattern", "hook_z", "hook_result")


def bodies(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """(name prefix, `Transformer` body) of each residual stream of a model."""
    if model.config.family == "seq2seq":
        return [("encoder.", model.encoder), ("decoder.", model.decoder)]
    return [("", model.transformer)]


def _body_points(prefix: str, body: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    cfg = body.config
    own = ["hook_embed"] + ["hook_token_type_embed"] * (body.type_emb is not None)
    own += ["hook_pos_embed"] * (cfg.position in ("learned", "sinusoidal"))
    own += ["ln_final.hook_scale", "ln_final.hook_normalized"] * (cfg.norm_position == "pre")
    points = {prefix + name: (body, name) for name in own}
    for i, block in enumerate(body.blocks):
        at = f"{prefix}blocks.{i}."
        cross = block.cross_attn is not None
        resid = ["hook_resid_pre", "hook_attn_out", "hook_resid_mid"]
        resid += ["hook_cross_attn_out", "hook_resid_mid_cross"] * cross + ["hook_mlp_out", "hook_resid_post"]
        points.update({at + name: (block, name) for name in resid})
        rotary = ["hook_rot_q", "hook_rot_k"] * (cfg.position == "rope")
        points.update({f"{at}attn.{name}": (block.attn, name) for name in ATTENTION + tuple(rotary)})
        if cross:
            points.update({f"{at}cross_attn.{name}": (block.cross_attn, name) for name in ATTENTION})
        mlp = ["hook_pre"] + ["hook_pre_linear"] * (cfg.mlp == "swiglu") + ["hook_post"]
        points.update({f"{at}mlp.{name}": (block.mlp, name) for name in mlp})
    return points


def hook_points(model: nn.Module) -> dict[str, tuple[nn.Module, str]]:
    """Every hook point of `model`, in forward order per stream: full name -> (the module that
    calls it, the name it calls it by)."""
    points: dict[str, tuple[nn.Module, str]] = {}
    for prefix, body in bodies(model):
        points.update(_body_points(prefix, body))
    return points


def hook_names(model: nn.Module) -> list[str]:
    """The names of every hook point of `model` (what `trace` and `patched` accept; globs too)."""
    return list(hook_points(model))


def resolve(model: nn.Module, patterns: list[str] | tuple[str, ...]) -> list[str]:
    """Hook point names matching `patterns` (exact names or globs like `blocks.*.hook_resid_post`),
    in forward order; a pattern that matches nothing is an error that shows what names look like."""
    known = hook_names(model)
    chosen: set[str] = set()
    for pattern in patterns:
        found = [n for n in known if fnmatch.fnmatchcase(n, pattern)]
        if not found:
            raise LmforgeError(f"no hook point of this {model.config.family} model matches {pattern!r}; names look "
                               f"like {', '.join(known[i] for i in (0, 1, len(known) // 2, -1))} "
                               f"(lmforge.inspect.hook_names(model) lists all {len(known)})")
        chosen.update(found)
    return [n for n in known if n in chosen]


class _Context:
    """One open `recording` or `editing`: its edits by full name, the names it records, what it saw."""

    def __init__(self, edits: dict[str, PatchFn], record: list[str], keep_graph: bool):
        self.edits, self.record, self.keep_graph = edits, set(record), keep_graph
        self.store: dict[str, torch.Tensor] = {}

    def names(self) -> set[str]:
        return set(self.edits) | self.record

    def edit(self, name: str, x: torch.Tensor) -> torch.Tensor:
        fn = self.edits.get(name)
        if fn is None:
            return x
        out = fn(x, name)
        return x if out is None else out

    def keep(self, name: str, x: torch.Tensor) -> None:
        if name in self.record:
            self.store[name] = x if self.keep_graph else x.detach()


class _Site:
    """What a module's `hook` is while a context wants one of its points."""

    def __init__(self, prefix: str, contexts: list[_Context]):
        self.prefix, self.contexts = prefix, contexts

    def wants(self, name: str) -> bool:
        return any(self.prefix + name in c.names() for c in self.contexts)

    def __call__(self, name: str, x: torch.Tensor) -> torch.Tensor:
        full = self.prefix + name
        for c in self.contexts:
            x = c.edit(full, x)
        for c in self.contexts:
            c.keep(full, x)
        return x


def _install(model: nn.Module, contexts: list[_Context]) -> None:
    """Give a hook to the modules that own a point some open context wants, None to all others."""
    wanted = set().union(*(c.names() for c in contexts)) if contexts else set()
    owners: dict[int, tuple[nn.Module, str, bool]] = {}
    for full, (module, local) in hook_points(model).items():
        _, prefix, hit = owners.get(id(module), (module, full[: len(full) - len(local)], False))
        owners[id(module)] = (module, prefix, hit or full in wanted)
    for module, prefix, hit in owners.values():
        module.hook = _Site(prefix, contexts) if hit else None


@contextlib.contextmanager
def _opened(model: nn.Module, context: _Context) -> Iterator[_Context]:
    contexts: list[_Context] = model.__dict__.setdefault("_inspect_contexts", [])
    contexts.append(context)
    _install(model, contexts)
    try:
        yield context
    finally:
        contexts.remove(context)
        _install(model, contexts)


def recording(model: nn.Module, names: list[str] | tuple[str, ...], keep_graph: bool = False):
    """Context: every forward inside it stores the activations of the points `names` (globs
    allowed) in the yielded context's `store` {name: tensor} (the last forward's; detached unless
    `keep_graph`)."""
    return _opened(model, _Context({}, resolve(model, names), keep_graph))


def editing(model: nn.Module, edits: dict[str, PatchFn]):
    """Context: inside it every forward (generation included) passes the activation of each point
    named in `edits` (globs allowed) through its function fn(activation, name), which returns the
    new activation (or None after editing it in place). Shapes are TransformerLens': (B, T, d)
    for the residual stream, (B, T, heads, head_dim) for q / k / v / z, (B, heads, Tq, Tk) for
    scores and pattern, (B, T, heads, d) for hook_result."""
    resolved: dict[str, PatchFn] = {}
    for pattern, fn in edits.items():
        if not callable(fn):
            raise LmforgeError(f"the patch for {pattern!r} must be a function (activation, name) -> activation")
        resolved.update({name: fn for name in resolve(model, [pattern])})
    return _opened(model, _Context(resolved, [], False))
