"""Reading files the user gave us: one helper, one kind of error.

Every text or JSON file lmforge reads on a user's behalf goes through `read_text` /
`read_json` / `open_text`, which turn the operating system's and the decoder's exceptions
(`OSError`, `UnicodeDecodeError`, a JSON syntax error) into one `LmforgeError` line that
names the file and the fix. `os_error_message` words any other `OSError` (a full disk, a
read-only directory, a path through a file) the same way; the CLI uses it as a backstop.

    >>> read_text("/nonexistent/notes.txt")
    Traceback (most recent call last):
    ...
    lmforge.errors.DataError: /nonexistent/notes.txt does not exist; check the path
"""

from __future__ import annotations

import errno
import io
import json
from pathlib import Path
from typing import Any, TextIO

from .errors import DataError, LmforgeError

UTF8_FIX = "convert it to UTF-8 (e.g. `iconv -f latin1 -t utf-8 FILE > FILE.utf8`)"


def os_error_message(e: OSError, path: str | Path | None = None, writing: bool = False) -> str:
    """One line for an OSError: what failed, on which path, and what to do."""
    where = path if path is not None else (e.filename or "a file")
    code = e.errno
    if code == errno.ENOENT:
        return f"{where} does not exist; check the path"
    if code == errno.ENOTDIR:
        return f"{where}: a part of this path is a file, not a directory; choose another path"
    if code == errno.EISDIR:
        return f"{where} is a directory, not a file; give a file"
    if code in (errno.EACCES, errno.EPERM):
        return (f"permission denied {'writing' if writing else 'on'} {where}; "
                f"{'choose a directory you can write to' if writing else 'check its permissions'}")
    if code == errno.EROFS:
        return f"{where} is on a read-only file system; choose a writable location"
    if code is None and "written" in str(e):          # numpy's tofile on a short write (a full disk)
        return (f"writing a file failed ({e}): no space left on the disk? Free some space and run again — a "
                f"training run continues from its last checkpoint with --resume")
    if code in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return (f"no space left writing {where} ({e.strerror}); free some space and run again — a training run "
                f"continues from its last checkpoint with --resume")
    if code == errno.EEXIST:
        return f"{where} already exists; choose another path"
    if code == errno.ENAMETOOLONG:
        return f"{where}: the file name is too long; choose a shorter path"
    return f"{where}: {e.strerror or e}"


def _decode_error(path: Path, e: UnicodeDecodeError) -> DataError:
    return DataError(f"{path} is not valid UTF-8 text (undecodable byte 0x{e.object[e.start]:02x} at byte offset "
                     f"{e.start}); {UTF8_FIX}")


def read_bytes(path: str | Path) -> bytes:
    path = Path(path)
    try:
        return path.read_bytes()
    except OSError as e:
        raise DataError(os_error_message(e, path)) from None


def read_text(path: str | Path, encoding: str = "utf-8") -> str:
    """The text of `path` (strict UTF-8; a BOM is kept as written), or a one-line DataError."""
    path = Path(path)
    data = read_bytes(path)
    try:
        return data.decode(encoding)
    except UnicodeDecodeError as e:
        raise _decode_error(path, e) from None


def read_json(path: str | Path, fix: str = "restore it or re-create it", error: type[LmforgeError] = DataError) -> Any:
    """The parsed JSON content of `path`, or a one-line `error` naming the file and `fix`."""
    path = Path(path)
    try:
        text = read_text(path)
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(f"{path} is not valid JSON ({e.msg} at line {e.lineno}); {fix}") from None
    except DataError as e:
        raise error(str(e)) from None


class _CheckedText(io.TextIOWrapper):
    """A text file whose decode errors name the file (UnicodeDecodeError -> DataError)."""

    def _checked(self, fn, *args):
        try:
            return fn(*args)
        except UnicodeDecodeError as e:
            raise DataError(f"{self.buffer.name} is not valid UTF-8 text ({e.reason} near byte "
                            f"{e.start}); {UTF8_FIX}") from None

    def read(self, *args):
        return self._checked(super().read, *args)

    def readline(self, *args):
        return self._checked(super().readline, *args)

    def __next__(self):
        return self._checked(super().__next__)


def open_text(path: str | Path, encoding: str = "utf-8", newline: str | None = None) -> TextIO:
    """Open `path` for reading text; opening and decoding errors become one-line DataErrors."""
    path = Path(path)
    try:
        raw = open(path, "rb")
    except OSError as e:
        raise DataError(os_error_message(e, path)) from None
    return _CheckedText(raw, encoding=encoding, newline=newline)


def read_stdin_line(stream: TextIO) -> str:
    """One line of `stream` (stdin), with undecodable input as a one-line DataError."""
    try:
        line = stream.readline()
        line.encode("utf-8")               # a C locale decodes stdin with surrogateescape: bad bytes show here
        return line
    except (UnicodeDecodeError, UnicodeEncodeError) as e:
        raise DataError(f"the input on stdin is not valid UTF-8 text ({e.reason}); send UTF-8 text") from None
