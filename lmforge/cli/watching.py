"""The verb that watches training runs: runs (a page of their curves, samples and settings)."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import between, from_args, option, validate
from .core import options_of, verb


@dataclass
class RunsCommandConfig:
    dir: str = option("runs", "the folder of the runs to show (every directory under it with a metrics.jsonl or "
                              "train_config.yaml, at any depth)", positional=True)
    host: str = option("127.0.0.1", "address to bind (127.0.0.1: this machine only)")
    port: int = option(8100, "port to listen on", check=between(1, 65535))

    def __post_init__(self) -> None:
        validate(self)


@verb("runs", "a page of the training runs in a folder: settings, curves and samples, updated while they train, "
              "two or more overlaid")
@options_of(RunsCommandConfig)
def _runs(ns):
    from ..runs import serve_runs
    args = from_args(RunsCommandConfig, ns)
    serve_runs(args.dir, host=args.host, port=args.port)
    return 0
