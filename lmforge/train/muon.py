"""Muon: momentum SGD whose update for each hidden weight matrix is orthogonalised with a
Newton–Schulz iteration (Keller Jordan's optimizer from the modded-nanoGPT speedruns).
Embeddings, the output head, norms and biases keep AdamW.

For a matrix gradient G the update is ~ U V^T of G = U S V^T: every singular direction moves
at the same rate, which lets hidden layers take larger, better-conditioned steps.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from .optim import param_groups

NS_COEFFS = (3.4445, -4.7750, 2.0315)   # quintic Newton–Schulz coefficients (Jordan, 2024)


def orthogonalize(G: torch.Tensor, steps: int = 5) -> torch.Tensor:
    """Approximately U V^T for G = U S V^T (singular values pushed towards 1)."""
    assert G.dim() == 2
    a, b, c = NS_COEFFS
    X = G.to(torch.bfloat16 if G.is_cuda else torch.float32)
    transposed = X.size(0) > X.size(1)
    if transposed:
        X = X.T                                          # iterate on the wide orientation (rows <= cols)
    X = X / (X.norm() + 1e-7)                            # spectral norm <= Frobenius norm <= 1
    for _ in range(steps):
        A = X @ X.T
        X = a * X + (b * A + c * A @ A) @ X
    return (X.T if transposed else X).to(G.dtype)


class MuonAdamW(torch.optim.Optimizer):
    """One optimizer: groups with `muon=True` take Muon steps, the others AdamW steps."""

    def __init__(self, groups: list[dict], lr: float, betas=(0.9, 0.95), eps: float = 1e-8,
                 momentum: float = 0.95, ns_steps: int = 5):
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=0.0, momentum=momentum, ns_steps=ns_steps,
                        muon=False)
        super().__init__(groups, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if group["muon"]:
                    buf = state.setdefault("momentum_buffer", torch.zeros_like(p))
                    buf.lerp_(p.grad, 1 - group["momentum"])
                    g = p.grad.lerp(buf, group["momentum"])                  # Nesterov
                    update = orthogonalize(g.reshape(len(g), -1), group["ns_steps"]).view_as(p)
                    scale = math.sqrt(max(1.0, p.size(0) / p[0].numel()))
                    p.mul_(1 - lr * wd).add_(update, alpha=-lr * scale)
                else:
                    beta1, beta2 = group["betas"]
                    if not state:
                        state["step"] = 0                    # a Python int: no device sync per step
                        state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
                    state["step"] += 1
                    t = state["step"]
                    state["exp_avg"].lerp_(p.grad, 1 - beta1)
                    state["exp_avg_sq"].mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                    denom = (state["exp_avg_sq"] / (1 - beta2 ** t)).sqrt_().add_(group["eps"])
                    p.mul_(1 - lr * wd).addcdiv_(state["exp_avg"], denom, value=-lr / (1 - beta1 ** t))


def make_muon(model: nn.Module, lr: float, muon_lr: float, weight_decay: float,
              betas: tuple[float, float]) -> MuonAdamW:
    """Muon for the 2-D weights inside the transformer blocks; AdamW (at `lr`) for the rest, LoRA
    adapters included (low-rank by design: orthogonalising their updates is not what Muon is for)."""
    hidden = {id(p) for name, p in model.named_parameters()
              if p.dim() >= 2 and ".blocks." in f".{name}" and "lora_" not in name}
    groups = []
    for g in param_groups(model, weight_decay):
        muon = [p for p in g["params"] if id(p) in hidden]
        rest = [p for p in g["params"] if id(p) not in hidden]
        if muon:
            groups.append({"params": muon, "weight_decay": g["weight_decay"], "lr": muon_lr, "muon": True})
        if rest:
            groups.append({"params": rest, "weight_decay": g["weight_decay"], "lr": lr, "muon": False})
    return MuonAdamW(groups, lr=lr, betas=betas)
