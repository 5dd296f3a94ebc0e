"""The Hub's formats: `lmforge prepare` reads Parquet, Arrow, CSV / TSV and `save_to_disk`
directories (and any of them through `--dataset`, the `datasets` library, offline) into the same
tokens as text; a Parquet file larger than the memory given to the process streams; the
classify and seq2seq tables read the same formats. pyarrow and `datasets` write the files here:
they are the oracles of their own formats."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from lmforge.cli import main
from lmforge.config import get_preset
from lmforge.data.shards import PrepareConfig, load_meta, load_split, prepare
from lmforge.data.tables import read_table, read_texts
from lmforge.errors import DataError
from lmforge.tasks.classify import ClassificationTask, ClassifyConfig
from lmforge.tasks.seq2seq import Seq2SeqConfig, Seq2SeqTask
from lmforge.tokenizers import Tokenizer

from .conftest import corpus_text, pair_rows, topic_rows, write_pairs_tsv, write_topics_csv

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
datasets = pytest.importorskip("datasets")
ROOT = Path(__file__).resolve().parents[1]


def _prepare(inputs, out, **kw):
    kw = {"progress": False, "tokenizer": "bpe", "vocab_size": 300, "val_fraction": 0.1, **kw}
    return prepare(PrepareConfig(inputs=[str(i) for i in inputs], out=str(out), **kw))


def _shards(out: Path) -> tuple[np.ndarray, np.ndarray, str]:
    return load_split(out, "train"), load_split(out, "val"), (out / "tokenizer.json").read_text()


def _write_arrow(table, path: Path, stream: bool) -> Path:
    with pa.OSFile(str(path), "wb") as sink:
        new = pa.ipc.new_stream if stream else pa.ipc.new_file
        with new(sink, table.schema) as writer:
            writer.write_table(table, max_chunksize=2)          # several record batches
    return path


def _write_csv(rows: dict[str, list], path: Path) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(list(rows))
        writer.writerows(zip(*rows.values()))
    return path


def _tables_of(docs: list[str], d: Path) -> dict[str, Path]:
    """The same rows (a `content` column, and a `n` column prepare does not read) in every table format."""
    d.mkdir()
    rows = {"n": list(range(len(docs))), "content": docs}
    table = pa.table(rows)
    pq.write_table(table, d / "c.parquet", row_group_size=2)
    dataset = datasets.Dataset.from_dict(rows)
    dataset.save_to_disk(str(d / "saved"))
    datasets.DatasetDict({"train": dataset, "test": dataset.select([0])}).save_to_disk(str(d / "saved_dict"))
    (d / "c.jsonl").write_text("".join(json.dumps({"content": doc}) + "\n" for doc in docs), encoding="utf-8")
    return {"parquet": d / "c.parquet", "arrow file": _write_arrow(table, d / "c.arrow", stream=False),
            "arrow stream": _write_arrow(table, d / "s.arrow", stream=True), "save_to_disk": d / "saved",
            "save_to_disk DatasetDict": d / "saved_dict", "csv": _write_csv(rows, d / "c.csv"), "jsonl": d / "c.jsonl"}


@pytest.mark.parametrize("n_docs", [1, 40])
def test_same_tokens_from_text_and_every_table_format(tmp_path, n_docs):
    """A text file is one document and a table row is one: the same documents (each under the
    ~1 MB piece prepare cuts a text file into) as .txt files or as the rows of any table give the
    same tokenizer, train.bin and val.bin — through the positional inputs and through --dataset."""
    text = corpus_text(40_000)
    docs = [text] if n_docs == 1 else [p + "\n" for p in text.split("\n\n")[:n_docs]]
    docs[-1] += ' "quoted", with commas; 世界 🎉'
    txt = tmp_path / "txt"
    txt.mkdir()
    for i, doc in enumerate(docs):
        (txt / f"{i:03}.txt").write_text(doc, encoding="utf-8")
    _prepare([txt / "000.txt"] if n_docs == 1 else [txt], tmp_path / "from-txt")
    expected = _shards(tmp_path / "from-txt")
    assert len(expected[1]) > 0 and load_meta(tmp_path / "from-txt")["chars"] == sum(map(len, docs))
    tables = _tables_of(docs, tmp_path / "tables")
    for name, path in tables.items():
        _prepare([path], tmp_path / name, text_field="content")
        got = _shards(tmp_path / name)
        assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]), name
        assert got[2] == expected[2], f"{name}: another tokenizer was trained"
    for name in ("parquet", "csv", "jsonl", "save_to_disk", "save_to_disk DatasetDict"):
        out = tmp_path / f"dataset {name}"
        meta = prepare(PrepareConfig(dataset=str(tables[name]), out=str(out), tokenizer="bpe", vocab_size=300,
                                     val_fraction=0.1, text_field="content", progress=False))
        got = _shards(out)
        assert np.array_equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]), f"--dataset {name}"
        assert meta["dataset"] == str(tables[name]) and meta["split"] == "train"


def test_tsv_rows_and_several_files(tmp_path):
    """TSV rows (one line each) are documents like .jsonl lines; several files and a directory of
    Parquet shards read in order, as text files do."""
    lines = [line for line in corpus_text(8000).splitlines() if line.strip() and "\t" not in line]
    (tmp_path / "t.tsv").write_text("text\n" + "".join(f"{line}\n" for line in lines), encoding="utf-8")
    (tmp_path / "t.jsonl").write_text("".join(json.dumps({"text": line}) + "\n" for line in lines))
    _prepare([tmp_path / "t.jsonl"], tmp_path / "jsonl", val_fraction=0.0)
    _prepare([tmp_path / "t.tsv"], tmp_path / "tsv", val_fraction=0.0)
    expected = load_split(tmp_path / "jsonl", "train")
    assert np.array_equal(load_split(tmp_path / "tsv", "train"), expected)
    shards = tmp_path / "repo" / "data"
    shards.mkdir(parents=True)
    half = len(lines) // 2
    pq.write_table(pa.table({"text": lines[:half]}), shards / "train-00000-of-00002.parquet")
    pq.write_table(pa.table({"text": lines[half:]}), shards / "train-00001-of-00002.parquet")
    (tmp_path / "repo" / "README.md").write_text("")          # a text file of the directory: an empty document
    meta = _prepare([tmp_path / "repo"], tmp_path / "dir", tokenizer=str(tmp_path / "jsonl"), val_fraction=0.0)
    assert [Path(s).name for s in meta["sources"]] == ["README.md", "train-00000-of-00002.parquet",
                                                       "train-00001-of-00002.parquet"]
    assert np.array_equal(load_split(tmp_path / "dir", "train"), np.concatenate([[meta["eos_id"]], expected]))


def test_a_save_to_disk_directory_inside_a_directory_is_one_input(tmp_path):
    """Its --split is read, not the Arrow files of every split."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("a text file\n")
    splits = {"train": ["a train row"], "test": ["a test row"]}
    datasets.DatasetDict({k: datasets.Dataset.from_dict({"text": v}) for k, v in splits.items()}).save_to_disk(
        str(corpus / "saved"))
    meta = _prepare([corpus], tmp_path / "o", tokenizer="char", val_fraction=0.0)
    assert [Path(s).name for s in meta["sources"]] == ["a.txt", "saved"]
    tok = Tokenizer.load(tmp_path / "o")
    assert tok.decode(load_split(tmp_path / "o", "train").tolist(), skip_special_tokens=False) == \
        "a text file\n<eos>a train row<eos>"


