"""Labelled and paired examples from a table: CSV (.csv), TSV (.tsv, .tab), JSON lines (.jsonl,
one object per line), Parquet (.parquet), Arrow (.arrow) or a directory written by `datasets`'
`save_to_disk` (the formats are read by `rows.py` and `columnar.py`).

A missing column is an error that lists the columns found; rows with an empty required field
(or too few fields) are skipped and counted in one warning; rows are returned as dicts of
strings (a null value is empty; a `ClassLabel` column of `datasets` gives its label names).

Splits (`split_indices`) are a seeded shuffle, optionally stratified by a key (the label), so
every class is represented in validation and test in proportion.
"""

from __future__ import annotations

import csv
import io
import random
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import DataError
from ..fileio import open_text, read_text
from ..modeldir import atomic_write_text
from ..options import SEED, at_least, option, validate
from .columnar import ColumnarTable
from .rows import COLUMNAR, csv_records, json_objects, table_format


@dataclass
class TableConfig:
    """How a table file becomes train / validation / test examples (classify and seq2seq)."""
    val_fraction: float = option(0.1, "fraction of the rows held out for validation (evaluated during training)")
    test_fraction: float = option(0.1, "fraction of the rows held out for the final test report")
    split_seed: int = option(0, "seed of the shuffle that makes the train / validation / test split", check=SEED)
    tokenizer: str = option("bpe", "training from scratch: tokenizer kind to train on the table (char, bpe, "
                                   "wordpiece) or a directory holding a tokenizer.json")
    vocab_size: int = option(8192, "training from scratch: vocabulary size of the trained tokenizer",
                             check=at_least(1))

    def __post_init__(self) -> None:
        validate(self)
        if not (0 < self.val_fraction < 1 and 0 <= self.test_fraction < 1
                and self.val_fraction + self.test_fraction < 1):
            raise DataError(f"val_fraction={self.val_fraction} must be in (0, 1) and test_fraction="
                            f"{self.test_fraction} in [0, 1), leaving rows for training")


def _format(path: Path) -> str:
    fmt = table_format(path)
    if fmt is None:
        raise DataError(f"{path}: unknown table format {path.suffix!r}; use .csv, .tsv (tab-separated, header "
                        f"first), .jsonl (one JSON object per line), .parquet, .arrow or a directory written by "
                        f"`datasets`' save_to_disk")
    return fmt


def _records(path: Path, fmt: str, wanted: list[str]
             ) -> tuple[list[str], Iterator[tuple[int, dict[str, str] | None]]]:
    """(columns, iterator of (line or row number, row dict or None for a malformed row)); of a
    Parquet / Arrow table, only the `wanted` columns are read."""
    if fmt in COLUMNAR:
        return _columnar_records(ColumnarTable(path), wanted)
    f = open_text(path, encoding="utf-8-sig", newline="")
    if fmt == "jsonl":
        with f:
            rows = [(n, {k: "" if v is None else str(v) for k, v in rec.items()})
                    for n, rec in json_objects(enumerate(f, 1), path)]
        columns = list(dict.fromkeys(k for _, r in rows for k in r))
        return columns, iter(rows)
    try:
        header, records = csv_records(f, path, fmt)
    except DataError:
        f.close()
        raise

    def rows() -> Iterator[tuple[int, dict[str, str] | None]]:
        with f:
            yield from records
    return header, rows()


def _columnar_records(table: ColumnarTable, wanted: list[str]
                      ) -> tuple[list[str], Iterator[tuple[int, dict[str, str]]]]:
    def rows() -> Iterator[tuple[int, dict[str, str]]]:
        n = 0
        for batch in table.batches([c for c in wanted if c in table.columns]):
            for values in zip(*batch.values()):
                n += 1
                yield n, {c: "" if v is None else str(v) for c, v in zip(batch, values)}
    return table.columns, rows()


