"""k-extractability (Carlini et al. 2022, "Quantifying Memorization Across Neural Language
Models"): of windows sampled from the training shard, the share whose greedy continuation of the
first k tokens reproduces the next m tokens exactly — against the same share on windows held out
(the validation shard), the baseline a model reaches by generalising alone.

Greedy decoding writes the true next m tokens exactly when, at each of those m steps, the true
token is the argmax given the true tokens before it (each step then sees the same context as the
teacher-forced pass), so one teacher-forced forward pass per batch decides it.

    >>> from lmforge import audit
    >>> audit.memorization("runs/quickstart", data="data/pydoc", k=32, m=32).summary   # doctest: +SKIP
    '3.0% of training windows extractable (k=32, m=32) against 0.0% held out'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..errors import ConfigError
from ..options import SEED, at_least, option, validate
from .likelihood import token_logprobs
from .samples import decoder_on_data, record_findings, sample_windows


@dataclass
class MemorizationConfig:
    data: str | None = option(None, "the prepared data directory the model was trained on (its train.bin and "
                                    "val.bin; `lmforge prepare`)")
    k: int = option(32, "prefix length: the tokens the model is prompted with", check=at_least(1))
    m: int = option(32, "continuation length: the tokens greedy decoding must reproduce exactly", check=at_least(1))
    windows: int = option(200, "windows sampled from each split (training and held out)", check=at_least(1))
    seed: int = option(0, "seed of the sampling of windows", check=SEED)
    batch_size: int = option(32, "windows per forward pass", check=at_least(1))
    progress: bool = option(True, "show a progress bar")

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class Extractable:
    windows: int                 # sampled from the split
    extractable: int             # whose continuation greedy decoding reproduces exactly
    token_accuracy: float        # share of continuation tokens that were the greedy choice

    @property
    def share(self) -> float:
        return self.extractable / self.windows


@dataclass
class MemorizationResult:
    k: int
    m: int
    train: Extractable
    heldout: Extractable
    examples: list[str] = field(default_factory=list)     # a few extractable training windows, decoded

    @property
    def summary(self) -> str:
        return (f"{self.train.share:.1%} of training windows extractable (k={self.k}, m={self.m}) against "
                f"{self.heldout.share:.1%} held out")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["train"]["share"], out["heldout"]["share"] = self.train.share, self.heldout.share
        return out

    def table(self) -> str:
        rows = [f"{'split':<10} {'windows':>8} {'extractable':>12} {'share':>7} {'token acc':>10}"]
        for name, s in (("train", self.train), ("held out", self.heldout)):
            rows.append(f"{name:<10} {s.windows:>8} {s.extractable:>12} {s.share:>7.1%} {s.token_accuracy:>10.3f}")
        return "\n".join(rows + [self.summary])


def _extractable(module, windows, k: int, batch_size: int, desc: str | None) -> tuple[Extractable, list[int]]:
    scored = token_logprobs(module, windows.tolist(), batch_size, desc)
    hits = [bool(greedy[k - 1:].all()) for _, greedy in scored]        # greedy[i] is about token i + 1
    accuracy = sum(float(greedy[k - 1:].float().mean()) for _, greedy in scored) / len(scored)
    return Extractable(len(scored), sum(hits), accuracy), [i for i, hit in enumerate(hits) if hit]


def memorization(model, cfg: MemorizationConfig | None = None, *, device: str = "auto", record: bool = True,
                 **options) -> MemorizationResult:
    """k-extractability of `model` (a model directory or a loaded `lmforge.Model`) on its training
    windows against held-out ones. Options are `MemorizationConfig` fields (`data` required). The
    findings go to the model directory's audit.json unless `record=False`."""
    cfg = cfg or MemorizationConfig(**options)
    lm = decoder_on_data(model, cfg.data, device, "memorization")
    if cfg.k + cfg.m > lm.config.context_length:
        raise ConfigError(f"k + m = {cfg.k + cfg.m} tokens do not fit the model's context of "
                          f"{lm.config.context_length}; lower --k or --m")
    results = {}
    for split, name in (("train", "training"), ("val", "held-out")):
        windows = sample_windows(cfg.data, split, cfg.k + cfg.m, cfg.windows, cfg.seed)
        desc = f"{name} windows" if cfg.progress else None
        results[split], hits = _extractable(lm.module, windows, cfg.k, cfg.batch_size, desc)
        if split == "train":
            examples = [lm.tokenizer.decode(windows[i].tolist()) for i in hits[:3]]
    result = MemorizationResult(cfg.k, cfg.m, results["train"], results["val"], examples)
    settings = {"data": str(cfg.data), "k": cfg.k, "m": cfg.m, "windows": cfg.windows, "seed": cfg.seed}
    record_findings(lm, "memorization", settings, result, record)
    return result
