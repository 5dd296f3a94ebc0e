"""What a model card is made from: the facts a model directory records, read once into `Facts`.

Only config.json is needed; every other file is optional and read as it is (a file lmforge did
not write, or a model saved from Python, gives a shorter card, not an error). The audits'
findings (`audit.json`, its format in `lmforge.audit.findings`) are read as plain JSON.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import ModelConfig
from ..errors import DataError, ModelDirError
from ..fileio import read_json
from ..model import num_params
from ..modeldir import ADAPTER_CONFIG, AUDIT_FILE, CONFIG_FILE, METRICS_FILE, WEIGHTS_FILE, read_weights_metadata
from ..runfile import TRAIN_CONFIG_FILE, read_run_file
from ..tokenizers import Tokenizer

META_FILE = "meta.json"                    # what `lmforge prepare` recorded about the data
REPORTS = ("classification_report.json", "translation_report.json")    # a task's final report on its test split


@dataclass
class Facts:
    """What one model directory records, as the card shows it."""
    name: str                                        # the directory's name (the card's title)
    config: ModelConfig
    params: int
    tokenizer: Tokenizer | None
    settings: dict[str, Any] = field(default_factory=dict)   # train_config.yaml ({}: not trained by lmforge)
    data: dict[str, Any] | None = None               # meta.json of the prepared data (None: not found)
    last_eval: dict[str, Any] = field(default_factory=dict)  # the last "eval" row of metrics.jsonl
    last_train: dict[str, Any] = field(default_factory=dict)  # the last "train" row
    kept: dict[str, Any] = field(default_factory=dict)       # the "best" row: the evaluation whose weights were kept
    reports: list[dict[str, Any]] = field(default_factory=list)  # the task's final reports (split, data, scores)
    lora: dict[str, Any] | None = None               # adapter_config.json of a LoRA run
    audit: dict[str, Any] = field(default_factory=dict)      # audit.json
    source: str | None = None                        # where imported weights came from ("hf:gpt2", ...)

    @property
    def task(self) -> str | None:
        return self.settings.get("task")


def check_card_dir(path: str | Path) -> Path:
    """`path` when it is an lmforge model directory (its config.json is lmforge's), else a one-line error."""
    path = Path(path)
    if not path.exists():
        raise ModelDirError(f"model directory {path} does not exist; give the directory a training run wrote "
                            f"(`lmforge train --out {path}`)")
    if not path.is_dir():
        raise ModelDirError(f"{path} is a file, not a model directory; give the directory that holds config.json")
    if not (path / CONFIG_FILE).is_file():
        raise ModelDirError(f"{path} holds no {CONFIG_FILE}; it is not a model directory — give the directory a "
                            f"training run wrote")
    if not is_lmforge_dir(path):
        raise ModelDirError(f"{path} is not an lmforge model directory (its {CONFIG_FILE} is not lmforge's): a Hugging "
                            f"Face directory's card is its own README.md; `lmforge import` it to make an lmforge one")
    return path


def is_lmforge_dir(path: Path) -> bool:
    """Whether `path` holds an lmforge config.json (not a Hugging Face one)."""
    config = optional_json(Path(path) / CONFIG_FILE)
    return isinstance(config, dict) and "family" in config


def read_facts(path: Path | None, config: ModelConfig | None = None, tokenizer: Tokenizer | None = None,
               name: str | None = None) -> Facts:
    """The facts of the model directory `path` (config and tokenizer read from it unless given);
    with `path` None, only what `config` and `tokenizer` say (a model built in Python)."""
    if path is None:
        assert config is not None, "read_facts needs a directory or a config"
        return Facts(name or "model", config, num_params(config), tokenizer)
    if config is None:
        config = ModelConfig.load(check_card_dir(path) / CONFIG_FILE)
    if tokenizer is None and (path / "tokenizer.json").is_file():
        tokenizer = Tokenizer.load(path)
    facts = Facts(name or Path(path).resolve().name, config, num_params(config), tokenizer)
    if (path / TRAIN_CONFIG_FILE).is_file():
        facts.settings = read_run_file(path / TRAIN_CONFIG_FILE)
    facts.data = data_meta(facts.settings.get("data"))
    facts.last_train, facts.last_eval, facts.kept = last_rows(path / METRICS_FILE)
    facts.reports = [r for r in (optional_json(path / name) for name in REPORTS) if isinstance(r, dict)]
    facts.lora = optional_json(path / ADAPTER_CONFIG)
    facts.audit = read_audit(path)
    if (path / WEIGHTS_FILE).is_file():
        try:
            facts.source = read_weights_metadata(path / WEIGHTS_FILE).get("source")
        except ModelDirError:
            facts.source = None                      # a torn weights file: the card still says what else is known
    return facts


def optional_json(path: Path) -> Any:
    """A JSON file's content, None when the file is absent; a one-line error when it does not parse."""
    return read_json(path, "restore it, or delete it and run again what wrote it") if path.is_file() else None


def read_audit(path: Path) -> dict[str, Any]:
    """audit.json of the model directory `path` ({} when there is none), checked to be an object
    (`lmforge.audit.findings.read`, too)."""
    audit = optional_json(Path(path) / AUDIT_FILE)
    if audit is None:
        return {}
    if not isinstance(audit, dict):
        raise DataError(f"{Path(path) / AUDIT_FILE} holds a JSON {type(audit).__name__}, not an object of audits; "
                        f"delete it and run the audits again")
    return audit


def data_meta(data: Any) -> dict[str, Any] | None:
    """meta.json of the prepared data directory `data` (a path as the run was given it), or None
    when it is not a directory found from here (a table file, or data moved since)."""
    if not isinstance(data, str) or not (Path(data) / META_FILE).is_file():
        return None
    try:
        meta = read_json(Path(data) / META_FILE)
    except DataError:
        return None
    return meta if isinstance(meta, dict) else None


def last_rows(path: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """(the last "train" row, the last "eval" row, the "best" row of a run that kept its best
    evaluation's weights) of metrics.jsonl; torn lines are skipped. A "best" row counts only while
    no evaluation follows it (a run resumed past its end may have trained on)."""
    last: dict[str, dict[str, Any]] = {"train": {}, "eval": {}, "best": {}}
    if not path.is_file():
        return last["train"], last["eval"], last["best"]
    for line in path.read_bytes().decode("utf-8", "replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and row.get("kind") in last:
            last[row["kind"]] = row
            if row["kind"] == "eval":
                last["best"] = {}
    return last["train"], last["eval"], last["best"]


def hub_dataset(facts: Facts) -> str | None:
    """The Hugging Face Hub id of the training data, when it was read with `prepare --dataset NAME`
    and NAME is not a local path."""
    name = (facts.data or {}).get("dataset")
    if not isinstance(name, str) or Path(name).exists() or name.count("/") > 1:
        return None
    return name if all(part and part.replace("-", "").replace("_", "").replace(".", "").isalnum()
                       for part in name.split("/")) else None