def read_table(path: str | Path, required: list[str], optional: tuple[str | None, ...] = (),
               flags: dict[str, str] | None = None) -> list[dict[str, str]]:
    """Rows of `path` holding a non-empty value for every `required` column (and the
    `optional` columns when present). `flags` names the option that sets each column, for
    the error message (e.g. {"text": "--text-column"})."""
    path = Path(path)
    if not (path.is_file() or table_format(path) == "saved"):
        raise DataError(f"data file {path} does not exist; check the path")
    fmt = _format(path)
    columns, records = _records(path, fmt, required + [c for c in optional if c])
    flags = flags or {}
    for col in required + [c for c in optional if c]:
        if col not in columns:
            hint = f"; pass {flags[col]} with one of them" if col in flags else ""
            raise DataError(f"{path} has no column {col!r} (columns found: {', '.join(columns) or 'none'}){hint}")
    rows, skipped, malformed = [], [], []
    for line, rec in records:
        if rec is None:
            malformed.append(line)
            continue
        values = {c: rec.get(c, "").strip() for c in required}
        if not all(values.values()):
            skipped.append(line)
            continue
        values.update({c: rec.get(c, "").strip() for c in optional if c})
        rows.append(values)
    if skipped:
        where = "rows" if fmt in COLUMNAR else "lines"
        warnings.warn(f"skipped {len(skipped)} row(s) of {path} with an empty or missing "
                      f"{' / '.join(repr(c) for c in required)} ({where} {_few(skipped)})", stacklevel=2)
    if malformed:
        warnings.warn(f"skipped {len(malformed)} row(s) of {path} with more fields than the header has "
                      f"(lines {_few(malformed)}); a tab inside a TSV field splits it", stacklevel=2)
    if not rows:
        raise DataError(f"{path} has no usable rows (every row misses {' or '.join(map(repr, required))})")
    return rows


def _few(lines: list[int]) -> str:
    return ", ".join(map(str, lines[:5])) + (" ..." if len(lines) > 5 else "")


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int,
                  strata: list[str] | None = None) -> dict[str, list[int]]:
    """Seeded train / val / test split of range(n); with `strata` (a key per row), each key is
    split in the same proportions."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i in range(n):
        groups[strata[i] if strata is not None else ""].append(i)
    rng = random.Random(seed)
    out: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for key in sorted(groups):
        idx = groups[key]
        rng.shuffle(idx)
        n_val, n_test = round(len(idx) * val_fraction), round(len(idx) * test_fraction)
        out["val"] += idx[:n_val]
        out["test"] += idx[n_val: n_val + n_test]
        out["train"] += idx[n_val + n_test:]
    for split in out.values():
        rng.shuffle(split)
    if not out["train"]:
        raise DataError(f"no rows left for training out of {n}; lower --val-fraction / --test-fraction")
    if not out["val"]:
        raise DataError(f"the validation split is empty ({n} rows x val_fraction {val_fraction}); "
                        f"raise --val-fraction or give more rows")
    return out


def table_tokenizer(options: TableConfig, texts: list[str]):
    """The tokenizer of a from-scratch run on a table: loaded from `options.tokenizer` when it
    is a directory (or tokenizer.json), else a new one of that kind trained on `texts`."""
    from ..tokenizers import Tokenizer, train_tokenizer
    p = Path(options.tokenizer)
    if p.is_dir() or p.suffix == ".json":
        return Tokenizer.load(p)
    return train_tokenizer(options.tokenizer, texts, options.vocab_size)


def read_texts(path: str | Path, column: str, flag: str = "--text-column") -> list[str]:
    """The texts to run a model on: the non-empty lines of a text file, or the `column` of a
    table (rows with an empty text are skipped with a warning)."""
    path = Path(path)
    if not (path.is_file() or table_format(path) == "saved"):
        raise DataError(f"input file {path} does not exist; check the path")
    if table_format(path) is None:
        lines = read_text(path).splitlines()
        return [line for line in lines if line.strip()]
    return [r[column] for r in read_table(path, [column], (), {column: flag})]


def write_table(path: str | Path, columns: list[str], rows: list[tuple[str, ...]]) -> Path:
    """Write `rows` under the header `columns` as a table `read_table` reads back the same, whole
    or not at all (a temporary file renamed over `path`): TSV for .tsv / .tab (unquoted, as the
    IANA format wants, so a field may not hold a tab or a line break), CSV for any other suffix."""
    path = Path(path)
    buffer = io.StringIO()
    if path.suffix.lower() in (".tsv", ".tab"):
        for n, row in enumerate([columns, *rows]):
            bad = next((f for f in row if any(c in f for c in "\t\r\n")), None)
            if bad is not None:
                raise DataError(f"{path}: row {n} has a field with a tab or a line break ({bad[:40]!r}), which a "
                                f"TSV cannot hold; collapse its whitespace, or write a .csv")
            buffer.write("\t".join(row) + "\n")
    else:
        csv.writer(buffer, lineterminator="\n").writerows([columns, *rows])
    atomic_write_text(path, buffer.getvalue())
    return path
