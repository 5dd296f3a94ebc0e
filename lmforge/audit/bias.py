"""Bias pairs (CrowS-Pairs, Nangia et al. 2020): for each pair of sentences that differ only in
the group they speak of — the more stereotypical one first, the less stereotypical one second —
which one the model finds more likely. The answer is the share of pairs where it prefers the
more stereotypical sentence (0.5: no preference), with a bootstrap confidence interval over the
pairs and the same per category.

How a sentence is scored:
- decoder: its log-likelihood, sum of log p(token | the tokens before), after <eos> (what came
  before every document in training);
- masked-LM encoder: the CrowS-Pairs score. Both sentences are tokenized as the encoder saw text
  (<bos> tokens <eos>); the tokens the two share are found as CrowS-Pairs's metric.py does
  (difflib's SequenceMatcher on the ids, its `equal` spans), and each shared token except <bos>
  and <eos> (metric.py skips [CLS] and [SEP]) is masked in turn, one copy of the sentence per token, summing log P(the token | the
  rest): a pseudo-log-likelihood over the unmodified tokens, conditioned on the modified ones, so
  the two sentences are scored on the same tokens.
A tie counts as no preference for the stereotype (as in CrowS-Pairs).

The pairs file: .tsv (tab-separated, no quoting) with columns more-stereotypical, less-
stereotypical and optionally a category; a header line is optional and recognised by its first
field (`sent_more` or `more`). Or CrowS-Pairs's own .csv (crows_pairs_anonymized.csv), read by its
header: `sent_more` and `sent_less` are the pair, `bias_type` the category. Its
`stereo_antistereo` column needs no handling: the CrowS-Pairs metric counts the pairs whose
`sent_more` scores higher, whatever the direction.
"""

from __future__ import annotations

import csv
import difflib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from ..fileio import read_text
from ..options import SEED, at_least, between, option, validate
from .likelihood import check_family, pseudo_log_likelihood, token_logprobs
from .samples import audited_model, record_findings

HEADER_FIRST = ("sent_more", "more", "more_stereotypical", "stereotypical")


@dataclass
class BiasConfig:
    pairs: str | None = option(None, "the sentence pairs: .tsv (more stereotypical, less stereotypical[, category]; "
                                     "header optional) or CrowS-Pairs's .csv")
    bootstrap: int = option(1000, "bootstrap resamples of the pairs for the confidence interval", check=at_least(10))
    confidence: float = option(0.95, "confidence level of the interval", check=between(0, 1, low_open=True,
                                                                                          high_open=True))
    seed: int = option(0, "seed of the bootstrap", check=SEED)
    progress: bool = option(True, "show a progress bar")

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class Share:
    pairs: int
    share: float                 # of pairs whose more stereotypical sentence scores higher
    low: float                   # the bootstrap confidence interval
    high: float


@dataclass
class BiasResult:
    scoring: str                 # log-likelihood (decoder) or pseudo-log-likelihood (encoder)
    confidence: float
    overall: Share
    ties: int
    categories: dict[str, Share] = field(default_factory=dict)
    scores: list[tuple[float, float]] = field(default_factory=list)     # (more, less) per pair

    @property
    def summary(self) -> str:
        o = self.overall
        return (f"prefers the more stereotypical sentence in {o.share:.1%} of {o.pairs} pairs "
                f"({self.confidence:.0%} CI {o.low:.1%}-{o.high:.1%}; 50% is no preference), by {self.scoring}")

    def to_dict(self) -> dict:
        from dataclasses import asdict
        return asdict(self)

    def table(self) -> str:
        rows = [f"{'category':<24} {'pairs':>6} {'stereotype':>10} {'CI low':>7} {'CI high':>7}"]
        for name, s in [*sorted(self.categories.items()), ("all", self.overall)]:
            rows.append(f"{name:<24} {s.pairs:>6} {s.share:>10.3f} {s.low:>7.3f} {s.high:>7.3f}")
        return "\n".join(rows + [self.summary])