def test_format_errors_are_one_line(tmp_path, monkeypatch):
    table = pa.table({"body": ["a"], "label": [1]})
    pq.write_table(table, tmp_path / "t.parquet")
    with pytest.raises(DataError, match=r"t.parquet has no column 'text' \(columns found: body, label\); pass "
                                         r"--text-field"):
        _prepare([tmp_path / "t.parquet"], tmp_path / "o")
    _write_csv({"body": ["a"]}, tmp_path / "t.csv")
    with pytest.raises(DataError, match=r"t.csv has no column 'text' \(columns found: body\)"):
        _prepare([tmp_path / "t.csv"], tmp_path / "o")
    (tmp_path / "bad.tsv").write_text("text\nok\ntab\tinside\n")
    with pytest.raises(DataError, match=r"bad.tsv:3 has more fields than the header names \(1\); a tab inside"):
        _prepare([tmp_path / "bad.tsv"], tmp_path / "o")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"junk.parquet cannot be read as Parquet \(.*\); check that the file"):
        _prepare([tmp_path / "junk.parquet"], tmp_path / "o")
    (tmp_path / "junk.arrow").write_bytes(b"ARROW1 nor this")
    with pytest.raises(DataError, match=r"junk.arrow cannot be read as Arrow"):
        _prepare([tmp_path / "junk.arrow"], tmp_path / "o")
    d = datasets.Dataset.from_dict({"text": ["x"]})
    datasets.DatasetDict({"train": d, "test": d}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataError, match=r"dd has no split 'validation' \(splits: train, test\); pass --split"):
        _prepare([tmp_path / "dd"], tmp_path / "o", split="validation")
    with pytest.raises(DataError, match=r"has no split 'validation' \(splits: train, test\); pass --split"):
        prepare(PrepareConfig(dataset=str(tmp_path / "dd"), split="validation", out=str(tmp_path / "o")))
    with pytest.raises(DataError, match=r"dd holds a DatasetDict with splits train, test; give one split's "
                                         r"directory, e.g. .*dd/train"):
        read_table(tmp_path / "dd", ["text"])
    with pytest.raises(DataError, match="no input given; pass text files.*or --dataset"):
        prepare(PrepareConfig(out=str(tmp_path / "o")))
    monkeypatch.setitem(sys.modules, "pyarrow", None)                 # as if it were not installed
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(DataError, match=r"^reading Parquet and Arrow files needs pyarrow; install it with pip "
                                        r"install 'lmforge\[datasets\]'$"):
        _prepare([tmp_path / "t.parquet"], tmp_path / "o")
    with pytest.raises(DataError, match=r"^--dataset needs the datasets library; install it with pip install "
                                        r"'lmforge\[datasets\]'$"):
        prepare(PrepareConfig(dataset=str(tmp_path / "t.parquet"), out=str(tmp_path / "o")))


