"""The verb that audits a model and its data: `lmforge audit SUB`, one sub-command per audit of
`lmforge.audit` — memorization, canaries, membership and bias on a model directory (each records
its findings in MODEL/audit.json and refreshes the model card), overlap on a prepared data
directory — each printing a table, or JSON with --json."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import LmforgeError
from ..modeldir import AUDIT_FILE
from ..options import device_name, from_args, option, validate
from .core import sub_commands, verb


@dataclass
class AuditCommandConfig:
    model_dir: str = option(None, "model directory", positional=True)
    json: bool = option(False, "print the findings as JSON instead of a table")
    device: str = option("auto", "auto, cpu or cuda", check=device_name)

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class OverlapCommandConfig:
    data: str = option(None, "prepared data directory whose training shard to search", positional=True)
    json: bool = option(False, "print the contaminated examples as JSON instead of a table")


def _show(result, as_json: bool, recorded: Path | None) -> int:
    if as_json:
        print(json.dumps({"summary": result.summary, **result.to_dict()}, ensure_ascii=False))
    else:
        print(result.table())
    if recorded is not None and (recorded / AUDIT_FILE).is_file():
        from ..card import CARD_FILE, has_markers
        readme = recorded / CARD_FILE
        card = f" and the model card, {CARD_FILE}" if readme.is_file() and has_markers(
            readme.read_text(encoding="utf-8", errors="replace")) else ""
        print(f"recorded in {recorded / AUDIT_FILE}{card}", file=sys.stderr)
    return 0


def _model_audit(name: str) -> Callable:
    """The run function of a model audit: its options from the flags, its result shown."""
    def run(ns) -> int:
        from .. import audit
        args = from_args(AuditCommandConfig, ns)
        cfg = from_args(_config_of(name), ns)
        result = getattr(audit, name)(args.model_dir, cfg, device=args.device)
        model_dir = Path(args.model_dir)
        return _show(result, args.json, model_dir if model_dir.is_dir() else None)
    return run


def _overlap(ns) -> int:
    from ..audit import OverlapConfig, overlap
    args = from_args(OverlapCommandConfig, ns)
    return _show(overlap(args.data, from_args(OverlapConfig, ns)), args.json, None)


def _config_of(name: str) -> type:
    from .. import audit
    return {"memorization": audit.MemorizationConfig, "canaries": audit.CanariesConfig,
            "membership": audit.MembershipConfig, "bias": audit.BiasConfig}[name]


def _audits() -> dict[str, tuple[str, tuple[type, ...], Callable]]:
    from ..audit import OverlapConfig
    helps = {
        "memorization": "k-extractability: the share of training windows whose greedy continuation of k tokens "
                        "reproduces the next m, against held-out windows (needs --data)",
        "canaries": "exposure of the canaries `prepare --canaries` planted, and whether greedy decoding "
                    "extracts them (needs --data)",
        "membership": "loss-based membership inference: ROC AUC of training against held-out windows (needs --data)",
        "bias": "the share of sentence pairs whose more stereotypical sentence the model prefers, with a bootstrap "
                "CI, per category (needs --pairs)",
    }
    table = {name: (help, (AuditCommandConfig, _config_of(name)), _model_audit(name)) for name, help in helps.items()}
    table["overlap"] = ("n-gram contamination of an evaluation file (--against) by a prepared data directory's "
                        "training shard, per example", (OverlapCommandConfig, OverlapConfig), _overlap)
    return table


@verb("audit", "audit a model and its data: memorization, canaries, membership, bias, overlap "
               "(`lmforge audit SUB -h`); a model's findings go to MODEL/audit.json and its model card")
@sub_commands(_audits)
def _audit(ns):                     # argparse requires a sub-command, whose own run function runs instead
    raise LmforgeError("name an audit: lmforge audit memorization|canaries|membership|bias|overlap ...")
