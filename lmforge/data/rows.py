"""Rows of a table, whatever its format: which format a file is (by its suffix, or a directory
written by `datasets`' `save_to_disk`), JSON-lines objects and CSV / TSV rows.

The parsers take an iterable of lines, so the same code reads a file opened whole (the tables
of `classify` and `seq2seq`) and a file decoded piece by piece with an undecodable-bytes policy
(`lmforge prepare`). Parquet and Arrow rows come from `columnar.py`.

TSV follows the IANA format: the first line names the columns, fields are separated by tabs
and never quoted (a `"` is an ordinary character). CSV uses standard quoting.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import DataError
from .columnar import is_saved_dataset

TABLE_FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".parquet": "parquet",
                 ".arrow": "arrow"}
COLUMNAR = ("parquet", "arrow", "saved")     # read with pyarrow, by record batches


def table_format(path: Path) -> str | None:
    """csv, tsv, jsonl, parquet, arrow, saved (a `save_to_disk` directory), or None (not a table).

    >>> table_format(Path("reviews.TSV")), table_format(Path("notes.txt"))
    ('tsv', None)
    """
    if is_saved_dataset(path):
        return "saved"
    return TABLE_FORMATS.get(path.suffix.lower()) if not path.is_dir() else None


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


def csv_records(lines: Iterable[str], path: Path, fmt: str
                ) -> tuple[list[str], Iterator[tuple[int, dict[str, str] | None]]]:
    """(columns, iterator of (line number, row dict or None for a row with more fields than the
    header)) of CSV or TSV text given as lines that keep their line endings; blank rows are left out.

    >>> columns, rows = csv_records(['text,label\\n', '"a, b",1\\n', '\\n', 'c\\n'], Path("t.csv"), "csv")
    >>> columns, list(rows)
    (['text', 'label'], [(2, {'text': 'a, b', 'label': '1'}), (4, {'text': 'c'})])
    """
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    reader = csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE) if fmt == "tsv" else csv.reader(lines)
    try:
        header = next(reader, None)
    except csv.Error as e:
        raise DataError(f"{path}: cannot read the header ({e})") from None
    if header is None:
        raise DataError(f"{path} is empty; it needs a header line naming the columns, then rows")
    header = [h.strip() for h in header]
    if header:
        header[0] = header[0].removeprefix("\ufeff").strip()     # a byte-order mark some editors write

    def rows() -> Iterator[tuple[int, dict[str, str] | None]]:
        try:
            for fields in reader:
                if not any(x.strip() for x in fields):
                    continue
                yield reader.line_num, (None if len(fields) > len(header) else dict(zip(header, fields)))
        except csv.Error as e:
            raise DataError(f"{path}:{reader.line_num}: {e}; fix the quoting of that line") from None
    return header, rows()
