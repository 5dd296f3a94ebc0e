"""One dataclass drives the Python API, the CLI flags and the YAML run file.

Each field is declared with `option(default, "help text", ...)`; `add_options` turns the
fields of a dataclass into argparse flags (help text, choices, booleans as --x/--no-x) and
`from_args` builds the dataclass back from the parsed namespace. A field declared with
`nested(OtherConfig)` holds a whole dataclass: its fields become flags of their own (flat, as
if declared in place), so a config that contains another never repeats its fields. A run
file (`--config FILE.yaml`) uses the flags' names; `flat_settings` writes one back. There is
no second list of options to keep in sync.

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
import functools
import math
import re
import types
import typing
from typing import Any, Callable

from .errors import OptionError

Check = Callable[[Any], "str | None"]     # a value -> what is wrong with it (None: fine)


def option(default: Any, help: str, *, choices: list | tuple | None = None, flag: str | None = None,
           short: str | None = None, positional: bool = False, cli: bool = True, aliases: tuple[str, ...] = (),
           fixed: bool = False, saved: bool = True, check: Check | None = None, unset: str | None = None) -> Any:
    """A dataclass field with CLI metadata. Mutable defaults (lists) are copied per instance.
    `aliases`: further flag spellings (an old name kept working). `fixed`: a training setting that
    a resumed run must keep (the checkpoint was trained with it). `saved=False`: a control of one
    invocation (--resume), left out of the settings a run file keeps. `check(value)` says what is
    wrong with a value (None when fine); `validate` runs it. `unset`: what a default of None means,
    for the help ("the task's: 1e-3")."""
    meta = {"help": help, "choices": choices, "flag": flag, "short": short,
            "positional": positional, "cli": cli, "aliases": aliases, "fixed": fixed,
            "saved": saved, "check": check, "unset": unset}
    if isinstance(default, (list, dict)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def nested(cls: type, defaults: dict[str, Any] | None = None, skip: tuple[str, ...] = ()) -> Any:
    """A field holding a whole `cls`, its defaults changed by `defaults` (flat names, nested ones
    included); on the command line its fields are flags of the outer config, except `skip`."""
    defaults = dict(defaults or {})
    return dataclasses.field(default_factory=lambda: build_flat(cls, defaults),
                             metadata={"nested": cls, "defaults": defaults, "skip": skip})


def field_names(cls: type) -> set[str]:
    """Every field name of `cls`, nested configs' included."""
    names: set[str] = set()
    for f in dataclasses.fields(cls):
        names |= field_names(f.metadata["nested"]) if "nested" in f.metadata else {f.name}
    return names


def build_flat(cls: type, values: dict[str, Any]) -> Any:
    """`cls` from flat {name: value}: each nested config gets the values of its own fields."""
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if "nested" in f.metadata:
            inner = f.metadata["nested"]
            own = field_names(inner)
            kwargs[f.name] = build_flat(inner, {**f.metadata["defaults"],
                                                **{k: v for k, v in values.items() if k in own}})
        elif f.name in values:
            kwargs[f.name] = values[f.name]
    return cls(**kwargs)


def _is_nested(f: dataclasses.Field) -> bool:
    return "nested" in f.metadata


def cli_fields(cls: type, skip: tuple[str, ...] = ()) -> dict[str, tuple[dataclasses.Field, Any]]:
    """{name: (field, default)} of every flag `cls` gives the command line, nested configs
    flattened (with their changed defaults), positionals included."""
    out: dict[str, tuple[dataclasses.Field, Any]] = {}
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        if _is_nested(f):
            inner = cli_fields(f.metadata["nested"], skip + tuple(f.metadata["skip"]))
            for name, (g, default) in inner.items():
                out[name] = (g, f.metadata["defaults"].get(name, default))
            continue
        if not f.metadata.get("cli", True) or "help" not in f.metadata:
            continue
        out[f.name] = (f, f.default if f.default is not dataclasses.MISSING else f.default_factory())
    return out


