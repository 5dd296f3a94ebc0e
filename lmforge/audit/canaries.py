"""Canaries (Carlini et al. 2019, "The Secret Sharer"): random secrets that `lmforge prepare
--canaries N` planted in the training split, each repeated a chosen number of times and recorded
in DATA/canaries.json. A canary's exposure says how far the model prefers its secret over every
other secret it could have been:

    exposure = log2 |candidates| - log2 rank      (rank 1: the true secret is the most likely)

where candidates are all `length`-character strings over the `alphabet`, ranked by the model's
log-likelihood of the whole document (the format with the candidate in place of {secret}). When
there are at most `enumerate_limit` candidates, all are scored and the rank is exact. Otherwise the
rank is extrapolated as the paper does (Section 4.3): the log-likelihoods of `samples` random
candidates are fitted with a skew-normal distribution, and exposure = -log2 P(a random candidate
is at least as likely as the secret) under that fit (scipy's `skewnorm`: `pip install
lmforge[audit]`). A canary is also *extracted* when greedy decoding from the format's prefix (the
text before {secret}) writes the secret exactly.

    >>> from lmforge import audit
    >>> [c.exposure for c in audit.canaries("runs/canaries", data="data/canaries").canaries]   # doctest: +SKIP
    [2.1, 9.7, 13.3]
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from ..evaluate.score import loglikelihood
from ..fileio import read_json
from ..options import SEED, at_least, option, validate
from .likelihood import token_logprobs
from .samples import decoder_on_data, record_findings

CANARIES_FILE = "canaries.json"


@dataclass
class CanariesConfig:
    data: str | None = option(None, "the prepared data directory holding canaries.json (`lmforge prepare "
                                    "--canaries N`)")
    enumerate_limit: int = option(100_000, "score every candidate secret when there are at most this many; "
                                           "otherwise extrapolate from --samples of them", check=at_least(1))
    samples: int = option(5000, "random candidates scored to extrapolate the rank (a larger candidate space)",
                          check=at_least(100))
    seed: int = option(0, "seed of the sampled candidates", check=SEED)
    batch_size: int = option(256, "candidate documents per forward pass", check=at_least(1))
    progress: bool = option(True, "show a progress bar")

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class CanaryFinding:
    id: str
    secret: str
    repeats: int                 # copies prepare was asked to insert
    kept: int | None             # copies left in the training split after deduplication
    log_likelihood: float        # of the canary's document, in nats
    rank: int | None             # among all candidates (None: extrapolated)
    exposure: float              # bits; at most log2 of the candidate space
    method: str                  # "enumerated N candidates" or "skew-normal fit to N sampled candidates"
    extracted: bool              # greedy decoding from the prefix writes the secret


@dataclass
class CanariesResult:
    space: int                   # candidates per canary
    canaries: list[CanaryFinding]

    @property
    def max_exposure(self) -> float:
        return math.log2(self.space)

    @property
    def summary(self) -> str:
        by_repeats: dict[int, list[float]] = {}
        for c in self.canaries:
            by_repeats.setdefault(c.repeats, []).append(c.exposure)
        parts = [f"{np.mean(v):.1f} bits at {r} repeat{'s' * (r != 1)}" for r, v in sorted(by_repeats.items())]
        extracted = [c.id for c in self.canaries if c.extracted]
        return (f"canary exposure {', '.join(parts)} (at most {self.max_exposure:.1f}); extracted by greedy decoding: "
                f"{len(extracted)} of {len(self.canaries)}" + (f" ({', '.join(extracted)})" if extracted else ""))

    def to_dict(self) -> dict:
        return {"space": self.space, "max_exposure": self.max_exposure,
                "canaries": [asdict(c) for c in self.canaries]}

    def table(self) -> str:
        rows = [f"{'id':<8} {'repeats':>7} {'kept':>5} {'exposure':>9} {'rank':>9} {'extracted':>9}"]
        for c in self.canaries:
            rows.append(f"{c.id:<8} {c.repeats:>7} {c.kept if c.kept is not None else '-':>5} {c.exposure:>9.2f} "
                        f"{c.rank if c.rank is not None else '~':>9} {'yes' if c.extracted else 'no':>9}")
        methods = sorted({c.method for c in self.canaries})
        return "\n".join(rows + [f"exposure at most {self.max_exposure:.2f} bits; rank by {'; '.join(methods)}",
                                 self.summary])


def read_canaries(data_dir: str | Path) -> dict:
    """DATA/canaries.json, checked: a format holding {secret}, an alphabet, a length and the canaries."""
    path = Path(data_dir) / CANARIES_FILE
    if not path.is_file():
        raise DataError(f"{data_dir} has no {CANARIES_FILE}; plant canaries with `lmforge prepare FILES --out "
                        f"{data_dir} --canaries N`")
    spec = read_json(path, "prepare the data again with --canaries")
    ok = isinstance(spec, dict) and "{secret}" in str(spec.get("format", "")) and spec.get("alphabet") \
        and isinstance(spec.get("length"), int) and spec["length"] > 0 and isinstance(spec.get("canaries"), list) \
        and all(isinstance(c, dict) and "secret" in c for c in spec["canaries"])
    if not ok:
        raise DataError(f"{path} is not a canaries file (format with {{secret}}, alphabet, length, canaries); "
                        f"prepare the data again with --canaries")
    if not spec["canaries"]:
        raise DataError(f"{path} lists no canaries; prepare the data again with --canaries N (N >= 1)")
    return spec


class _Scorer:
    """Log-likelihoods of the canary format's documents for candidate secrets."""

    def __init__(self, lm, spec: dict, cfg: CanariesConfig):
        self.lm, self.format, self.cfg = lm, spec["format"], cfg
        self.start = [lm.tokenizer.eos_id] if lm.tokenizer.eos_id is not None else []   # what precedes a document

    def __call__(self, secrets: list[str], desc: str | None = None) -> np.ndarray:
        docs = [self.format.replace("{secret}", s) for s in secrets]
        ids = [self.start + e for e in self.lm.tokenizer.encode_batch(docs, bos=self.lm.tokenizer.add_bos)]
        if max(map(len, ids)) > self.lm.config.context_length:
            raise ConfigError(f"a canary document is longer than the model's context ({self.lm.config.context_length} "
                              f"tokens)")
        scored = token_logprobs(self.lm.module, ids, self.cfg.batch_size, desc)
        return np.array([float(lp.double().sum()) for lp, _ in scored])