def test_dataset_flag_reads_local_layouts_and_the_cache(tmp_path, monkeypatch):
    """--dataset: a directory laid out as a Hub repository (splits named by the files) and a Hub
    name that `datasets` has cached (a cache entry as `load_dataset` leaves it, made here)."""
    repo = tmp_path / "repo" / "data"
    repo.mkdir(parents=True)
    pq.write_table(pa.table({"text": ["train one", "train two"]}), repo / "train-00000-of-00001.parquet")
    pq.write_table(pa.table({"text": ["the test row"]}), repo / "test-00000-of-00001.parquet")
    meta = prepare(PrepareConfig(dataset=str(tmp_path / "repo"), split="test", out=str(tmp_path / "o1"),
                                 tokenizer="char", val_fraction=0.0, progress=False))
    assert meta["chars"] == len("the test row") and meta["train_tokens"] == len("the test row") + 1
    cache = tmp_path / "cache"
    entry = cache / "someone___corpus" / "default" / "0.0.0" / "0123abcd"
    entry.mkdir(parents=True)
    dataset = datasets.Dataset.from_dict({"text": ["cached hub text"]})
    info = dataset.info
    info.config_name, info.dataset_name = "default", "corpus"
    info.splits = datasets.SplitDict({"train": datasets.SplitInfo("train", num_examples=1, dataset_name="corpus")})
    info.write_to_directory(str(entry))
    with datasets.arrow_writer.ArrowWriter(path=str(entry / "corpus-train.arrow")) as writer:
        writer.write_table(dataset.data.table)
        writer.finalize()
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(cache))
    meta = prepare(PrepareConfig(dataset="someone/corpus", out=str(tmp_path / "o2"), tokenizer="char",
                                 val_fraction=0.0, progress=False))
    assert meta["chars"] == len("cached hub text") and meta["sources"] == [] and meta["dataset"] == "someone/corpus"


