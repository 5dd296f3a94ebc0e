"""What the audits found, kept in the model directory: `MODEL/audit.json`, one key per audit
(memorization, canaries, membership, bias), a rerun replacing its own key. The model card reads
this file (`lmforge.card.facts.read_audit`, which `read` is), one section per key.

    {"memorization": {"when": "2026-12-03T18:40:00Z",            # UTC, ISO 8601
                      "settings": {"data": "data/pydoc", "k": 32, "m": 32, "windows": 200, ...},
                      "summary": "2.5% of training windows extractable (k=32, m=32) against 0.0% held out",
                      "results": {...}},
     "canaries": {...}, "membership": {...}, "bias": {...}}

The file is written whole (temp file, then rename), after reading what is there, so one audit
never loses another's findings.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

from ..card.facts import read_audit
from ..errors import ModelDirError
from ..modeldir import AUDIT_FILE, write_json

KEYS = ("when", "settings", "summary", "results")


def read(model_dir: str | Path) -> dict[str, dict[str, Any]]:
    """The findings recorded in `model_dir` ({} when no audit has run there)."""
    return read_audit(Path(model_dir))


def record(model_dir: str | Path, name: str, settings: dict, summary: str, results: dict) -> None:
    """Write (or replace) the findings of audit `name` in `model_dir`/audit.json, the others kept."""
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelDirError(f"cannot record the {name} audit: {model_dir} is not a model directory")
    found = read(model_dir)
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    found[name] = {"when": when, "settings": settings, "summary": summary, "results": results}
    write_json(model_dir / AUDIT_FILE, found)
