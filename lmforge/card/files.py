"""README.md of a model directory: composing the card with what is already there, and writing it.

The rule (the package docstring states it for users): lmforge owns the block between the
markers and the front-matter keys it knows; everything else in the file is the user's and is
kept; a README.md without the markers is not lmforge's and is replaced only with `overwrite`.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..config import ModelConfig
from ..errors import ConfigError, DataError, LmforgeError
from ..fileio import read_text
from ..modeldir import atomic_write_text
from ..options import option, validate
from ..safety import check_no_writer
from ..tokenizers import Tokenizer
from .facts import check_card_dir, is_lmforge_dir, read_facts
from .render import body, metadata

CARD_FILE = "README.md"
BEGIN, END = "<!-- lmforge:begin -->", "<!-- lmforge:end -->"
OUTSIDE = "<!-- lmforge rewrites only what is between the lmforge:begin and lmforge:end markers: write your own " \
          "sections above or below them. -->"
OWNED = ("library_name", "pipeline_tag", "datasets", "metrics", "model-index")   # front-matter keys lmforge sets


@dataclass
class CardConfig:
    model_dir: str = option(None, "the model directory whose model card (README.md) to write or refresh",
                            positional=True)
    license: str | None = option(None, "the model's license as the Hugging Face Hub names it (mit, apache-2.0, "
                                       "cc-by-4.0, other, ...); kept in the card from then on")
    language: list[str] = option([], "the language(s) of the model's text as ISO 639-1 codes (en, fr, ...); kept in "
                                     "the card from then on")
    overwrite: bool = option(False, "replace a README.md that lmforge did not write (one without its markers) with "
                                    "a fresh card")

    def __post_init__(self) -> None:
        if isinstance(self.language, str):                      # language="en", as the Hub's own card data takes it
            self.language = [self.language]
        validate(self)


def has_markers(text: str) -> bool:
    return BEGIN in text and END in text.split(BEGIN, 1)[1]


def split_front_matter(text: str, source: str) -> tuple[dict[str, Any], str]:
    """(the YAML front matter as a dict, the rest of the text) of a card."""
    import yaml
    if not text.startswith("---\n"):
        return {}, text
    end = text.find("\n---\n", 3)
    if end < 0:
        raise DataError(f"{source} opens a YAML front matter (---) that never closes; add the closing --- line")
    try:
        front = yaml.safe_load(text[4:end]) or {}
    except yaml.YAMLError as e:
        raise DataError(f"{source}: its front matter is not valid YAML ({str(e).splitlines()[0]}); fix it, or "
                        f"replace the card with --overwrite") from None
    if not isinstance(front, dict):
        raise DataError(f"{source}: its front matter is not a mapping of keys; fix it, or replace the card with "
                        f"--overwrite")
    return front, text[end + len("\n---\n"):]


def merge_metadata(user: dict[str, Any], ours: dict[str, Any], license: str | None,
                   language: Iterable[str]) -> dict[str, Any]:
    """The front matter: the user's keys, lmforge's known keys set, lmforge's tags added to the
    user's, and license / language when given (else as the user had them)."""
    merged: dict[str, Any] = {}
    if license or user.get("license"):
        merged["license"] = license or user["license"]
    language = list(language) or user.get("language")
    if language:
        merged["language"] = language
    user_tags = user.get("tags") if isinstance(user.get("tags"), list) else []
    merged.update({**ours, "tags": ours["tags"] + [t for t in user_tags if t not in ours["tags"]]})
    merged.update({k: v for k, v in user.items() if k not in merged and k not in OWNED})
    return merged


def compose(front: dict[str, Any], block: str, rest: str | None) -> str:
    """The card's text: front matter, then `rest` (the user's text after the front matter) with its
    marked block replaced by `block`; a fresh card when `rest` is None."""
    import yaml
    marked = f"{BEGIN}\n{block}\n{END}"
    if rest is None:
        text = f"{marked}\n\n{OUTSIDE}\n"
    else:
        before, after = rest.split(BEGIN, 1)
        text = before + marked + after.split(END, 1)[1]
    return "---\n" + yaml.safe_dump(front, sort_keys=False, allow_unicode=True, width=1000) + "---\n\n" + \
        text.lstrip("\n")