def flat_settings(obj: Any) -> dict[str, Any]:
    """The flag-named values of a config, nested ones flattened: what a run file holds."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if _is_nested(f):
            out.update(flat_settings(value))
        elif f.metadata.get("cli", True) and f.metadata.get("saved", True) and "help" in f.metadata \
                and not f.metadata.get("positional"):
            out[f.name] = list(value) if isinstance(value, (list, tuple)) else value
    return out


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(inner type, is_optional) for annotations like `int | None`."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0], True
    return tp, False


def _hints(cls: type) -> dict[str, Any]:
    hints: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if _is_nested(f):
            hints.update(_hints(f.metadata["nested"]))
    hints.update(typing.get_type_hints(cls))
    return hints


def add_options(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = (),
                defaults: dict[str, Any] | None = None, only: tuple[str, ...] | None = None) -> None:
    """Add one flag per field of dataclass `cls` (nested configs flattened; except `skip`; only the
    fields in `only` when given) to `parser`."""
    hints = _hints(cls)
    defaults = defaults or {}
    for name, (f, field_default) in cli_fields(cls, skip).items():
        if only is not None and name not in only:
            continue
        meta = f.metadata
        tp, optional = _base_type(hints[f.name])
        default = defaults.get(f.name, field_default)
        help_text = meta["help"]
        if default not in (None, "", [], False) and tp is not bool:
            help_text += f" (default: {default})"
        elif default is None and meta.get("unset"):
            help_text += f" (default: {meta['unset']})"
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
        names = [meta.get("flag") or "--" + f.name.replace("_", "-"), *meta.get("aliases", ())]
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
    """Build dataclass `cls` from the parsed namespace (fields absent there keep defaults;
    nested configs are built from their own flags)."""
    values = {name: getattr(ns, name) for name in field_names(cls) if hasattr(ns, name)}
    values.update(extra)
    return build_flat(cls, values)


# ---------------------------------------------------------------------------- validation
# What the code can hold: every integer option ends up in Python loops, torch tensors (int64) or a
# torch seed, so one outside 64 bits is refused whatever its own check says (a seed may use the
# unsigned range, as torch's generators do: its check says so by naming that upper bound).
INT64_MIN, INT64_MAX, UINT64_MAX = -(1 << 63), (1 << 63) - 1, (1 << 64) - 1


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


def bounds(low: float | None = None, high: float | None = None, *, low_open: bool = False) -> Check:
    """low <= v <= high (low < v when `low_open`), either side optional, said the way OpenAI's
    and vLLM's servers say it: "must be >= 0.0 and <= 2.0" (the numbers as written here). The
    check keeps `low` and `high`, so tests and the server can generate values at the edges."""
    def check(v):
        if v is None:
            return None
        if (low is None or (v > low if low_open else v >= low)) and (high is None or v <= high):
            return None
        parts = ([f"{'>' if low_open else '>='} {low}"] if low is not None else []) + \
                ([f"<= {high}"] if high is not None else [])
        return "must be " + " and ".join(parts)
    check.low, check.high, check.low_open = low, high, low_open
    return check


def every(*checks: Check) -> Check:
    """The first problem any of `checks` finds (a value must pass them all); its `low` and `high`
    are the narrowest of theirs."""
    def check(v):
        return next((p for p in (c(v) for c in checks) if p), None)
    lows = [c.low for c in checks if getattr(c, "low", None) is not None]
    highs = [c.high for c in checks if getattr(c, "high", None) is not None]
    check.low, check.high = max(lows, default=None), min(highs, default=None)
    check.low_open = any(c.low_open for c in checks if getattr(c, "low", None) == check.low)
    return check


SEED = bounds(0, UINT64_MAX)       # what torch.Generator.manual_seed takes, without its negative aliases


_TYPE_PROBLEMS = {bool: "must be true or false", int: "must be an integer", float: "must be a number"}


def type_problem(value: Any, tp: Any) -> str | None:
    """What is wrong with `value` for a field annotated `tp`, for booleans and numbers (None when
    fine or not one of those): a bool is no integer, an integer is a number."""
    tp, optional = _base_type(tp)
    if tp not in _TYPE_PROBLEMS or (value is None and optional):
        return None
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    return None if ok else _TYPE_PROBLEMS[tp]


def _not_finite(value: Any) -> str | None:
    """Checked before a field's own check: NaN passes every comparison a range check makes."""
    return "must be a finite number" if isinstance(value, float) and not math.isfinite(value) else None


def _outside_64_bits(value: Any, check: Check | None) -> str | None:
    """Checked after a field's own check (whose words are the better ones when it objects): an
    integer the code cannot hold, whatever the check allows; a check whose own `high` is larger
    (a seed's) widens the top."""
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    top = max(INT64_MAX, getattr(check, "high", None) or INT64_MAX)
    return f"must be <= {top}" if value > top else f"must be >= {INT64_MIN}" if value < INT64_MIN else None


def value_problem(value: Any, tp: Any, check: Check | None = None, choices=None) -> str | None:
    """What is wrong with `value` for an option annotated `tp` (None when fine), in this order: its
    type (for booleans and numbers), a float that is not finite, a value outside `choices`, its
    `check`, an integer outside 64 bits. The options (`problem_of`) and the server's other request
    fields use it, so a number is refused alike wherever it is given."""
    problem = type_problem(value, tp) or _not_finite(value)
    if problem is None and choices and value is not None and value not in choices:
        problem = f"is not one of {', '.join(map(str, choices))}"
    if problem is None and check is not None:
        problem = check(value)
    return problem or _outside_64_bits(value, check)


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except NameError:                  # an annotation named only for type checkers: no type checks
        return {}


def problem_of(f: dataclasses.Field, value: Any, tp: Any) -> str | None:
    """What is wrong with `value` for field `f` (annotated `tp`), None when fine (`value_problem`)."""
    return value_problem(value, tp, f.metadata.get("check"), f.metadata.get("choices"))


def validate(obj: Any, error: type[Exception] = OptionError) -> None:
    """Check every field of dataclass `obj` (`problem_of`). Raises `error` — `OptionError` (a
    ConfigError) unless said — naming the field, the value and the rule: "top_k=-3 must be >= -1".
    Called from `__post_init__`, so the Python API, the CLI (before any work) and the server
    refuse alike."""
    types_ = _field_types(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        problem = problem_of(f, value, types_.get(f.name))
        if problem:
            raise OptionError(f.name, value, problem) if error is OptionError else \
                error(f"{f.name}={value!r} {problem}")
