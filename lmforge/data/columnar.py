"""The Hugging Face Hub's own formats, read with pyarrow a record batch at a time: Parquet
(`.parquet`), Arrow IPC (`.arrow`, the file or the stream format) and the directories that
`datasets`' `save_to_disk` writes (Arrow stream files listed in `state.json`; a `DatasetDict`
keeps one such directory per split, named in `dataset_dict.json`).

Nothing is read whole: a Parquet file is read in batches of about BATCH_BYTES (as many rows as
its metadata says fit), its pages through a small buffer; an Arrow file a record batch at a
time, from an ordinary file handle (not a memory map). Memory stays at about one batch whatever
the size of the file. A `ClassLabel`
column of a dataset written by `datasets` (integers, with the label names in the schema's
metadata) gives the names.

pyarrow is an optional dependency (`pip install 'lmforge[datasets]'`): it is imported here only
when such a file is read, and its absence is a one-line error naming the extra.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any, Iterator

from ..errors import DataError
from ..fileio import read_json

INSTALL_HINT = "pip install 'lmforge[datasets]'"
BATCH_BYTES = 1 << 20          # about this much data per Parquet batch (text is read in 1 MB blocks too)
STATE_FILE, DICT_FILE = "state.json", "dataset_dict.json"     # what save_to_disk writes


def pyarrow():
    """The pyarrow module (with .parquet and .ipc loaded), or a one-line error naming the extra."""
    try:
        import pyarrow
        import pyarrow.ipc
        import pyarrow.parquet
    except ImportError:
        raise DataError(f"reading Parquet and Arrow files needs pyarrow; install it with {INSTALL_HINT}") from None
    return pyarrow


def is_saved_dataset(path: Path) -> bool:
    """Whether `path` is a directory written by `datasets`' `save_to_disk` (a Dataset or a DatasetDict)."""
    return path.is_dir() and ((path / STATE_FILE).is_file() or (path / DICT_FILE).is_file())


def saved_dataset_files(path: Path, split: str | None) -> list[Path]:
    """The Arrow files of a `save_to_disk` directory, in row order; of a DatasetDict, those of
    `split` (None: the DatasetDict is an error that names its splits)."""
    if (path / DICT_FILE).is_file():
        splits = read_json(path / DICT_FILE, "re-save the dataset with save_to_disk").get("splits", [])
        if split is None:
            raise DataError(f"{path} holds a DatasetDict with splits {', '.join(splits)}; give one split's "
                            f"directory, e.g. {path / splits[0] if splits else path}")
        if split not in splits:
            raise DataError(f"{path} has no split {split!r} (splits: {', '.join(splits) or 'none'}); pass --split "
                            f"with one of them")
        path = path / split
    state = read_json(path / STATE_FILE, "re-save the dataset with save_to_disk")
    files = [path / f["filename"] for f in state.get("_data_files", [])]
    if not files:
        raise DataError(f"{path}/{STATE_FILE} lists no data files; re-save the dataset with save_to_disk")
    return files


class ColumnarTable:
    """A Parquet file, an Arrow file or a saved dataset: its columns, and batches of their values.

    >>> table = ColumnarTable(Path("reviews.parquet"))                    # doctest: +SKIP
    >>> table.columns, next(table.batches(["text"]))                      # doctest: +SKIP
    (['text', 'label'], {'text': ['great', 'dull', ...]})
    """

    def __init__(self, path: Path, split: str | None = None):
        self.path = path
        self.files = saved_dataset_files(path, split) if path.is_dir() else [path]
        with _reading(self.files[0]):
            schema = _schema(self.files[0])
        self.columns: list[str] = list(schema.names)
        self.label_names = class_label_names(schema.metadata)

    def batches(self, columns: list[str]) -> Iterator[dict[str, list[Any]]]:
        """{column: values} for successive batches of rows (None where a value is null; a
        ClassLabel's names in place of its integers)."""
        for file in self.files:
            with _reading(file):
                for batch in _record_batches(file, columns):
                    yield {c: self._values(c, batch.column(c).to_pylist()) for c in columns}

    def _values(self, column: str, values: list[Any]) -> list[Any]:
        names = self.label_names.get(column)
        if names is None:
            return values
        return [names[v] if isinstance(v, int) and 0 <= v < len(names) else None for v in values]


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turns pyarrow's errors about a file (not Parquet, truncated, corrupt) into one DataError line."""
    pa = pyarrow()
    try:
        yield
    except (pa.ArrowException, OSError) as error:
        if isinstance(error, MemoryError):
            raise
        what = "Parquet" if path.suffix.lower() == ".parquet" else "Arrow"
        raise DataError(f"{path} cannot be read as {what} ({str(error).splitlines()[0]}); check that the file "
                        f"is complete and of that format") from None


def _is_arrow_file_format(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(6) == b"ARROW1"             # the IPC file format's magic; the stream format has none


def _schema(path: Path):
    pa = pyarrow()
    if path.suffix.lower() == ".parquet":
        with pa.parquet.ParquetFile(path) as parquet:
            return parquet.schema_arrow
    with pa.OSFile(str(path)) as source:
        opened = pa.ipc.open_file if _is_arrow_file_format(path) else pa.ipc.open_stream
        return opened(source).schema


def _record_batches(path: Path, columns: list[str]) -> Iterator[Any]:
    pa = pyarrow()
    if path.suffix.lower() == ".parquet":
        # no pre-buffering of whole column chunks: pages are read through a 1 MB buffer as they are decoded
        with pa.parquet.ParquetFile(path, pre_buffer=False, buffer_size=1 << 20) as parquet:
            yield from parquet.iter_batches(batch_size=_parquet_batch_rows(parquet, columns), columns=columns,
                                            use_threads=False)
        return
    with pa.OSFile(str(path)) as source:
        if _is_arrow_file_format(path):
            reader = pa.ipc.open_file(source)
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i).select(columns)
        else:
            for batch in pa.ipc.open_stream(source):
                yield batch.select(columns)


def _parquet_batch_rows(parquet, columns: list[str]) -> int:
    """Rows per batch so that a batch holds about BATCH_BYTES of the `columns` (rows can be
    documents of any length: a fixed row count could be a gigabyte)."""
    meta = parquet.metadata
    if meta.num_rows == 0:
        return 1
    wanted = set(columns)
    size = sum(group.column(i).total_uncompressed_size for group in map(meta.row_group, range(meta.num_row_groups))
               for i in range(group.num_columns) if group.column(i).path_in_schema in wanted)
    return max(1, min(meta.num_rows, BATCH_BYTES * meta.num_rows // max(size, 1)))


def class_label_names(metadata: dict[bytes, bytes] | None) -> dict[str, list[str]]:
    """{column: label names} of the ClassLabel columns described in a schema's metadata by
    `datasets` (its "huggingface" key).

    >>> info = {"info": {"features": {"label": {"names": ["neg", "pos"], "_type": "ClassLabel"}}}}
    >>> class_label_names({b"huggingface": json.dumps(info).encode()})
    {'label': ['neg', 'pos']}
    """
    try:
        features = json.loads((metadata or {})[b"huggingface"])["info"]["features"]
    except (KeyError, TypeError, ValueError):
        return {}
    return {name: list(f["names"]) for name, f in features.items()
            if isinstance(f, dict) and f.get("_type") == "ClassLabel" and isinstance(f.get("names"), list)}
