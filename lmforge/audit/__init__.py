"""Audits: what a model memorised, whom it prefers, and what its evaluation data shares with its
training data — measured on the model directory and the prepared shards it was trained on.

    memorization.py   k-extractability of training windows against held-out ones (Carlini et al. 2022)
    canaries.py       exposure and greedy extraction of the secrets `prepare --canaries` planted (Carlini et al. 2019)
    membership.py     loss-based membership inference: ROC AUC, training against held-out windows
    bias.py           sentence pairs: share preferring the more stereotypical one (CrowS-Pairs), bootstrap CI
    overlap.py        n-gram contamination of an evaluation file by the training shard (GPT-3's 13-grams)
    findings.py       MODEL/audit.json: what each model audit found (the model card reads it)
    likelihood.py     token log-probabilities (decoders) and pseudo-log-likelihoods (encoders), batched
    samples.py        the audited model, windows sampled from the shards, the findings written back

Each model audit takes a model directory (or a loaded `lmforge.Model`) and its options as keywords,
returns a result with `.summary`, `.table()` and `.to_dict()`, and records it in MODEL/audit.json
(the model card, MODEL/README.md, refreshed from it):

    >>> from lmforge import audit
    >>> audit.memorization("runs/quickstart", data="data/pydoc", k=32, m=32).summary    # doctest: +SKIP
    >>> audit.bias("runs/bert", pairs="pairs.tsv").overall                               # doctest: +SKIP
    >>> audit.overlap("data/pydoc", against="test.jsonl").contaminated                   # doctest: +SKIP
"""

from .bias import BiasConfig, BiasResult, bias
from .canaries import CanariesConfig, CanariesResult, canaries
from . import findings
from .membership import MembershipConfig, MembershipResult, membership
from .memorization import MemorizationConfig, MemorizationResult, memorization
from .overlap import OverlapConfig, OverlapResult, overlap

__all__ = ["memorization", "canaries", "membership", "bias", "overlap", "findings",
           "MemorizationConfig", "CanariesConfig", "MembershipConfig", "BiasConfig", "OverlapConfig",
           "MemorizationResult", "CanariesResult", "MembershipResult", "BiasResult", "OverlapResult"]
