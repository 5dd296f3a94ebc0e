"""`--ema-decay D`: an exponential moving average of the weights (Polyak averaging, as timm's
`ModelEmaV2` keeps it) that is evaluated, kept and saved in place of the raw weights, while
the optimizer goes on stepping the raw ones. It starts as the weights the run starts from, and
after each optimizer step every trainable weight's average moves towards it:

    average = D * average + (1 - D) * weight

so it weighs the last ~1 / (1 - D) steps most (0.995: ~200), and the start has a weight of
D ** steps (a run should be several of those horizons long). The average and the raw weights
trade places in the model (`show`, in place, on every rank: under DDP every
rank averages the same weights) for whatever looks at the model: each evaluation, sample,
inspection and checkpoint, and the end of the run; the next step puts the raw weights back
(`hide`). A checkpoint therefore commits the average as model.safetensors, the file a user
loads, and keeps the raw weights in its train state, so `--resume` continues exactly.

    >>> import torch
    >>> layer = torch.nn.Linear(1, 1, bias=False)
    >>> with torch.no_grad():
    ...     _ = layer.weight.fill_(1.0)             # the first weight, kept as the average
    >>> average = make_average(layer, 0.9)
    >>> with torch.no_grad():
    ...     _ = layer.weight.fill_(2.0)             # an optimizer step
    >>> average.update()                            # 0.9 * 1.0 + 0.1 * 2.0
    >>> average.show(); round(layer.weight.item(), 4)
    1.1
    >>> average.hide(); layer.weight.item()
    2.0
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from ..errors import ModelDirError

STATE_KEY = "weight_average"          # the train state's entry (the raw weights, the steps averaged)


class NoAverage:
    """Without --ema-decay: the model's weights are the ones seen and saved."""
    def update(self) -> None: ...
    def show(self) -> None: ...
    def hide(self) -> None: ...
    def state(self) -> dict[str, Any]:
        return {}
    def load(self, state: dict[str, Any], where: str) -> None: ...


class WeightAverage(NoAverage):
    """The moving average of `model`'s trainable parameters, kept beside them (same device and dtype)."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay, self.count, self.shown = decay, 0, False      # count: the steps averaged
        self.params = {n: p for n, p in model.named_parameters() if p.requires_grad}
        self.kept = {n: p.detach().clone() for n, p in self.params.items()}   # the average; the raw weights while shown

    @torch.no_grad()
    def update(self) -> None:
        """After an optimizer step (the raw weights in the model): move the average towards them."""
        assert not self.shown
        names = list(self.params)
        torch._foreach_lerp_([self.kept[n] for n in names], [self.params[n].detach() for n in names], 1 - self.decay)
        self.count += 1

    @torch.no_grad()
    def _swap(self) -> None:
        for name, param in self.params.items():
            raw = param.detach().clone()
            param.copy_(self.kept[name])
            self.kept[name].copy_(raw)
        self.shown = not self.shown

    def show(self) -> None:
        """The model holds the average (the raw weights kept here) until `hide`; twice is once."""
        if not self.shown:
            self._swap()

    def hide(self) -> None:
        """The model holds the raw weights again (before an optimizer step)."""
        if self.shown:
            self._swap()

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps in its train state (the model shows the average, which it commits)."""
        self.show()
        return {STATE_KEY: {"raw": {n: t.to("cpu") for n, t in self.kept.items()},
                            "count": torch.tensor(self.count)}}

    def load(self, state: dict[str, Any], where: str) -> None:
        """Resume from a train state: the model was loaded with the committed average; the saved raw
        weights go back into it and the average is kept here."""
        saved = state.get(STATE_KEY)
        if not isinstance(saved, dict) or set(saved.get("raw", {})) != set(self.params):
            raise ModelDirError(f"cannot resume: {where} holds no weight average of this model's trainable weights; "
                                f"resume with the --ema-decay the run was trained with, or start a new run from its "
                                f"weights with --init-from")
        with torch.no_grad():
            for name, param in self.params.items():
                self.kept[name].copy_(param.detach())
                param.copy_(saved["raw"][name].to(param.device))
        self.count, self.shown = int(saved["count"]), False


def make_average(model: nn.Module, decay: float | None) -> NoAverage:
    """A `WeightAverage` of `model` with --ema-decay `decay`; None: `NoAverage`."""
    return NoAverage() if decay is None else WeightAverage(model, decay)