def read_pairs(path: str | Path) -> list[tuple[str, str, str]]:
    """(more stereotypical, less stereotypical, category or "") of each pair of the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"pairs file {path} does not exist; give a .tsv of sentence pairs")
    text = read_text(path).removeprefix("\ufeff")
    if path.suffix.lower() == ".csv":
        reader = csv.DictReader(io.StringIO(text))
        if not {"sent_more", "sent_less"} <= set(reader.fieldnames or ()):
            raise DataError(f"{path} has no sent_more and sent_less columns (CrowS-Pairs's); give them, or a .tsv")
        pairs = [(r["sent_more"], r["sent_less"], r.get("bias_type") or "") for r in reader]
    else:
        lines = [line for line in text.splitlines() if line.strip()]
        if lines and lines[0].split("\t")[0].strip().lower() in HEADER_FIRST:
            lines = lines[1:]
        pairs = []
        for n, line in enumerate(lines, 1):
            cells = [c.strip() for c in line.split("\t")]
            if len(cells) not in (2, 3) or not cells[0] or not cells[1]:
                raise DataError(f"{path}: pair {n} has {len(cells)} tab-separated fields; each line needs the more "
                                f"stereotypical sentence, a tab, the less stereotypical one[, a tab, a category]")
            pairs.append((cells[0], cells[1], cells[2] if len(cells) == 3 else ""))
    if not pairs:
        raise DataError(f"{path} holds no sentence pairs")
    return pairs


def shared_positions(a: list[int], b: list[int], special: set[int]) -> tuple[list[int], list[int]]:
    """The positions in `a` and in `b` of the tokens the two share (difflib's equal spans, as
    CrowS-Pairs's get_span), the ids in `special` (<bos>, <eos>) left out."""
    ours, theirs = [], []
    for op, a0, a1, b0, b1 in difflib.SequenceMatcher(None, [str(x) for x in a], [str(x) for x in b]).get_opcodes():
        if op == "equal":
            ours += [i for i in range(a0, a1) if a[i] not in special]
            theirs += [j for j in range(b0, b1) if b[j] not in special]
    return ours, theirs


def _encoder_scores(lm, pairs, desc: str | None) -> list[tuple[float, float]]:
    tok = lm.tokenizer
    if tok.mask_id is None:
        raise ConfigError("this encoder's tokenizer has no <mask> token: it cannot be scored by masked-LM")
    from tqdm.auto import tqdm
    out = []
    for more, less, _ in tqdm(pairs, desc=desc, disable=desc is None, leave=False):
        a, b = (tok.encode(s, bos=True, eos=True) for s in (more, less))
        if max(len(a), len(b)) > lm.config.context_length:
            raise DataError(f"the pair {more!r} / {less!r} is longer than the model's context")
        pa, pb = shared_positions(a, b, {tok.bos_id, tok.eos_id})
        out.append((pseudo_log_likelihood(lm.module, a, pa, tok.mask_id),
                    pseudo_log_likelihood(lm.module, b, pb, tok.mask_id)))
    return out


def _decoder_scores(lm, pairs, desc: str | None) -> list[tuple[float, float]]:
    tok = lm.tokenizer
    start = [tok.eos_id] if tok.eos_id is not None else []
    ids = [start + e for e in tok.encode_batch([s for p in pairs for s in p[:2]], bos=tok.add_bos)]
    if max(map(len, ids)) > lm.config.context_length:
        raise DataError(f"a sentence of the pairs is longer than the model's context ({lm.config.context_length})")
    lls = [float(lp.double().sum()) for lp, _ in token_logprobs(lm.module, ids, 64, desc)]
    return list(zip(lls[0::2], lls[1::2]))


def bootstrap_share(prefers: np.ndarray, n: int, confidence: float, seed: int) -> Share:
    """The share of True in `prefers` with a percentile bootstrap interval of `n` resamples."""
    rng = np.random.default_rng(seed)
    shares = prefers[rng.integers(0, len(prefers), (n, len(prefers)))].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(shares, [tail, 100 - tail])
    return Share(len(prefers), float(prefers.mean()), float(low), float(high))


def bias(model, cfg: BiasConfig | None = None, *, device: str = "auto", record: bool = True, **options) -> BiasResult:
    """How often `model` (a model directory or a loaded `lmforge.Model`) prefers the more
    stereotypical sentence of each pair of `pairs`. Options are `BiasConfig` fields (`pairs`
    required). The findings go to the model directory's audit.json unless `record=False`."""
    cfg = cfg or BiasConfig(**options)
    if not cfg.pairs:
        raise ConfigError("give the sentence pairs: --pairs FILE.tsv")
    pairs = read_pairs(cfg.pairs)
    lm = audited_model(model, device)
    check_family(lm.module, ("decoder", "encoder"), "bias")
    encoder = lm.config.family == "encoder"
    desc = "pairs" if cfg.progress else None
    scores = _encoder_scores(lm, pairs, desc) if encoder else _decoder_scores(lm, pairs, desc)
    prefers = np.array([m > s for m, s in scores])
    categories = {}
    for name in sorted({c for _, _, c in pairs if c}):
        mine = np.array([c == name for _, _, c in pairs])
        categories[name] = bootstrap_share(prefers[mine], cfg.bootstrap, cfg.confidence, cfg.seed)
    result = BiasResult("pseudo-log-likelihood" if encoder else "log-likelihood", cfg.confidence,
                        bootstrap_share(prefers, cfg.bootstrap, cfg.confidence, cfg.seed),
                        sum(m == s for m, s in scores), categories, scores)
    settings = {"pairs": str(cfg.pairs), "bootstrap": cfg.bootstrap, "confidence": cfg.confidence, "seed": cfg.seed}
    record_findings(lm, "bias", settings, result, record)
    return result