def card_text(path: str | Path | None, config: ModelConfig | None = None, tokenizer: Tokenizer | None = None, *,
              existing: str | None = None, license: str | None = None, language: Iterable[str] = (),
              library_name: str = "lmforge", name: str | None = None) -> str:
    """The card of the model directory `path` (or of `config` and `tokenizer` alone, with `path`
    None), composed with `existing` (a README.md's text with the markers; None: a fresh card)."""
    path = Path(path) if path is not None else None
    facts = read_facts(path, config, tokenizer, name)
    user, rest = split_front_matter(existing, str(path / CARD_FILE) if path else CARD_FILE) if existing else ({}, None)
    return compose(merge_metadata(user, metadata(facts, library_name), license, language), body(facts), rest)


def read_card(path: Path) -> str | None:
    """README.md of the directory `path` (None when absent)."""
    file = Path(path) / CARD_FILE
    return read_text(file) if file.is_file() else None


def card(cfg: CardConfig) -> Path:
    """Write or refresh the model card, README.md of `cfg.model_dir`; returns its path. Only the
    block between lmforge's markers and its front-matter keys change; a README.md without the
    markers is replaced only with `cfg.overwrite`."""
    if not cfg.model_dir:
        raise ConfigError("give the model directory whose card to write: `lmforge card MODEL_DIR`")
    path = check_card_dir(cfg.model_dir)
    check_no_writer(path)
    existing = read_card(path)
    if existing is not None and not has_markers(existing) and not cfg.overwrite:
        raise ConfigError(f"{path / CARD_FILE} was not written by lmforge (it has no {BEGIN} marker); pass "
                          f"--overwrite to replace it with a fresh card, or add the two markers "
                          f"{BEGIN} {END} where lmforge may write its sections")
    if existing is not None and not has_markers(existing):
        existing = None
    text = card_text(path, existing=existing, license=cfg.license, language=cfg.language)
    atomic_write_text(path / CARD_FILE, text)
    return path / CARD_FILE


def refresh_card(model_dir: str | Path) -> Path | None:
    """Refresh README.md after a verb changed what the model directory records (a training run's
    end, an audit): written when absent or marked; a hand-written one is left as it is, with a
    warning. Returns the path written, or None."""
    path = Path(model_dir)
    existing = read_card(path)
    if existing is not None and not has_markers(existing):
        warnings.warn(f"{path / CARD_FILE} was not written by lmforge, so it was left as it is; `lmforge card "
                      f"{path} --overwrite` replaces it with lmforge's card")
        return None
    atomic_write_text(path / CARD_FILE, card_text(path, existing=existing))
    return path / CARD_FILE


def refresh_card_after(model_dir: str | Path) -> Path | None:
    """`refresh_card` for the verbs that refresh the card on their own (a run's end, an audit):
    a directory that is not lmforge's (a Hugging Face one) is skipped, and a card that cannot be
    written (a malformed audit.json) is a warning — what the verb made is there either way."""
    path = Path(model_dir)
    if not is_lmforge_dir(path):
        return None
    try:
        return refresh_card(path)
    except LmforgeError as e:
        warnings.warn(f"the model card of {path} was not refreshed: {e}")
        return None


def current_card(path: str | Path | None, config: ModelConfig | None = None, tokenizer: Tokenizer | None = None,
                 library_name: str = "lmforge") -> str:
    """The card of a model as it would be written now (nothing is written): lmforge's card of the
    model directory `path` (its library `library_name`) composed with its README.md; a hand-written
    README.md, or the README.md of a directory that is not lmforge's (a Hugging Face one), as it is;
    for a model with no card (a Hugging Face directory without one, a GGUF file, None), the card of
    `config` and `tokenizer`."""
    path = Path(path) if path is not None else None
    existing = read_card(path) if path is not None and path.is_dir() else None
    own = path is not None and path.is_dir() and is_lmforge_dir(path)
    if existing is not None and not (own and has_markers(existing)):
        return existing                  # hand-written, or a Hugging Face directory's own (an export's included)
    name = path.resolve().name.removesuffix(".gguf") if path is not None else None
    return card_text(path if own else None, config, tokenizer, existing=existing, library_name=library_name, name=name)


def card_metadata(path: str | Path, config: ModelConfig | None = None, tokenizer: Tokenizer | None = None
                  ) -> dict[str, Any]:
    """The front matter of the model's card as it would be written now (`current_card`)."""
    return split_front_matter(current_card(path, config, tokenizer), CARD_FILE)[0]
