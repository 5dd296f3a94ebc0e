"""What a model audit reads: the model (a directory, or one loaded already) and windows of token
ids sampled from the prepared shards it was trained on (train.bin) or held out from (val.bin); what
it found written back (audit.json, and the model card refreshed from it)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..api import Model, load
from ..card import refresh_card_after
from ..data.shards import load_meta, load_split
from ..errors import ConfigError, DataError
from ..tokenizers import Tokenizer
from . import findings
from .likelihood import check_family


def audited_model(model: "str | Path | Model", device: str = "auto") -> Model:
    """`model` loaded (a path), or as given (a loaded `lmforge.Model`)."""
    return model if isinstance(model, Model) else load(model, device=device)


def model_dir_of(lm: Model) -> Path | None:
    """The directory the findings go to: the model's own, when it was loaded from one."""
    return lm.path if lm.path is not None and Path(lm.path).is_dir() else None


def check_same_tokenizer(lm: Model, data_dir: str | Path) -> None:
    """The shards of `data_dir` must hold ids of the model's own tokenizer."""
    load_meta(data_dir)
    ours = Tokenizer.load(data_dir).hf.get_vocab()
    if ours != lm.tokenizer.hf.get_vocab():
        raise DataError(f"{data_dir} was not tokenized with the tokenizer of {lm.path}; prepare the text with it: "
                        f"`lmforge prepare FILES --out DATA --tokenizer {lm.path}`")


def sample_windows(data_dir: str | Path, split: str, length: int, n: int, seed: int) -> np.ndarray:
    """`n` windows of `length` token ids (int64, (n, length)) at distinct random starts in the
    `split` shard (fewer when the shard has fewer starts), the same ones for the same seed."""
    ids = load_split(data_dir, split)
    starts = len(ids) - length + 1
    if starts < 1:
        raise DataError(f"the {split} split of {data_dir} has {len(ids)} tokens, fewer than one window of {length}; "
                        f"use shorter windows or more text (a larger --val-fraction in `lmforge prepare`)")
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(starts, size=min(n, starts), replace=False))
    return np.stack([np.asarray(ids[s: s + length], dtype=np.int64) for s in picked])


def decoder_on_data(model: "str | Path | Model", data: str | None, device: str, audit: str) -> Model:
    """The decoder to audit on the prepared `data` it was trained on, both checked."""
    if not data:
        raise ConfigError(f"give the prepared data for the {audit} audit: --data DATA")
    lm = audited_model(model, device)
    check_family(lm.module, ("decoder",), audit)
    check_same_tokenizer(lm, data)
    return lm


def record_findings(lm: Model, name: str, settings: dict, result, record: bool = True) -> None:
    """Write `result` (its summary and to_dict()) into the audited model's directory, when it has
    one, and refresh its model card (README.md) from them. A card that cannot be refreshed (a
    hand-written README.md, a Hugging Face directory) is a warning: the findings are recorded."""
    where = model_dir_of(lm)
    if not record or where is None:
        return
    findings.record(where, name, settings, result.summary, result.to_dict())
    refresh_card_after(where)
