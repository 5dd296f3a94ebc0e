"""Activation patching: which activations carry the answer from a clean prompt.

Run a clean prompt and a corrupted one of the same length (e.g. "... Paris is in" / "... Rome is
in"), with an answer and a wrong answer (" France" / " Italy"). Then run the corrupted prompt
again with one activation copied from the clean run — the residual stream before block l at
position t (`blocks.l.hook_resid_pre`), or one head's output at every position
(`blocks.l.attn.hook_z`, head h) — and measure how much of the answer comes back:

    (LD_patched - LD_corrupted) / (LD_clean - LD_corrupted),   LD = logit[answer] - logit[wrong]

at the last position: 1 where the patch restores the clean answer, 0 where it changes nothing
(TransformerLens' `get_act_patch_resid_pre` and `get_act_patch_attn_head_out_all_pos` with
this metric). Each layer is one batched forward pass: a row per position (or per head).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import LmforgeError
from ..options import option, validate
from .prompts import prompt, run, single_token


@dataclass
class PatchConfig:
    corrupted: str = option(None, "the corrupted prompt: as many tokens as the clean one, a different answer")
    answer: str = option(None, "the clean prompt's answer (one token)")
    wrong: str = option(None, "the corrupted prompt's answer (one token)")

    def __post_init__(self) -> None:
        validate(self)
        missing = [flag for flag, v in (("--corrupted", self.corrupted), ("--answer", self.answer),
                                        ("--wrong", self.wrong)) if not v]
        if missing:
            raise LmforgeError(f"activation patching needs {', '.join(missing)} (a corrupted prompt of the same "
                               "length and the two answers)")


@dataclass
class Patching:
    """`Model.patch`: the normalised logit difference restored by each patch."""
    tokens: list[str]              # the clean prompt
    corrupted_tokens: list[str]
    answer: str
    wrong: str
    resid: torch.Tensor            # (L, T) patching blocks.l.hook_resid_pre at position t
    heads: torch.Tensor            # (L, H) patching head h's z at every position of layer l
    clean_diff: float              # LD on the clean prompt
    corrupted_diff: float          # LD on the corrupted prompt

    def to_dict(self) -> dict:
        def r(t):
            return [[round(v, 6) for v in row] for row in t.tolist()]
        return {"tool": "patch", "tokens": self.tokens, "corrupted_tokens": self.corrupted_tokens,
                "answer": self.answer, "wrong": self.wrong, "clean_diff": round(self.clean_diff, 6),
                "corrupted_diff": round(self.corrupted_diff, 6), "resid": r(self.resid), "heads": r(self.heads)}

    def table(self) -> str:
        lines = [f"logit difference {self.answer!r} - {self.wrong!r}: clean {self.clean_diff:.4f}, corrupted "
                 f"{self.corrupted_diff:.4f}; restored by each patch (1 = all of it):", "",
                 "residual stream (rows: layers; columns: positions)",
                 "      " + "".join(f"{repr(t)[1:-1][:6]:>7s}" for t in self.tokens)]
        lines += [f"L{i:<5d}" + "".join(f"{v:7.2f}" for v in row) for i, row in enumerate(self.resid.tolist())]
        lines += ["", "heads (rows: layers; columns: heads)",
                  "      " + "".join(f"{'H' + str(h):>7s}" for h in range(self.heads.shape[1]))]
        lines += [f"L{i:<5d}" + "".join(f"{v:7.2f}" for v in row) for i, row in enumerate(self.heads.tolist())]
        return "\n".join(lines)

    def plot(self, out_png, title: str = ""):
        from ..viz.inspect import plot_patching
        return plot_patching(self, out_png, title)


def _copy_at(clean: torch.Tensor, where: str):
    """An edit that gives batch row i the clean activation at position i (`where` "pos") or of
    head i at every position (`where` "head")."""
    def edit(x: torch.Tensor, name: str) -> torch.Tensor:
        x = x.clone()
        rows = torch.arange(x.shape[0])
        if where == "pos":
            x[rows, rows] = clean[0, rows].to(x.dtype)                       # (B, T, d): row i, position i
        else:
            x[rows, :, rows] = clean[0, :, rows].transpose(0, 1).to(x.dtype)   # (B, T, H, hs): row i, head i
        return x
    return edit


@torch.no_grad()
def patch(lm, clean: str, **options) -> Patching:
    """Activation patching from `clean` into the corrupted prompt (a decoder model). Options are
    `PatchConfig` fields."""
    o = PatchConfig(**options)
    model = lm.module
    if model.config.family != "decoder":
        raise LmforgeError(f"activation patching takes decoder models (GPT, Llama kinds); this is a "
                           f"{model.config.family} model")
    good, bad = prompt(lm, clean), prompt(lm, o.corrupted)
    if good.ids.shape != bad.ids.shape:
        raise LmforgeError(f"the clean and corrupted prompts must have the same number of tokens; they have "
                           f"{good.ids.shape[1]} and {bad.ids.shape[1]} ({good.tokens} / {bad.tokens})")
    a, w = single_token(lm.tokenizer, o.answer, "the answer"), single_token(lm.tokenizer, o.wrong, "the wrong answer")

    def diff(logits: torch.Tensor) -> torch.Tensor:                       # (B, T, V) -> (B,) at the last position
        return (logits[:, -1, a] - logits[:, -1, w]).float().cpu()

    n_layer, n_head = len(model.transformer.blocks), model.config.n_head
    names = [f"blocks.{i}.{n}" for i in range(n_layer) for n in ("hook_resid_pre", "attn.hook_z")]
    clean_logits, store = run(model, good, names)
    clean_diff, corrupted_diff = float(diff(clean_logits)), float(diff(run(model, bad)[0]))
    if abs(clean_diff - corrupted_diff) < 1e-6:
        raise LmforgeError(f"the clean and corrupted prompts give the same logit difference ({clean_diff:.4g}): there "
                           "is nothing to restore; corrupt the part of the prompt that decides the answer")

    def restored(name: str, where: str, rows: int) -> torch.Tensor:
        logits, _ = run(model, bad, edits={name: _copy_at(store[name], where)}, batch=rows)
        return (diff(logits) - corrupted_diff) / (clean_diff - corrupted_diff)

    T = good.ids.shape[1]
    resid = torch.stack([restored(f"blocks.{i}.hook_resid_pre", "pos", T) for i in range(n_layer)])
    heads = torch.stack([restored(f"blocks.{i}.attn.hook_z", "head", n_head) for i in range(n_layer)])
    return Patching(good.tokens, bad.tokens, o.answer, o.wrong, resid, heads, clean_diff, corrupted_diff)
