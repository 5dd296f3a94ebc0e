"""Run files: a verb's settings as YAML, under the names of its flags.

`lmforge VERB --config FILE.yaml` reads one (flags typed on the command line win over it);
`lmforge train` saves the full resolved settings of a run as `train_config.yaml` in the model
directory, and `--resume` reads them back. Keys are checked against the verb's flags: an
unknown key is an error that names the nearest valid one.

    >>> nearest("batchsize", ["batch_size", "max_steps"])
    'batch_size'
"""

from __future__ import annotations

import argparse
import difflib
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .modeldir import atomic_write_text

TRAIN_CONFIG_FILE = "train_config.yaml"


def nearest(key: str, known: list[str]) -> str | None:
    """The known name closest to a mistyped `key` (None when nothing is close)."""
    hits = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return hits[0] if hits else None


def read_run_file(path: str | Path) -> dict[str, Any]:
    """{setting: value} of a YAML run file; keys may be spelled like flags (`batch-size`) or
    fields (`batch_size`)."""
    import yaml
    path = Path(path)
    try:
        values = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"run file {path} does not exist; give the path of a YAML file "
                          f"(`lmforge train ... --print-config > {path.name}` writes one)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read run file {path} ({e}); check the path and that it is UTF-8 text") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"run file {path} is not valid YAML ({str(e).splitlines()[0]}); fix its syntax") from None
    if values is None:
        return {}
    if not isinstance(values, dict) or not all(isinstance(k, str) for k in values):
        raise ConfigError(f"run file {path} must be a mapping of settings (e.g. `batch_size: 16`), not "
                          f"{type(values).__name__}")
    return {k.lstrip("-").replace("-", "_"): v for k, v in values.items()}


def check_keys(values: dict[str, Any], known: list[str], source: str) -> None:
    """Refuse keys that are not settings of this verb, naming the nearest valid one."""
    for key in values:
        if key not in known:
            hint = nearest(key, known)
            raise ConfigError(f"{source}: unknown setting {key!r}" + (f"; did you mean {hint!r}?" if hint else
                              "; the settings are the verb's flags (see `lmforge VERB --help`)"))


def dump_yaml(values: dict[str, Any]) -> str:
    import yaml
    return yaml.safe_dump(values, sort_keys=False, allow_unicode=True, default_flow_style=False)


def write_run_file(path: str | Path, values: dict[str, Any]) -> None:
    atomic_write_text(Path(path), dump_yaml(values))


RUN_FILE_FLAGS = ("help", "config", "print_config")     # flags a run file cannot set


def settable(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """dest -> action of the flags a run file may set (not positionals, --help, --config)."""
    return {a.dest: a for a in parser._actions if a.option_strings and a.dest not in RUN_FILE_FLAGS}


def _checked_value(action: argparse.Action, value, source: str, key: str):
    """A run file's value for a flag, checked against the flag's kind (argparse converts strings)."""
    def bad(what: str):
        return ConfigError(f"{source}: {key} must be {what}, not {value!r}")
    if value is None:
        return value
    if isinstance(value, str) and action.type not in (None, str):
        return value                                     # argparse converts (and checks) a string default
    if isinstance(action, argparse.BooleanOptionalAction):
        if not isinstance(value, bool):
            raise bad("true or false")
        return value
    if action.nargs in ("+", "*"):
        items = value if isinstance(value, list) else [value]
        return [_checked_value(argparse.Action([], key, type=action.type), v, source, key) for v in items]
    if isinstance(value, (list, dict)):
        raise bad("a single value")
    if action.type is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise bad("an integer")
    if action.type is float and (isinstance(value, bool) or not isinstance(value, (int, float))):
        raise bad("a number")
    if action.type is float:
        value = float(value)
    if action.type is str:
        value = str(value)
    if action.choices is not None and value not in action.choices:
        raise bad("one of " + ", ".join(map(str, action.choices)))
    return value


def apply_run_file(parser: argparse.ArgumentParser, path, strict: bool = True) -> None:
    """Make the settings of a YAML run file the defaults of `parser`'s flags. `strict`: an unknown
    key is an error (a user's --config); else it is skipped (a run's saved train_config.yaml, read
    by a verb with fewer flags)."""
    values, actions = read_run_file(path), settable(parser)
    positional = [k for k in values if k in {a.dest for a in parser._actions if not a.option_strings}]
    if positional and strict:
        raise ConfigError(f"{path}: {positional[0]} is an argument of the command line, not a setting; give it "
                           f"there and drop it from the file")
    if strict:
        check_keys(values, sorted(actions), str(path))
    parser.set_defaults(**{k: _checked_value(actions[k], v, str(path), k) for k, v in values.items() if k in actions})
