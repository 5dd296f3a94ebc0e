"""`lmforge prepare`: text -> tokenizer + memmapped token shards with a train/val split.

The text comes from files (text, or tables: each row's text field a document; see
`reading.py`) and from a dataset read with the `datasets` library (`hf_datasets.py`).

Output directory:

    tokenizer.json, tokenizer_config.json   the tokenizer (trained here, or copied)
    train.bin, val.bin                      flat token ids (uint16 if the vocabulary fits, else uint32)
    meta.json                               dtype, token and byte counts, sources, hygiene counts
    dedup.jsonl, canaries.json              with --dedup, --canaries (see `hygiene.py`)

It streams: text is read in ~1 MB pieces (tables a batch of rows at a time), encoded in
parallel batches and appended to the .bin files, so a corpus larger than memory works. Every
document ends with <eos>. Of each encoded piece, the last `val_fraction` of the tokens goes to
val.bin, so the validation split samples the whole corpus. Between reading and tokenizing, the
documents pass through `hygiene.py` (canaries, dedup, PII).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm.auto import tqdm

from ..errors import DataError
from ..fileio import read_json
from ..modeldir import CONFIG_FILE
from ..options import SEED, at_least, between, option, validate
from ..safety import staged_output
from ..tokenizers import Tokenizer, train_tokenizer
from ..tokenizers.base import TOKENIZER_CONFIG_FILE, TOKENIZER_FILE
from .canaries import canary_repeats
from .dedup import DEDUP_MODES
from .hf_datasets import dataset_texts
from .hygiene import Hygiene, Piece
from .pii import pii_types
from .reading import ReadStats, expand_inputs, iter_documents
from .rows import COLUMNAR, table_format

META_FILE = "meta.json"


@dataclass
class PrepareConfig:
    inputs: list[str] = option([], "text files, directories of them, or tables (.jsonl, .csv, .tsv, .parquet, .arrow, "
                                   "directories written by `datasets`' save_to_disk): each row is a document",
                               positional=True)
    dataset: str | None = option(None, "also read this dataset with the `datasets` library (offline): a "
                                       "save_to_disk directory, a local data file or directory, or a Hub dataset "
                                       "in the local cache")
    split: str = option("train", "the split to read of --dataset, or of a save_to_disk directory holding a "
                                 "DatasetDict")
    out: str = option("data/corpus", "output directory for the shards and tokenizer", short="-o")
    tokenizer: str = option("bpe", "char, bpe, or a directory holding a tokenizer.json to reuse")
    vocab_size: int = option(8192, "vocabulary size when training a BPE tokenizer", check=at_least(1))
    val_fraction: float = option(0.05, "fraction of tokens held out for validation",
                                 check=between(0, 1, high_open=True))
    text_field: str = option("text", "field (column) holding the text in .jsonl, table and --dataset inputs")
    errors: str = option("replace", "undecodable bytes: replace (with U+FFFD, and warn) or strict (reject)",
                         choices=("replace", "strict"))
    overwrite: bool = option(False, "replace what --out holds (prepared data, a model, other files); never an "
                                    "input")
    progress: bool = option(True, "show a progress bar")
    dedup: str = option("none", "leave out duplicate documents (a text file, or a row): exact (same text once "
                                "normalised), near (MinHash + LSH over character 5-grams; needs lmforge[audit]) "
                                "or none; listed in DATA/dedup.jsonl", choices=DEDUP_MODES)
    dedup_threshold: float = option(0.8, "--dedup near: drop a document whose estimated Jaccard similarity to an "
                                         "earlier kept one is at least this", check=between(0, 1, low_open=True))
    redact_pii: list[str] = option([], "replace personal data with <EMAIL>, <PHONE>, <IP>, <CARD>: any of email, "
                                       "phone, ip, card (comma-separated) or all; without it, what is found is "
                                       "only counted")
    canaries: int = option(0, "plant N random secrets per --canary-repeats count in the training split, before "
                              "dedup (recorded in DATA/canaries.json for `lmforge audit canaries`)", check=at_least(0))
    canary_repeats: str | list[int] = option([1, 10, 100], "how many times each canary is written: comma-separated "
                                                           "counts")
    seed: int = option(0, "random seed of the canaries' secrets and places", check=SEED)

    def __post_init__(self) -> None:
        validate(self, DataError)
        self.redact_pii = pii_types(self.redact_pii)
        self.canary_repeats = canary_repeats(self.canary_repeats)

    def hygiene(self) -> Hygiene:
        return Hygiene(self.dedup, self.dedup_threshold, self.redact_pii, self.canaries, self.canary_repeats,
                       self.seed)


def _size(path: Path) -> int:
    """Bytes on disk of an input file, or of the files of a save_to_disk directory."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def prepare(cfg: PrepareConfig, *, extra_files: dict[str, str] | None = None) -> dict:
    """Tokenize `cfg.inputs` into `cfg.out`; returns the meta.json contents. The directory is built
    beside `cfg.out` and renamed into place when complete (see `lmforge.safety`); `extra_files`
    ({relative name: text}) are written into it too."""
    if not 0.0 <= cfg.val_fraction < 1.0:
        raise DataError(f"val_fraction={cfg.val_fraction} must be in [0, 1)")
    files = expand_inputs(cfg.inputs) if cfg.inputs or not cfg.dataset else []
    total_bytes = sum(_size(f) for f in files)
    if total_bytes == 0 and not cfg.dataset:
        raise DataError(f"the corpus is empty ({', '.join(map(str, files))} hold 0 bytes); give files with text")
    tok_path = Path(cfg.tokenizer)
    reuse = tok_path.is_dir() or tok_path.suffix == ".json"
    inputs = [("the input", p) for p in cfg.inputs] + ([("the tokenizer", tok_path)] if reuse else [])
    inputs += [("the dataset", cfg.dataset)] if cfg.dataset and Path(cfg.dataset).exists() else []
    with staged_output(cfg.out, inputs=inputs, overwrite=cfg.overwrite, out_name="--out") as out:
        meta = _prepare_into(out, cfg, files, total_bytes, tokenizer=Tokenizer.load(tok_path) if reuse else None)
        for name, text in (extra_files or {}).items():
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_text(text, encoding="utf-8")
    return meta


