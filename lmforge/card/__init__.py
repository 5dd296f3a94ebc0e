"""The model card: README.md of a model directory in Hugging Face's layout — YAML front matter
(library, pipeline, tags, datasets, metrics, the evaluation results as a `model-index`; license
and language when given), then Markdown sections written from what the directory records:
model details, training data, training procedure, evaluation, audit, limitations.

    lmforge card runs/my-model --license mit       lmforge.card(lmforge.CardConfig("runs/my-model", license="mit"))
    lmforge.load("runs/my-model").card()           the card's text (nothing written)

The rule that keeps a user's words:

- lmforge writes its sections between `<!-- lmforge:begin -->` and `<!-- lmforge:end -->`; a
  refresh replaces only that block, and text above or below it stays as written;
- in the front matter it sets the keys it knows (library_name, pipeline_tag, datasets, metrics,
  model-index) and adds its tags to the user's; other keys, and a license or language already
  there, stay (`--license` / `--language` change them);
- a README.md without the markers (written by hand, or come with an imported model) is not
  lmforge's: `lmforge card` refuses it unless `--overwrite` (a fresh card replaces it), and the
  verbs that refresh the card on their own leave it alone with a warning.

Who writes it: `lmforge card`; `train`, `finetune` and `distill` when a run ends; every model audit
(`lmforge audit`, `lmforge.audit`) when it has recorded its findings; `export --format hf`
into the exported directory (library_name: transformers), and `--format gguf` carries its license,
tags and languages as GGUF metadata. `lmforge serve` shows it (GET /v1/models/{model}/card).

    facts.py    what a model directory records (config, tokenizer, settings, data, metrics, reports, audits)
    render.py   the front matter and the Markdown sections, from those facts
    files.py    composing with an existing README.md (the rule above) and writing it
"""

from .facts import AUDIT_FILE, Facts, read_facts
from .files import (BEGIN, CARD_FILE, END, CardConfig, card, card_metadata, card_text, current_card, has_markers,
                    refresh_card, refresh_card_after)

__all__ = ["AUDIT_FILE", "BEGIN", "CARD_FILE", "END", "CardConfig", "Facts", "card", "card_metadata", "card_text", "current_card",
           "has_markers", "read_facts", "refresh_card", "refresh_card_after"]
