"""Stream documents out of the files `lmforge prepare` reads: text files, directories of them,
and tables (.jsonl, .csv, .tsv, .parquet, .arrow, and directories written by `datasets`'
`save_to_disk`), from which the `text_field` of each row is one document.

Undecodable bytes (of text files, .jsonl, .csv and .tsv) are replaced with U+FFFD and counted (a
warning names the files), or with errors="strict" rejected with the file and byte offset. Nothing
reads a whole file at once: text in blocks of BLOCK bytes, Parquet and Arrow a record batch at a time.
"""

from __future__ import annotations

import codecs
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..errors import DataError
from .columnar import ColumnarTable, is_saved_dataset
from .rows import TABLE_FORMATS, csv_records, json_objects, table_format

TEXT_SUFFIXES = {".txt", ".text", ".md", ".rst", ".jsonl", ""}
READ_SUFFIXES = TEXT_SUFFIXES | set(TABLE_FORMATS)           # what a directory's files are read for
BLOCK = 1 << 20  # bytes read at a time


@dataclass
class ReadStats:
    files: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes: int = 0        # of the files read; of Parquet / Arrow / `datasets` inputs, the UTF-8 bytes of their texts
    replaced: dict[str, int] = field(default_factory=dict)  # file -> undecodable byte sequences replaced

    def warn_replaced(self) -> None:
        if self.replaced:
            total = sum(self.replaced.values())
            where = ", ".join(f"{f} ({n})" for f, n in list(self.replaced.items())[:3])
            warnings.warn(f"replaced {total} undecodable byte sequence(s) with U+FFFD in {where}; the files are "
                          f"not valid UTF-8 — convert them (e.g. iconv -f latin1 -t utf-8) or pass --errors strict "
                          f"to reject them", stacklevel=2)


def expand_inputs(inputs: list[str | Path], stats: ReadStats | None = None) -> list[Path]:
    """Files named directly and `save_to_disk` directories, plus the files of the formats read
    here found in other directories (see `_directory_inputs`)."""
    if not inputs:
        raise DataError("no input given; pass text files, directories of them, tables (.jsonl, .csv, .tsv, "
                        ".parquet, .arrow) or --dataset NAME")
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if not p.exists():
            raise DataError(f"input {p} does not exist; check the path")
        if p.is_dir() and not is_saved_dataset(p):
            for q in _directory_inputs(p):
                if q.is_dir() or q.suffix.lower() in READ_SUFFIXES:
                    files.append(q)
                elif stats is not None:
                    stats.skipped.append(str(q))
            if not any(f.is_relative_to(p) for f in files):
                formats = ", ".join(sorted(READ_SUFFIXES - {""}))
                raise DataError(f"directory {p} has no text files or tables ({formats}); point at the files directly")
        else:
            files.append(p)
    return files


def _directory_inputs(root: Path) -> Iterator[Path]:
    """The files below `root`, depth first in sorted order (the order of sorted(root.rglob("*"))),
    hidden ones and symbolic links to directories left out; a `save_to_disk` directory inside
    is one input (its --split is read, not every split's files)."""
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_dir() and not entry.is_symlink():
            yield from [entry] if is_saved_dataset(entry) else _directory_inputs(entry)
        elif entry.is_file():
            yield entry


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


def _lines(path: Path, errors: str, stats: ReadStats, end: str = "") -> Iterator[tuple[int, str]]:
    """(line number, line) of a decoded file; `end="\\n"` keeps the line endings (CSV needs them)."""
    pending, lineno = "", 0
    for block in _decoded_blocks(path, errors, stats):
        pending += block
        *full, pending = pending.split("\n")
        for line in full:
            lineno += 1
            yield lineno, line + end
    if pending:
        yield lineno + 1, pending


def iter_documents(files: list[Path], text_field: str = "text", errors: str = "replace",
                   stats: ReadStats | None = None, chunk_chars: int = BLOCK, split: str = "train"
                   ) -> Iterator[tuple[str, bool]]:
    """Yield (text piece, ends_document). A text file is one document streamed in pieces of
    about `chunk_chars` (cut after a newline); each row of a table is one document, its
    `text_field` (a saved DatasetDict's `split`)."""
    stats = stats if stats is not None else ReadStats()
    if errors not in ("replace", "strict"):
        raise DataError(f"errors={errors!r}; use replace (swap undecodable bytes for U+FFFD, with a warning) "
                        f"or strict (reject the file)")
    for path in files:
        stats.files.append(str(path))
        fmt = table_format(path)
        if fmt is None:
            yield from _text_pieces(path, errors, stats, chunk_chars)
        else:
            for text in _table_texts(path, fmt, text_field, errors, stats, split):
                yield text, True


def _text_pieces(path: Path, errors: str, stats: ReadStats, chunk_chars: int) -> Iterator[tuple[str, bool]]:
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


def _table_texts(path: Path, fmt: str, text_field: str, errors: str, stats: ReadStats, split: str
                 ) -> Iterator[str]:
    """The `text_field` of each row of a table (null values left out)."""
    if fmt == "jsonl":
        for lineno, record in json_objects(_lines(path, errors, stats), path):
            if text_field not in record:
                raise DataError(f"{path}:{lineno} has no {text_field!r} field (found: {sorted(record)}); "
                                f"pass --text-field with the right name")
            yield str(record[text_field])
    elif fmt in ("csv", "tsv"):
        columns, records = csv_records((line for _, line in _lines(path, errors, stats, end="\n")), path, fmt)
        check_text_column(path, text_field, columns)
        for lineno, record in records:
            if record is None:
                raise DataError(f"{path}:{lineno} has more fields than the header names ({len(columns)}); "
                                f"{'a tab inside a TSV field splits it' if fmt == 'tsv' else 'fix its quoting'}")
            yield record.get(text_field, "")
    else:
        table = ColumnarTable(path, split)
        check_text_column(path, text_field, table.columns)
        for batch in table.batches([text_field]):
            for value in batch[text_field]:
                if value is not None:
                    text = str(value)
                    stats.bytes += len(text.encode("utf-8"))
                    yield text


def check_text_column(source: str | Path, text_field: str, columns: list[str]) -> None:
    if text_field not in columns:
        raise DataError(f"{source} has no column {text_field!r} (columns found: {', '.join(columns) or 'none'}); "
                        f"pass --text-field with one of them")