def _prepare_into(out: Path, cfg: PrepareConfig, files: list[Path], total_bytes: int,
                  tokenizer: Tokenizer | None) -> dict:
    corpus = _Corpus(files, cfg, total_bytes)
    corpus.hygiene.survey(corpus.raw)
    if tokenizer is None:
        texts = (p.text for p in corpus.pieces(f"reading for the {cfg.tokenizer} tokenizer", count=False))
        tokenizer = train_tokenizer(cfg.tokenizer, texts, cfg.vocab_size, progress=cfg.progress)
    tokenizer.save(out)
    dtype = token_dtype(tokenizer.vocab_size)
    with open(out / "train.bin", "wb") as f_train, open(out / "val.bin", "wb") as f_val:
        shards = _SplitWriter(f_train, f_val, tokenizer, dtype, cfg.val_fraction)
        chars = _tokenize(corpus, shards.write)
    if chars == 0:
        raise DataError(f"the corpus {', '.join(map(str, cfg.inputs))} holds no text; give files with text")
    stats, counts = corpus.stats, shards.counts
    stats.warn_replaced()
    n_tokens = counts["train"] + counts["val"]
    meta = {
        "dtype": dtype.name, "vocab_size": tokenizer.vocab_size, "tokenizer": tokenizer.kind,
        "train_tokens": counts["train"], "val_tokens": counts["val"], "bytes": stats.bytes, "chars": chars,
        "bytes_per_token": round(stats.bytes / max(n_tokens, 1), 4), "eos_id": tokenizer.eos_id,
        "sources": [str(f) for f in files], "replaced_byte_sequences": sum(stats.replaced.values()),
        "val_fraction": cfg.val_fraction, **corpus.hygiene.meta(),
    }
    if cfg.dataset:
        meta.update(dataset=cfg.dataset, split=cfg.split)
    corpus.hygiene.write_files(out)
    from ..modeldir import write_json
    write_json(out / META_FILE, meta)
    return meta


class _Corpus:
    """The input files, then the --dataset, read piece by piece behind a progress bar, through
    `hygiene`; `stats` are the last pass's."""

    def __init__(self, files: list[Path], cfg: PrepareConfig, total_bytes: int):
        self.files, self.cfg = files, cfg
        # the bar counts the bytes of the files read, known up front unless texts come out of Parquet / Arrow / datasets
        known = not cfg.dataset and all(table_format(f) not in COLUMNAR for f in files)
        self.total_bytes = total_bytes if known else None
        self.stats = ReadStats()
        self.hygiene = cfg.hygiene()

    def pieces(self, desc: str, count: bool = True) -> Iterator[Piece]:
        """The pieces to tokenize: the inputs' through `hygiene` (`count`: see `Hygiene.pieces`)."""
        return self.hygiene.pieces(self.raw(desc), count)

    def raw(self, desc: str) -> Iterator[tuple[str, bool]]:
        """(text, ends a document) pieces of the inputs, as read."""
        self.stats = stats = ReadStats()
        cfg = self.cfg
        bar = tqdm(total=self.total_bytes, unit="B", unit_scale=True, desc=desc, disable=not cfg.progress)
        for piece in iter_documents(self.files, cfg.text_field, cfg.errors, stats, split=cfg.split):
            bar.update(stats.bytes - bar.n)
            yield piece
        if cfg.dataset:
            for text in dataset_texts(cfg.dataset, cfg.split, cfg.text_field, stats):
                bar.update(stats.bytes - bar.n)
                yield text, True
        bar.close()


