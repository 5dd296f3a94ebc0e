"""`lmforge prepare --dataset PATH_OR_NAME`: the texts of a dataset read with the `datasets`
library, offline.

PATH_OR_NAME is one of
- a directory written by `save_to_disk` (`load_from_disk`; of a DatasetDict, the `--split`),
- a local data file (.parquet, .arrow, .csv, .tsv, .json, .jsonl, .txt; one split, `train`) or a
  directory of them laid out as on the Hub (`load_dataset(PATH, streaming=True)`: rows are read
  from the files as they are needed and no Arrow cache is written),
- the name of a Hub dataset that `datasets` has in its local cache (`load_dataset(NAME)`, which
  memory-maps the cached Arrow files).

lmforge does not go to the network: `datasets` runs in offline mode for the call, so a name that
is not cached is a one-line error at once, not a series of retries. `datasets` is an optional
dependency (`pip install 'lmforge[datasets]'`).
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

from ..errors import DataError
from .columnar import INSTALL_HINT, is_saved_dataset
from .reading import ReadStats, check_text_column

BUILDERS = {".parquet": "parquet", ".arrow": "arrow", ".csv": "csv", ".tsv": "csv", ".json": "json",
            ".jsonl": "json", ".txt": "text"}     # suffix -> `datasets`' packaged builder for a single file
BATCH_ROWS = 100                  # rows are documents of any length: keep a batch small


def _datasets():
    try:
        import datasets
    except ImportError:
        raise DataError(f"--dataset needs the datasets library; install it with {INSTALL_HINT}") from None
    return datasets


@contextlib.contextmanager
def offline(datasets) -> Iterator[None]:
    """`datasets` and `huggingface_hub` read HF_HUB_OFFLINE once, at import: switch both on for the call."""
    import huggingface_hub.constants as hub
    saved = datasets.config.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = hub.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, hub.HF_HUB_OFFLINE = saved


def load_split(name: str, split: str) -> Any:
    """The `split` of dataset `name` (see the module docstring), a `datasets.Dataset` or
    `IterableDataset`; every failure is a one-line DataError."""
    datasets = _datasets()
    path = Path(name)
    with offline(datasets):
        try:
            return _load(datasets, name, path, split)
        except DataError:
            raise
        except Exception as e:           # a library boundary: its errors, as one line
            if isinstance(e, (ConnectionError, FileNotFoundError)) and not path.exists():
                raise DataError(f"dataset {name!r} is neither a local path nor in the local cache of `datasets` "
                                f"({datasets.config.HF_DATASETS_CACHE}); lmforge reads datasets offline: load it "
                                f"once with `datasets` where there is a network, or give a local path") from None
            raise DataError(f"--dataset {name} (split {split!r}): {type(e).__name__}: {_first_line(e)}") from None


def _load(datasets, name: str, path: Path, split: str) -> Any:
    if is_saved_dataset(path):
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise DataError(f"{name} has no split {split!r} (splits: {', '.join(loaded)}); pass --split with "
                                f"one of them")
            loaded = loaded[split]
        return loaded
    if path.is_file():
        builder = BUILDERS.get(path.suffix.lower())
        if builder is None:
            raise DataError(f"--dataset {name}: unknown data file type {path.suffix!r}; use one of "
                            f"{', '.join(BUILDERS)}")
        extra: dict[str, Any] = {}
        if builder == "csv":           # an empty field is an empty text, not a missing value (pandas' NaN)
            extra = {"na_filter": False, **({"delimiter": "\t"} if path.suffix.lower() == ".tsv" else {})}
        return datasets.load_dataset(builder, data_files=str(path), split=split, streaming=True, **extra)
    if path.is_dir():
        return datasets.load_dataset(str(path), split=split, streaming=True)
    return datasets.load_dataset(name, split=split)


def dataset_texts(name: str, split: str, text_field: str, stats: ReadStats) -> Iterator[str]:
    """The `text_field` of each row of the dataset (null values left out), a batch of rows at a
    time; `stats.bytes` counts their UTF-8 bytes."""
    dataset = load_split(name, split)
    columns = dataset.column_names
    if columns is not None:               # None: features unknown until rows are read (some streamed files)
        check_text_column(f"--dataset {name} (split {split!r})", text_field, list(columns))
        dataset = dataset.select_columns([text_field])
    stats.files.append(name)
    datasets = _datasets()
    with offline(datasets):
        try:
            for batch in dataset.iter(batch_size=BATCH_ROWS):
                if text_field not in batch:
                    check_text_column(f"--dataset {name} (split {split!r})", text_field, list(batch))
                for value in batch[text_field]:
                    if value is not None:
                        text = str(value)
                        stats.bytes += len(text.encode("utf-8"))
                        yield text
        except DataError:
            raise
        except Exception as e:
            raise DataError(f"--dataset {name} (split {split!r}): reading failed: {type(e).__name__}: "
                            f"{_first_line(e)}") from None


def _first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [""])[0]
