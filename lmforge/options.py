"""One dataclass drives the Python API and the CLI flags.

Each field is declared with `option(default, "help text", ...)`; `add_options` turns the
fields of a dataclass into argparse flags (help text, choices, booleans as --x/--no-x) and
`from_args` builds the dataclass back from the parsed namespace. There is no second list
of options to keep in sync.

    >>> @dataclasses.dataclass
    ... class Demo:
    ...     steps: int = option(10, "how many steps")
    >>> p = argparse.ArgumentParser(); add_options(p, Demo)
    >>> from_args(Demo, p.parse_args(["--steps", "3"]))
    Demo(steps=3)
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import re
import types
import typing
from typing import Any, Callable

from .errors import ConfigError

Check = Callable[[Any], "str | None"]     # a value -> what is wrong with it (None: fine)


def option(default: Any, help: str, *, choices: list | tuple | None = None, flag: str | None = None,
           short: str | None = None, positional: bool = False, cli: bool = True, check: Check | None = None) -> Any:
    """A dataclass field with CLI metadata. Mutable defaults (lists) are copied per instance.
    `check(value)` says what is wrong with a value (None when fine); `validate` runs it."""
    meta = {"help": help, "choices": choices, "flag": flag, "short": short,
            "positional": positional, "cli": cli, "check": check}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(inner type, is_optional) for annotations like `int | None`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def add_options(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = (),
                defaults: dict[str, Any] | None = None) -> None:
    """Add one flag per field of dataclass `cls` (except `skip`) to `parser`."""
    hints = typing.get_type_hints(cls)
    defaults = defaults or {}
    for f in dataclasses.fields(cls):
        meta = f.metadata
        if f.name in skip or not meta.get("cli", True) or "help" not in meta:
            continue
        tp, optional = _base_type(hints[f.name])
        default = defaults.get(f.name, f.default if f.default is not dataclasses.MISSING else f.default_factory())
        help_text = meta["help"]
        if default not in (None, "", [], False) and tp is not bool:
            help_text += f" (default: {default})"
        kwargs: dict[str, Any] = {"help": help_text, "default": default, "dest": f.name}
        if meta.get("choices"):
            kwargs["choices"] = list(meta["choices"])
        if meta.get("positional"):
            kwargs.pop("dest")
            kwargs["metavar"] = f.name.upper()
            if typing.get_origin(tp) is list:
                kwargs["nargs"] = "+" if default is None else "*"
                kwargs["type"] = typing.get_args(tp)[0]
            else:
                kwargs["nargs"] = "?" if default not in (None, dataclasses.MISSING) else None
                kwargs["type"] = tp
                if kwargs["nargs"] is None:
                    kwargs.pop("nargs")
                    kwargs.pop("default")
            parser.add_argument(f.name, **kwargs)
            continue
        names = [meta.get("flag") or "--" + f.name.replace("_", "-")]
        if meta.get("short"):
            names.insert(0, meta["short"])
        if tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(tp) is list:
            kwargs["nargs"] = "+"
            kwargs["type"] = typing.get_args(tp)[0]
        else:
            kwargs["type"] = tp
            kwargs["metavar"] = f.name.upper() if not meta.get("choices") else None
            if kwargs["metavar"] is None:
                kwargs.pop("metavar")
        parser.add_argument(*names, **kwargs)


def from_args(cls: type, ns: argparse.Namespace, **extra: Any) -> Any:
    """Build dataclass `cls` from the parsed namespace (fields absent there keep defaults)."""
    values = {f.name: getattr(ns, f.name) for f in dataclasses.fields(cls) if hasattr(ns, f.name)}
    values.update(extra)
    return cls(**values)


# ---------------------------------------------------------------------------- validation
def at_least(low: float, note: str = "") -> Check:
    return lambda v: None if v is None or v >= low else f"must be at least {low}{note}"


def above(low: float, note: str = "") -> Check:
    return lambda v: None if v is None or v > low else f"must be greater than {low}{note}"


def between(low: float, high: float, *, low_open: bool = False, high_open: bool = False, note: str = "") -> Check:
    """low <= v <= high (strict on an open side)."""
    def check(v):
        if v is None:
            return None
        ok = (v > low if low_open else v >= low) and (v < high if high_open else v <= high)
        return None if ok else f"must be in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}{note}"
    return check


DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def device_name(v: str) -> str | None:
    return None if DEVICE_PATTERN.fullmatch(str(v)) else "is not a device; use auto, cpu, cuda, cuda:N or mps"


def validate(obj: Any, error: type[Exception] = ConfigError) -> None:
    """Check every field of dataclass `obj`: floats must be finite, values among `choices`, and
    each field's `check`. Raises `error` (ConfigError unless said) naming the field, the value and the rule. Called
    from `__post_init__`, so the Python API and the CLI (before any work) refuse alike."""
    for f in dataclasses.fields(obj):
        value, meta = getattr(obj, f.name), f.metadata
        problem = None
        if isinstance(value, float) and not math.isfinite(value):
            problem = "must be a finite number"
        elif meta.get("choices") and value is not None and value not in meta["choices"]:
            problem = f"is not one of {', '.join(map(str, meta['choices']))}"
        elif meta.get("check") is not None:
            problem = meta["check"](value)
        if problem:
            raise error(f"{f.name}={value!r} {problem}")
