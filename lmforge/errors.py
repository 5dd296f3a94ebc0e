"""Exceptions for mistakes a user can fix.

`assert` guards internal invariants; everything a user can get wrong (a path, a preset, a
corpus, a config that does not fit) raises `LmforgeError` with a message that names the
input and the fix. The CLI prints these without a traceback.
"""

import reprlib

_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother, _SHORT.maxlong = 3, 80, 80, 80
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = 8


def shown(value) -> str:
    """`repr(value)` as an error message shows it: whole when short, cut (with ...) when long or
    deep, so a 2 MB list in a request cannot make a 2 MB message."""
    return _SHORT.repr(value)


class LmforgeError(ValueError):
    """A user-facing error: the message names the bad input and how to fix it."""


class ModelDirError(LmforgeError):
    """A model directory is missing, incomplete or corrupted."""


class DataError(LmforgeError):
    """A corpus or dataset cannot be used as given."""


class ConfigError(LmforgeError):
    """A model or training configuration is invalid or does not fit."""


class OptionError(ConfigError):
    """One option holds a value its check refuses: `field`, the `value` given and the `problem`
    ("must be >= 1"). The message reads "field=value problem"; a surface that names the field
    otherwise (the server: OpenAI's names) builds its own from the three parts."""

    def __init__(self, field: str, value, problem: str):
        super().__init__(f"{field}={shown(value)} {problem}")
        self.field, self.value, self.problem = field, value, problem
