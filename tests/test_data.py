import numpy as np
import pytest

from lmforge.data import reading
from lmforge.data.shards import PrepareConfig, load_meta, load_split, prepare, token_dtype
from lmforge.errors import DataError
from lmforge.tokenizers import Tokenizer


def _prepare(inputs, out, **kw):
    kw.setdefault("progress", False)
    kw.setdefault("tokenizer", "char")
    return prepare(PrepareConfig(inputs=[str(i) for i in inputs], out=str(out), **kw))


def test_text_file_to_shards_with_split_and_meta(tmp_path, corpus_file):
    meta = _prepare([corpus_file], tmp_path / "d", val_fraction=0.1)
    train, val = load_split(tmp_path / "d", "train"), load_split(tmp_path / "d", "val")
    assert train.dtype == np.uint16 and meta["dtype"] == "uint16"
    assert len(train) == meta["train_tokens"] and len(val) == meta["val_tokens"]
    assert 0.08 < len(val) / (len(train) + len(val)) < 0.12
    assert meta["bytes"] == corpus_file.stat().st_size
    assert meta["bytes_per_token"] == pytest.approx(meta["bytes"] / (len(train) + len(val)), rel=1e-3)
    tok = Tokenizer.load(tmp_path / "d")
    text = corpus_file.read_text()
    # the shards are exactly the encoded corpus followed by <eos>, split train | val
    all_ids = np.concatenate([train, val]).tolist()
    assert sorted(all_ids) == sorted(tok.encode(text) + [tok.eos_id])
    assert tok.decode(train[:200].tolist()) == text[:200]


def test_streaming_in_small_blocks_gives_the_same_tokens(tmp_path, corpus_file, monkeypatch):
    _prepare([corpus_file], tmp_path / "big", val_fraction=0.0)
    monkeypatch.setattr(reading, "BLOCK", 1000)            # read 1 KB at a time, split multi-byte chars
    _prepare([corpus_file], tmp_path / "small", val_fraction=0.0, tokenizer=str(tmp_path / "big"))
    assert np.array_equal(load_split(tmp_path / "big", "train"), load_split(tmp_path / "small", "train"))


def test_directory_and_jsonl_inputs(tmp_path):
    d = tmp_path / "docs"
    (d / "sub").mkdir(parents=True)
    (d / "a.txt").write_text("first document\n")
    (d / "sub" / "b.md").write_text("second document 世界\n")
    (d / "image.png").write_bytes(b"\x89PNG")
    jl = tmp_path / "c.jsonl"
    jl.write_text('{"body": "third"}\n\n{"body": "fourth 🎉"}\n')
    meta = _prepare([d, jl], tmp_path / "out", val_fraction=0.0, text_field="body")
    assert [p.split("/")[-1] for p in meta["sources"]] == ["a.txt", "b.md", "c.jsonl"]
    tok = Tokenizer.load(tmp_path / "out")
    ids = load_split(tmp_path / "out", "train").tolist()
    docs = tok.decode(ids, skip_special_tokens=False).split("<eos>")
    assert docs == ["first document\n", "second document 世界\n", "third", "fourth 🎉", ""]


def test_uint32_when_vocab_exceeds_uint16():
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32


def test_bpe_prepare_reports_compression(tmp_path, corpus_file):
    meta = _prepare([corpus_file], tmp_path / "b", tokenizer="bpe", vocab_size=600)
    assert meta["vocab_size"] == 600 and meta["bytes_per_token"] > 2.0


def test_undecodable_bytes_are_replaced_with_a_warning(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café au lait\n".encode("latin-1"))
    with pytest.warns(UserWarning, match=r"replaced 1 undecodable byte.*latin1.txt.*--errors strict"):
        meta = _prepare([bad], tmp_path / "o", val_fraction=0.0)
    assert meta["replaced_byte_sequences"] == 1
    tok = Tokenizer.load(tmp_path / "o")
    assert tok.decode(load_split(tmp_path / "o", "train").tolist()) == "caf\ufffd au lait\n"


def test_undecodable_bytes_rejected_in_strict_mode(tmp_path):
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("café\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1.txt is not valid UTF-8: undecodable byte 0xe9 at byte offset 3"):
        _prepare([bad], tmp_path / "o", errors="strict")


def test_bad_inputs(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        _prepare([tmp_path / "nope.txt"], tmp_path / "o")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(DataError, match="corpus is empty"):
        _prepare([empty], tmp_path / "o")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "x.png").write_bytes(b"1")
    with pytest.raises(DataError, match="has no text files"):
        _prepare([tmp_path / "bin"], tmp_path / "o")
    jl = tmp_path / "bad.jsonl"
    jl.write_text('{"text": "ok"}\n{"text": broken\n')
    with pytest.raises(DataError, match=r"bad.jsonl:2 is not valid JSON"):
        _prepare([jl], tmp_path / "o")
    jl.write_text('{"content": "x"}\n')
    with pytest.raises(DataError, match=r"no 'text' field \(found: \['content'\]\).*--text-field"):
        _prepare([jl], tmp_path / "o")
    with pytest.raises(DataError, match="val_fraction"):
        _prepare([jl], tmp_path / "o", val_fraction=1.5)


def test_missing_data_dir_errors(tmp_path):
    with pytest.raises(DataError, match="lmforge prepare"):
        load_meta(tmp_path / "nothing")
    (tmp_path / "x").mkdir()
    with pytest.raises(DataError, match="no meta.json"):
        load_meta(tmp_path / "x")


@pytest.mark.parametrize("name", ["t.tsv", "t.csv"])
def test_write_table_reads_back_whole(tmp_path, name):
    """lmforge.data.tables.write_table: quotes and commas (and in a CSV, tabs and line breaks)
    inside a field survive read_table; a TSV field with a tab is refused, and nothing is written."""
    from lmforge.data.tables import read_table, write_table
    rows = [('say "hi", then go', "a"), ("plain", "b")] + ([("two\tcolumns\nand lines", "c")] if name.endswith("csv")
                                                           else [])
    path = write_table(tmp_path / name, ["text", "label"], rows)
    assert [(r["text"], r["label"]) for r in read_table(path, ["text", "label"])] == rows
    assert [p.name for p in tmp_path.iterdir()] == [name]
    if name.endswith("tsv"):
        with pytest.raises(DataError, match="row 1 has a field with a tab"):
            write_table(tmp_path / "bad.tsv", ["text", "label"], [("a\tb", "x")])
        assert [p.name for p in tmp_path.iterdir()] == [name]