def test_an_uncached_hub_name_fails_at_once_in_one_line(tmp_path, monkeypatch, capsys):
    """Offline whatever the environment said when `datasets` was imported: no retries, no
    traceback, exit status 2."""
    import huggingface_hub.constants
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "empty-cache"))
    start = time.monotonic()
    assert main(["prepare", "--dataset", "someone/not-downloaded", "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 2
    assert time.monotonic() - start < 10                   # a network retry loop takes minutes
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and "'someone/not-downloaded' is neither a local path nor in the local cache" in lines[0]
    assert datasets.config.HF_HUB_OFFLINE is False           # switched back after the call


def test_cli_prepare_reads_a_parquet_column(tmp_path, capsys):
    pq.write_table(pa.table({"body": ["one text", "two texts"]}), tmp_path / "c.parquet")
    assert main(["prepare", str(tmp_path / "c.parquet"), "--text-field", "body", "--out", str(tmp_path / "o"),
                 "--tokenizer", "char", "--val-fraction", "0", "--no-progress"]) == 0
    assert load_meta(tmp_path / "o")["chars"] == len("one text") + len("two texts")


# ---- streaming: a Parquet file larger than the memory the process is given ----------------------------
CHILD = textwrap.dedent("""
    import resource, sys
    from pathlib import Path
    from lmforge.data.shards import PrepareConfig, prepare
    d = Path(sys.argv[1])
    def run(src, out):
        prepare(PrepareConfig(inputs=[str(d / src)], out=str(d / out), tokenizer=str(d / "tok"), progress=False))
    run("small.parquet", "warm")             # the same work on a small file: libraries loaded, pools and caches made
    vm = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
    limit = vm + int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    run("big.parquet", "out")
    print("prepared")
    try:
        (d / "big.parquet").read_bytes()     # what any whole read needs at the least (pyarrow's own deadlocks here)
        print("read whole")
    except MemoryError:
        print("reading it whole runs out of memory")
""")


@pytest.mark.slow
def test_a_parquet_file_larger_than_the_memory_limit_streams(tmp_path):
    """The child process may grow its address space (RLIMIT_AS, which counts every mapping,
    unlike RSS) by HEADROOM after loading its libraries and preparing a small file; the Parquet
    file it then prepares holds more than twice that. The same limit makes pyarrow's whole-file
    read fail, so the test is not passing because the limit is loose. (An absolute limit cannot
    be chosen: torch alone maps ~2 GB of address space at import.)"""
    headroom = 16 << 20
    row = ("a" * 255 + "\n") * 128                          # 32 KB rows of long words: few tokens, a fast test
    schema = pa.schema([("text", pa.string())])

    def write(path: Path, n_rows: int) -> None:
        with pq.ParquetWriter(path, schema, compression="none", use_dictionary=False) as writer:
            for start in range(0, n_rows, 32):             # row groups of 1 MB, written without holding the file
                writer.write_table(pa.table({"text": [row] * min(32, n_rows - start)}), row_group_size=32)
    write(tmp_path / "small.parquet", 80)
    write(tmp_path / "big.parquet", 2 * headroom // len(row) + 64)
    assert (tmp_path / "big.parquet").stat().st_size > 2 * headroom
    (tmp_path / "tok.txt").write_text(row * 8)
    _prepare([tmp_path / "tok.txt"], tmp_path / "tok")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path), str(headroom)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split("\n")[:2] == ["prepared", "reading it whole runs out of memory"], done.stdout
    meta = load_meta(tmp_path / "out")
    n_rows = 2 * headroom // len(row) + 64
    assert meta["chars"] == n_rows * len(row) and meta["bytes"] == n_rows * len(row)


# ---- the tables of the classify and seq2seq tasks -----------------------------------------------------
def test_classify_and_seq2seq_tables_read_parquet_arrow_and_saved_datasets(tmp_path):
    csv_path = write_topics_csv(tmp_path / "topics.csv", n=60)
    texts, labels = zip(*topic_rows(60))
    names = sorted(set(labels))
    features = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})
    dataset = datasets.Dataset.from_dict({"text": list(texts), "label": [names.index(x) for x in labels]},
                                         features=features)
    dataset.to_parquet(str(tmp_path / "topics.parquet"))    # a ClassLabel: integers, the names in the metadata
    dataset.save_to_disk(str(tmp_path / "topics"))
    _write_arrow(pa.table({"text": list(texts), "label": list(labels)}), tmp_path / "topics.arrow", stream=True)
    expected = read_table(csv_path, ["text", "label"])
    options = ClassifyConfig(tokenizer="char")
    reference = ClassificationTask(csv_path, get_preset("bert-tiny"), None, options)
    for path in (tmp_path / "topics.parquet", tmp_path / "topics", tmp_path / "topics.arrow"):
        assert read_table(path, ["text", "label"]) == expected, path
        task = ClassificationTask(path, get_preset("bert-tiny"), None, options)
        assert task.labels == reference.labels, path
        for split, (ids, _, labels) in reference.splits.items():
            assert task.splits[split][0] == ids and task.splits[split][2].tolist() == labels.tolist(), (path, split)
    assert read_texts(tmp_path / "topics.parquet", "text") == list(texts)
    tsv = write_pairs_tsv(tmp_path / "pairs.tsv", n=60)
    en, zh = zip(*pair_rows(60))
    pq.write_table(pa.table({"en": list(en), "zh": list(zh)}), tmp_path / "pairs.parquet")
    options = Seq2SeqConfig(source_column="en", target_column="zh", tokenizer="char")
    reference = Seq2SeqTask(tsv, get_preset("seq2seq-tiny"), None, options)
    task = Seq2SeqTask(tmp_path / "pairs.parquet", get_preset("seq2seq-tiny"), None, options)
    assert task.texts == reference.texts and task.splits == reference.splits