def _exposure(truth: float, secret: str, spec: dict, score: _Scorer, cfg: CanariesConfig, space: int
              ) -> tuple[int | None, float, str]:
    """(rank or None, exposure, method) of a secret whose document scores `truth`."""
    alphabet, length = spec["alphabet"], spec["length"]
    desc = f"candidates for {secret}" if cfg.progress else None
    if space <= cfg.enumerate_limit:
        candidates = ["".join(t) for t in itertools.product(alphabet, repeat=length)]
        scores = score(candidates, desc)
        rank = 1 + int((scores > truth).sum())
        return rank, math.log2(space) - math.log2(rank), f"enumerated {space} candidates"
    try:
        from scipy.stats import skewnorm
    except ImportError:
        raise ConfigError("extrapolating exposure over a large candidate space needs scipy: pip install "
                          "'lmforge[audit]' (or raise --enumerate-limit to score every candidate)") from None
    rng = np.random.default_rng(cfg.seed)
    candidates = ["".join(rng.choice(list(alphabet), size=length)) for _ in range(cfg.samples)]
    scores = score(candidates, desc)
    shape, loc, scale = skewnorm.fit(scores)
    exposure = -float(skewnorm.logsf(truth, shape, loc, scale)) / math.log(2)
    return None, min(max(exposure, 0.0), math.log2(space)), f"skew-normal fit to {cfg.samples} sampled candidates"


def canaries(model, cfg: CanariesConfig | None = None, *, device: str = "auto", record: bool = True,
             **options) -> CanariesResult:
    """Exposure and greedy extraction of each canary of `data`/canaries.json in `model` (a model
    directory or a loaded `lmforge.Model`). Options are `CanariesConfig` fields (`data` required).
    The findings go to the model directory's audit.json unless `record=False`."""
    cfg = cfg or CanariesConfig(**options)
    lm = decoder_on_data(model, cfg.data, device, "canaries")
    spec = read_canaries(cfg.data)
    score = _Scorer(lm, spec, cfg)
    space = len(spec["alphabet"]) ** spec["length"]
    prefix = spec["format"].split("{secret}")[0]
    found = []
    for c in spec["canaries"]:
        truth = float(score([c["secret"]])[0])
        rank, exposure, method = _exposure(truth, c["secret"], spec, score, cfg, space)
        _, extracted = loglikelihood(lm.module, lm.tokenizer, prefix, c["secret"])
        found.append(CanaryFinding(str(c.get("id", c["secret"])), c["secret"], int(c.get("repeats", 0)),
                                   c.get("kept"), truth, rank, exposure, method, extracted))
    result = CanariesResult(space, found)
    settings = {"data": str(cfg.data), "enumerate_limit": cfg.enumerate_limit, "samples": cfg.samples,
                "seed": cfg.seed}
    record_findings(lm, "canaries", settings, result, record)
    return result
