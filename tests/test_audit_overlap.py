"""`lmforge audit overlap`: word 13-grams of an evaluation file found in a prepared training shard,
with planted contamination — examples copied from training documents (whole, or inside new text),
one copied from the held-out split (not training data), and new ones."""

from __future__ import annotations

import json

import pytest

from lmforge import audit
from lmforge.cli import main
from lmforge.data.shards import PrepareConfig, prepare

from .audit_corpora import random_documents


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("overlap")
    docs = [d for d in random_documents(400, seed=3) if len(d.split()) >= 14][:60]
    (root / "train.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs), encoding="utf-8")
    prepare(PrepareConfig(inputs=[str(root / "train.jsonl")], out=str(root / "data"), tokenizer="bpe", vocab_size=300,
                          val_fraction=0.05, progress=False))
    fresh = [d for d in random_documents(400, seed=4) if len(d.split()) >= 14]
    words = docs[10].split()
    examples = [fresh[0],                                       # 0 new
                docs[3].upper(),                                # 1 a training document, case changed
                fresh[1] + " " + " ".join(words[:13]) + ", " + fresh[2],   # 2 13 words of one inside new text
                fresh[3],                                       # 3 new
                docs[-1],                                       # 4 the last document: held out (val.bin)
                "too short to hold a 13-gram"]                  # 5
    (root / "eval.jsonl").write_text("".join(json.dumps({"question": e}) + "\n" for e in examples), encoding="utf-8")
    (root / "eval.txt").write_text("\n".join(examples) + "\n", encoding="utf-8")
    return root


def test_planted_examples_are_found_exactly(planted):
    result = audit.overlap(str(planted / "data"), against=str(planted / "eval.jsonl"), text_field="question",
                           progress=False)
    assert result.contaminated == [1, 2]
    by_index = {e.index: e for e in result.examples}
    assert by_index[1].share == 1.0 and by_index[2].found == 1 and 0 < by_index[2].share < 0.2
    assert by_index[5].ngrams == 0 and "(1 shorter than 13 words, not checked)" in result.summary
    assert audit.overlap(str(planted / "data"), against=str(planted / "eval.txt"), n=13,
                         progress=False).contaminated == [1, 2]              # a text file: one example per line
    assert 4 in audit.overlap(str(planted / "data"), against=str(planted / "eval.txt"), n=1,
                              progress=False).contaminated   # its words, each, are in the training documents


def test_cli_lists_the_contaminated_examples(planted, capsys):
    assert main(["audit", "overlap", str(planted / "data"), "--against", str(planted / "eval.txt"),
                 "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "2 of 6 examples share a 13-gram with the training data" in out and out.count("'") >= 4
    assert main(["audit", "overlap", str(planted / "data"), "--against", str(planted / "eval.txt"), "--json",
                 "--no-progress"]) == 0
    assert json.loads(capsys.readouterr().out)["contaminated"] == [1, 2]
    assert main(["audit", "overlap", str(planted / "data"), "--no-progress"]) == 2
    assert "--against FILE" in capsys.readouterr().err
    assert main(["audit", "overlap", str(planted / "data"), "--against", str(planted / "missing.txt")]) == 2
    assert "missing.txt does not exist" in capsys.readouterr().err
