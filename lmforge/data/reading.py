"""Stream documents out of text files, directories and .jsonl files.

Undecodable bytes are replaced with U+FFFD and counted (a warning names the files), or with
errors="strict" rejected with the file and byte offset. Nothing reads a whole file at once.
"""

from __future__ import annotations

import codecs
import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import DataError

TEXT_SUFFIXES = {".txt", ".text", ".md", ".rst", ".jsonl", ""}
BLOCK = 1 << 20  # bytes read at a time


@dataclass
class ReadStats:
    files: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes: int = 0
    replaced: dict[str, int] = field(default_factory=dict)  # file -> undecodable byte sequences replaced

    def warn_replaced(self) -> None:
        if self.replaced:
            total = sum(self.replaced.values())
            where = ", ".join(f"{f} ({n})" for f, n in list(self.replaced.items())[:3])
            warnings.warn(f"replaced {total} undecodable byte sequence(s) with U+FFFD in {where}; the files are "
                          f"not valid UTF-8 — convert them (e.g. iconv -f latin1 -t utf-8) or pass --errors strict "
                          f"to reject them", stacklevel=2)


def expand_inputs(inputs: list[str | Path], stats: ReadStats | None = None) -> list[Path]:
    """Files named directly, plus text files found (recursively, sorted) in directories."""
    if not inputs:
        raise DataError("no input given; pass text files, directories of them, or .jsonl files")
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if not p.exists():
            raise DataError(f"input {p} does not exist; check the path")
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if q.is_file() and not any(s.startswith(".") for s in q.parts))
            for q in found:
                if q.suffix.lower() in TEXT_SUFFIXES:
                    files.append(q)
                elif stats is not None:
                    stats.skipped.append(str(q))
            if not any(f.is_relative_to(p) for f in files):
                raise DataError(f"directory {p} has no text files ({', '.join(sorted(TEXT_SUFFIXES - {''}))}); "
                                f"point at the files directly")
        else:
            files.append(p)
    return files


def _decoded_blocks(path: Path, errors: str, stats: ReadStats) -> Iterator[str]:
    counted = {"n": 0}

    def count_and_replace(err: UnicodeDecodeError):
        counted["n"] += 1
        return "\ufffd", err.end

    handler = f"lmforge-count-{id(counted)}"
    codecs.register_error(handler, count_and_replace)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="strict" if errors == "strict" else handler)
    offset = 0
    with open(path, "rb") as f:
        while True:
            raw = f.read(BLOCK)
            final = not raw
            try:
                text = decoder.decode(raw, final=final)
            except UnicodeDecodeError as e:
                raise DataError(f"{path} is not valid UTF-8: undecodable byte 0x{raw[e.start]:02x} at byte offset "
                                f"{offset + e.start}; convert the file to UTF-8 or use --errors replace") from None
            offset += len(raw)
            stats.bytes += len(raw)
            if text:
                yield text
            if final:
                break
    if counted["n"]:
        stats.replaced[str(path)] = counted["n"]


def _lines(path: Path, errors: str, stats: ReadStats) -> Iterator[tuple[int, str]]:
    pending, lineno = "", 0
    for block in _decoded_blocks(path, errors, stats):
        pending += block
        *full, pending = pending.split("\n")
        for line in full:
            lineno += 1
            yield lineno, line
    if pending:
        yield lineno + 1, pending


def json_objects(lines: Iterable[tuple[int, str]], path: str | Path) -> Iterator[tuple[int, dict]]:
    """(line number, object) for each non-blank line of a JSON-lines file; a line that is not a
    JSON object is an error naming the file and line.

    >>> list(json_objects([(1, '{"text": "hi"}'), (2, ' ')], "a.jsonl"))
    [(1, {'text': 'hi'})]
    """
    for lineno, line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno} is not valid JSON ({e.msg} at column {e.colno}); fix or remove that "
                            f"line") from None
        if not isinstance(record, dict):
            raise DataError(f"{path}:{lineno} is a JSON {type(record).__name__}, not an object with named fields")
        yield lineno, record


def iter_documents(files: list[Path], text_field: str = "text", errors: str = "replace",
                   stats: ReadStats | None = None, chunk_chars: int = BLOCK) -> Iterator[tuple[str, bool]]:
    """Yield (text piece, ends_document). A text file is one document streamed in pieces of
    about `chunk_chars` (cut after a newline); each .jsonl line is one document."""
    stats = stats if stats is not None else ReadStats()
    if errors not in ("replace", "strict"):
        raise DataError(f"errors={errors!r}; use replace (swap undecodable bytes for U+FFFD, with a warning) "
                        f"or strict (reject the file)")
    for path in files:
        stats.files.append(str(path))
        if path.suffix.lower() == ".jsonl":
            for lineno, record in json_objects(_lines(path, errors, stats), path):
                if text_field not in record:
                    raise DataError(f"{path}:{lineno} has no {text_field!r} field (found: {sorted(record)}); "
                                    f"pass --text-field with the right name")
                yield str(record[text_field]), True
        else:
            buf: list[str] = []
            size = 0
            for block in _decoded_blocks(path, errors, stats):
                buf.append(block)
                size += len(block)
                if size >= chunk_chars:
                    joined = "".join(buf)
                    cut = joined.rfind("\n") + 1 or len(joined)
                    yield joined[:cut], False
                    buf, size = [joined[cut:]], len(joined) - cut
            yield "".join(buf), True
