"""Exceptions for mistakes a user can fix.

`assert` guards internal invariants; everything a user can get wrong (a path, a preset, a
corpus, a config that does not fit) raises `LmforgeError` with a message that names the
input and the fix. The CLI prints these without a traceback.
"""


class LmforgeError(ValueError):
    """A user-facing error: the message names the bad input and how to fix it."""


class ModelDirError(LmforgeError):
    """A model directory is missing, incomplete or corrupted."""


class DataError(LmforgeError):
    """A corpus or dataset cannot be used as given."""


class ConfigError(LmforgeError):
    """A model or training configuration is invalid or does not fit."""
