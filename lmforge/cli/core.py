"""The verb registry and `main`: what every verb shares.

A verb is a run function registered with `@verb`, its flags made by `@options_of` from the
dataclasses it builds. Every verb also takes `--config FILE.yaml` (its settings under the
flags' names; flags typed on the command line win) and `--print-config` (print the resolved
settings as YAML and stop). `--resume` reads the run's own `train_config.yaml` the same way.
Errors a user can fix (LmforgeError) print as one line without a traceback (exit code 2).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from typing import Callable

from ..errors import LmforgeError
from ..options import add_options, field_names
from ..tasks import TASK_OPTIONS
from ..train.config import TrainConfig

VERBS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {}

# the order of `lmforge --help`, across the modules that register the verbs
HELP_ORDER = ("quickstart", "prepare", "train", "runs", "finetune", "generate", "eval", "score", "merge-lora", "chat",
              "quantize", "distill", "classify", "translate", "summarize", "presets", "import", "export", "card",
              "embed", "attention", "inspect", "audit", "serve")


def verb(name: str, help: str):
    """Register `lmforge NAME` running the decorated function with the parsed namespace; its
    flags come from `@options_of(...)` (applied first, below `@verb`)."""
    def wrap(run):
        VERBS[name] = (help, getattr(run, "options", lambda parser: None), run)
        return run
    return wrap


def options_of(*classes, skip: tuple[str, ...] = (), defaults: dict | None = None,
               only: dict[type, tuple[str, ...]] | None = None):
    """Flags for every field of these dataclasses (`defaults` overrides their defaults; `only`
    limits a class to some of its fields); a field shared by two classes (e.g. a common base)
    becomes one flag."""
    def deco(run):
        run.options = lambda parser: add_flags(parser, classes, skip, defaults, only)
        return run
    return deco


def add_flags(parser: argparse.ArgumentParser, classes: tuple[type, ...], skip: tuple[str, ...] = (),
              defaults: dict | None = None, only: dict[type, tuple[str, ...]] | None = None) -> None:
    """The flags of `options_of` on `parser`: each class's fields, a field seen before added once."""
    seen = set(skip)
    for cls in classes:
        add_options(parser, cls, skip=tuple(seen), defaults=defaults, only=(only or {}).get(cls))
        seen |= field_names(cls)


def sub_commands(table: Callable[[], dict[str, tuple[str, tuple[type, ...], Callable]]], metavar: str = "SUB"):
    """A verb made of sub-commands (`lmforge audit memorization MODEL ...`): `table()` gives
    {name: (help, the option dataclasses of its flags, its run function)}; each sub-command has
    its own parser, flags, --config and --print-config, and runs instead of the verb's function."""
    def deco(run):
        def add(parser):
            subs = parser.add_subparsers(dest="sub_command", metavar=metavar, required=True)
            for name, (help, classes, sub_run) in table().items():
                sub = subs.add_parser(name, help=help, description=help)
                add_flags(sub, classes)
                finish_parser(sub, sub_run)
        run.options = add
        return run
    return deco


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lmforge", description="lmforge: tokenize, train, evaluate and "
                                     "generate with transformer language models.")
    from .. import __version__
    parser.add_argument("--version", action="version", version=f"lmforge {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    assert set(HELP_ORDER) == set(VERBS), f"HELP_ORDER and the registered verbs differ: {set(HELP_ORDER) ^ set(VERBS)}"
    for name in HELP_ORDER:
        help, add, run = VERBS[name]
        p = sub.add_parser(name, help=help, description=help)
        add(p)
        finish_parser(p, run)
    return parser


def finish_parser(p: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int]) -> None:
    """What every verb's parser has (a verb with sub-commands: each of them): --config, --print-config,
    and the run function and parser that `main` finds in the namespace."""
    p.add_argument("--config", metavar="FILE.yaml", help="read settings from this YAML file (the flags' names, "
                   "e.g. `batch_size: 16`); flags on the command line override it")
    p.add_argument("--print-config", action="store_true", help="print the resolved settings as YAML (a --config "
                   "file) and stop")
    p.set_defaults(_run=run, _parser=p)