class _SplitWriter:
    """Encodes batches of pieces and appends them to train.bin / val.bin: the last val_fraction
    of each batch's tokens go to val, those of train-only pieces (canaries) left out of the count
    and kept in train, in their place. `counts` holds the tokens written to each."""

    def __init__(self, f_train, f_val, tokenizer: Tokenizer, dtype: np.dtype, val_fraction: float):
        self.f_train, self.f_val, self.tokenizer, self.dtype = f_train, f_val, tokenizer, dtype
        self.val_fraction = val_fraction
        self.counts = {"train": 0, "val": 0}

    def write(self, batch: list[Piece]) -> None:
        if not batch:
            return
        eos = self.tokenizer.eos_id
        encoded = self.tokenizer.encode_batch([p.text for p in batch])
        segments = [(ids + [eos] if p.ends and eos is not None else ids, p.train_only)
                    for p, ids in zip(batch, encoded)]
        n = sum(len(ids) for ids, train_only in segments if not train_only)
        n_val = int(round(n * self.val_fraction))
        if self.val_fraction > 0 and n_val == 0 and n > 1:
            n_val = 1
        train: list[int] = []
        val: list[int] = []
        left = n - n_val                  # tokens that still go to train before the cut
        for ids, train_only in segments:
            cut = len(ids) if train_only else min(len(ids), left)
            left -= 0 if train_only else cut
            train.extend(ids[:cut])
            val.extend(ids[cut:])
        np.asarray(train, dtype=self.dtype).tofile(self.f_train)
        np.asarray(val, dtype=self.dtype).tofile(self.f_val)
        self.counts["train"] += len(train)
        self.counts["val"] += len(val)


def _tokenize(corpus: _Corpus, write) -> int:
    """Hand the corpus to `write` in batches of ~1 MB of text; returns the characters read."""
    chars, batch, batch_chars = 0, [], 0
    for text, ends, train_only in corpus.pieces("tokenizing"):
        if not text and not ends:
            continue
        chars += len(text)
        # split big pieces at newlines so encode_batch can use every core
        for part in _split_lines(text, 16384):
            batch.append(Piece(part, False, train_only))
            batch_chars += len(part)
        if ends:
            batch[-1] = batch[-1]._replace(ends=True)
        if batch_chars >= (1 << 20):
            write(batch)
            batch, batch_chars = [], 0
    write(batch)
    return chars


def _split_lines(text: str, size: int) -> Iterator[str]:
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            nl = text.rfind("\n", start, end)
            end = nl + 1 if nl > start else end
        yield text[start:end]
        start = end
    if not text:
        yield ""


def load_meta(data_dir: str | Path) -> dict:
    d = Path(data_dir)
    path = d / META_FILE
    if not d.is_dir():
        raise DataError(f"data directory {d} does not exist; create it with `lmforge prepare FILES --out {d}`")
    if not path.is_file():
        if (d / CONFIG_FILE).is_file():
            raise DataError(f"{d} is a model directory, not prepared data; prepare text with its tokenizer: "
                            f"`lmforge prepare FILES --out DATA_DIR --tokenizer {d}`")
        raise DataError(f"{d} has no meta.json; it is not a prepared data directory — run "
                        f"`lmforge prepare FILES --out {d}`")
    return read_json(path, f"re-run `lmforge prepare` for {d}")


def load_split(data_dir: str | Path, split: str) -> np.memmap:
    """The token ids of `split` (train or val), memory-mapped (nothing is read up front)."""
    meta = load_meta(data_dir)
    path = Path(data_dir) / f"{split}.bin"
    if not path.is_file():
        raise DataError(f"{path} is missing; re-run `lmforge prepare` for {data_dir}")
    if path.stat().st_size == 0:
        return np.zeros(0, dtype=meta["dtype"])  # np.memmap cannot map an empty file
    return np.memmap(path, dtype=meta["dtype"], mode="r")


def load_splits(data_dir: str | Path, window: int, needed: str) -> dict[str, np.memmap]:
    """The train and val splits, each checked to hold one training window of `window` tokens
    (`needed` says what that is, for the error)."""
    data = {split: load_split(data_dir, split) for split in ("train", "val")}
    for split, arr in data.items():
        if len(arr) < window:
            raise DataError(f"the {split} split of {data_dir} has {len(arr)} tokens, fewer than {needed}; use a "
                            f"smaller --context-length, more text, or a larger --val-fraction in `lmforge prepare`")
    return data


def copy_tokenizer(data_dir: str | Path, out_dir: str | Path) -> None:
    for name in (TOKENIZER_FILE, TOKENIZER_CONFIG_FILE):
        if (Path(data_dir) / name).is_file():
            shutil.copyfile(Path(data_dir) / name, Path(out_dir) / name)
