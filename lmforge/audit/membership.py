"""Loss-based membership inference (Yeom et al. 2018): would an attacker who sees only the model's
loss on a piece of text tell whether it was in the training data? Windows sampled from the
training shard (members) and the validation shard (non-members) are scored by their mean token
loss; the ROC AUC of "lower loss means member" is the answer — 0.5 is chance, 1.0 a model that
gives every training window away.

    >>> from lmforge import audit
    >>> audit.membership("runs/quickstart", data="data/pydoc").auc     # doctest: +SKIP
    0.53
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..options import SEED, at_least, option, validate
from .likelihood import token_logprobs
from .samples import decoder_on_data, record_findings, sample_windows


@dataclass
class MembershipConfig:
    data: str | None = option(None, "the prepared data directory the model was trained on (its train.bin and "
                                    "val.bin; `lmforge prepare`)")
    windows: int = option(200, "windows sampled from each split (members: training; non-members: held out)",
                          check=at_least(1))
    length: int | None = option(None, "tokens per window", unset="the model's context length", check=at_least(2))
    seed: int = option(0, "seed of the sampling of windows", check=SEED)
    batch_size: int = option(32, "windows per forward pass", check=at_least(1))
    progress: bool = option(True, "show a progress bar")

    def __post_init__(self) -> None:
        validate(self)


def roc_auc(positive: np.ndarray, negative: np.ndarray) -> float:
    """Area under the ROC curve of scores where higher means positive: the probability that a
    random positive outscores a random negative, ties counting half (Mann-Whitney U / n_pos n_neg)."""
    scores = np.concatenate([positive, negative]).astype(np.float64)
    order = np.argsort(scores, kind="mergesort")
    _, first, counts = np.unique(scores[order], return_index=True, return_counts=True)
    ranks = np.empty(len(scores))
    ranks[order] = np.repeat(first + (counts + 1) / 2, counts)          # 1-based, ties averaged
    n_pos, n_neg = len(positive), len(negative)
    return float((ranks[:n_pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@dataclass
class MembershipResult:
    auc: float
    windows: int                 # per split
    length: int
    train_loss: float            # mean token loss (nats) of the training windows
    heldout_loss: float
    train_losses: list[float]
    heldout_losses: list[float]

    @property
    def summary(self) -> str:
        return (f"membership inference by loss: ROC AUC {self.auc:.3f} on training against held-out windows "
                f"(0.5 is chance); mean loss {self.train_loss:.3f} against {self.heldout_loss:.3f}")

    def to_dict(self) -> dict:
        return {"auc": self.auc, "windows": self.windows, "length": self.length, "train_loss": self.train_loss,
                "heldout_loss": self.heldout_loss, "train_losses": self.train_losses,
                "heldout_losses": self.heldout_losses}

    def table(self) -> str:
        return "\n".join([f"{'split':<10} {'windows':>8} {'mean loss':>10}",
                          f"{'train':<10} {self.windows:>8} {self.train_loss:>10.4f}",
                          f"{'held out':<10} {self.windows:>8} {self.heldout_loss:>10.4f}",
                          f"ROC AUC {self.auc:.4f} (0.5 is chance)"])


def _losses(module, windows: np.ndarray, batch_size: int, desc: str | None) -> np.ndarray:
    scored = token_logprobs(module, windows.tolist(), batch_size, desc)
    return np.array([-float(logprobs.double().mean()) for logprobs, _ in scored])


def membership(model, cfg: MembershipConfig | None = None, *, device: str = "auto", record: bool = True,
               **options) -> MembershipResult:
    """ROC AUC of loss-based membership inference on `model` (a model directory or a loaded
    `lmforge.Model`). Options are `MembershipConfig` fields (`data` required). The findings go to
    the model directory's audit.json unless `record=False`."""
    cfg = cfg or MembershipConfig(**options)
    lm = decoder_on_data(model, cfg.data, device, "membership")
    length = cfg.length or lm.config.context_length
    if length > lm.config.context_length:
        raise ConfigError(f"--length {length} is longer than the model's context ({lm.config.context_length})")
    losses = {}
    for split, name in (("train", "training"), ("val", "held-out")):
        windows = sample_windows(cfg.data, split, length, cfg.windows, cfg.seed)
        losses[split] = _losses(lm.module, windows, cfg.batch_size, f"{name} windows" if cfg.progress else None)
    train, heldout = losses["train"], losses["val"]
    result = MembershipResult(roc_auc(-train, -heldout), min(len(train), len(heldout)), length,
                              float(train.mean()), float(heldout.mean()), train.round(5).tolist(),
                              heldout.round(5).tolist())
    settings = {"data": str(cfg.data), "windows": cfg.windows, "length": length, "seed": cfg.seed}
    record_findings(lm, "membership", settings, result, record)
    return result