def _settings(ns: argparse.Namespace) -> dict:
    """The resolved settings of a parsed verb, as a run file holds them (a training verb: only the
    chosen task's own options)."""
    from ..runfile import settable
    names = list(settable(ns._parser))
    task = getattr(ns, "task", None)
    if task is not None:
        others = set().union(*(field_names(c) for t, c in TASK_OPTIONS.items() if t != task))
        own = field_names(TASK_OPTIONS[task]) if task in TASK_OPTIONS else set()
        names = [n for n in names if n not in others or n in own or n in field_names(TrainConfig)]
    return {n: getattr(ns, n) for n in names}


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse twice when settings come from files: the run's own train_config.yaml (--resume), then
    --config; flags on the command line win over both."""
    from pathlib import Path

    from ..runfile import TRAIN_CONFIG_FILE, apply_run_file
    ns = parser.parse_args(argv)
    if not getattr(ns, "verb", None):
        return ns
    saved = Path(ns.out) / TRAIN_CONFIG_FILE if getattr(ns, "resume", False) and getattr(ns, "out", None) else None
    if saved is not None and saved.is_file():
        apply_run_file(ns._parser, saved, strict=False)
    if ns.config:
        apply_run_file(ns._parser, ns.config)
    if ns.config or saved is not None and saved.is_file():
        ns = parser.parse_args(argv)
    return ns


def out_of_memory(e: BaseException) -> str | None:
    """The one-line account of an allocation the machine could not make (None: `e` is another
    error). Torch says "can't allocate memory: you tried to allocate N bytes" on CPU and raises
    OutOfMemoryError on CUDA."""
    import re
    text = str(e)
    if not (isinstance(e, MemoryError) or "out of memory" in text.lower() or "can't allocate memory" in text):
        return None
    asked = re.search(r"allocate (\d+) bytes", text) or re.search(r"allocate ([\d.]+ [KMGT]iB)", text)
    size = "" if asked is None else f" ({int(asked.group(1)) / 2**30:,.1f} GiB asked for)" if asked.group(1).isdigit() \
        else f" ({asked.group(1)} asked for)"
    return f"out of memory{size}: the sizes given need more memory than this machine has; lower them " \
           f"(--batch-size, --context-length, --d-model, --n-layer, --eval-iters, --max-new-tokens, ...)"


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"lmforge: warning: {message}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        ns = _parse(parser, argv)
    except LmforgeError as e:
        name = next((a for a in (argv if argv is not None else sys.argv[1:]) if a in VERBS), "")
        print(f"lmforge {name}: error: {e}".replace("lmforge : ", "lmforge: "), file=sys.stderr)
        return 2
    if not getattr(ns, "verb", None):
        parser.print_help()
        return 1
    if ns.print_config:
        from ..runfile import dump_yaml
        print(dump_yaml(_settings(ns)), end="")
        return 0
    if os.environ.get("LMFORGE_KEEP_FREED_MEMORY", "1") != "0":
        from ..runtime import keep_freed_memory
        keep_freed_memory()                # fewer page faults per step; this process is ours
    previous = warnings.showwarning
    warnings.showwarning = _show_warning
    try:
        return ns._run(ns) or 0
    except LmforgeError as e:
        print(f"lmforge {ns.verb}: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:                   # a full disk, a read-only directory, a path through a file, ...
        if os.environ.get("LMFORGE_DEBUG"):
            raise
        from ..fileio import os_error_message
        print(f"lmforge {ns.verb}: error: {os_error_message(e, writing=True)}", file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as e:   # sizes the machine cannot hold (a width of 10**6, ...)
        if not out_of_memory(e) or os.environ.get("LMFORGE_DEBUG"):
            raise
        print(f"lmforge {ns.verb}: error: {out_of_memory(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:              # a second Ctrl-C, or one outside a training loop
        print(f"\nlmforge {ns.verb}: interrupted", file=sys.stderr)
        return 130
    finally:
        warnings.showwarning = previous
