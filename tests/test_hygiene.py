"""Data hygiene in `lmforge prepare` on planted corpora, so the tests know the truth: exact and
near duplicates (`--dedup`), personal data (`--redact-pii` and the report without it), canaries
(`--canaries`, in the interface `lmforge audit canaries` reads)."""

from __future__ import annotations

import json
import random
import re
import sys

import numpy as np
import pytest

from lmforge.cli import main
from lmforge.data import dedup as dedup_module
from lmforge.data.dedup import SHINGLE_SIZE, Deduplicator, normalise
from lmforge.data.pii import PII_TYPES, PiiScanner, luhn_ok
from lmforge.data.shards import PrepareConfig, load_split, prepare
from lmforge.errors import DataError, LmforgeError
from lmforge.tokenizers import Tokenizer

from .hygiene_corpus import PII, base_paragraphs, dedup_corpus, pii_corpus

PLACEHOLDERS = {"email": "<EMAIL>", "phone": "<PHONE>", "ip": "<IP>", "card": "<CARD>"}


def _prepare(inputs, out, **kw):
    kw = {"progress": False, "tokenizer": "char", **kw}
    return prepare(PrepareConfig(inputs=[str(i) for i in inputs], out=str(out), **kw))


def _jsonl(path, texts):
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return path


def _documents(data) -> list[str]:
    """The documents of a prepared directory of one ~1 MB batch, in order: train then val, cut at <eos>."""
    tok = Tokenizer.load(data)
    ids = np.concatenate([load_split(data, "train"), load_split(data, "val")]).tolist()
    docs, start = [], 0
    for i, t in enumerate(ids):
        if t == tok.eos_id:
            docs.append(tok.decode(ids[start:i]))
            start = i + 1
    return docs


def _char_grams(text: str) -> set[str]:
    t = normalise(text) + " "
    return {t[i:i + SHINGLE_SIZE] for i in range(len(t) - SHINGLE_SIZE + 1)}


# ---- dedup ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    docs, truth = dedup_corpus()
    path = _jsonl(tmp_path_factory.mktemp("dedup") / "planted.jsonl", docs)
    return path, docs, truth


def _dropped(data) -> dict[int, tuple[str, int]]:
    rows = [json.loads(line) for line in (data / "dedup.jsonl").read_text().splitlines()]
    return {r["index"]: (r["kind"], r["duplicate_of"]) for r in rows}


def test_exact_dedup_finds_every_planted_copy_and_nothing_else(planted, tmp_path):
    path, docs, truth = planted
    meta = _prepare([path], tmp_path / "d", dedup="exact")
    dropped = _dropped(tmp_path / "d")
    assert dropped == {i: t for i, t in truth.items() if t[0] == "exact"}
    assert meta["dedup"] == {"mode": "exact", "documents": len(docs), "dropped": {"exact": 40, "near": 0},
                             "kept": len(docs) - 40}
    # the shards hold the kept documents, in order, each whole
    assert _documents(tmp_path / "d") == [d for i, d in enumerate(docs) if i not in dropped]


def test_near_dedup_precision_and_recall_at_the_documented_threshold(planted, tmp_path):
    """Planted: 60 copies with 1-3 word edits (near), 40 normalised copies (exact), 40 documents
    that share 70% of one and end like another (not duplicates). At 0.8: every exact copy, and
    near ones with the precision and recall docs/data.md reports (1.00 and 1.00). The oracle for
    each pair is the exact Jaccard similarity of the character 5-gram sets."""
    path, docs, truth = planted
    meta = _prepare([path], tmp_path / "d", dedup="near", dedup_threshold=0.8)
    dropped = _dropped(tmp_path / "d")
    assert {i: t for i, t in dropped.items() if t[0] == "exact"} == {i: t for i, t in truth.items() if t[0] == "exact"}
    near = {i: t for i, t in dropped.items() if t[0] == "near"}
    planted_near = {i: t for i, t in truth.items() if t[0] == "near"}
    hits = sum(truth.get(i) == t for i, t in near.items())
    precision, recall = hits / len(near), hits / len(planted_near)
    assert precision >= 0.95 and recall >= 0.95, (precision, recall)
    jaccard = {i: len(_char_grams(docs[i]) & _char_grams(docs[j])) / len(_char_grams(docs[i]) | _char_grams(docs[j]))
               for i, (_, j) in {**planted_near, **near}.items()}
    assert all(i in near for i in planted_near if jaccard[i] >= 0.9)      # clearly above: always found
    assert all(jaccard[i] >= 0.7 for i in near)                            # nothing clearly below is dropped
    assert meta["dedup"]["dropped"] == {"exact": 40, "near": len(near)} and meta["dedup"]["threshold"] == 0.8
    assert _documents(tmp_path / "d") == [d for i, d in enumerate(docs) if i not in dropped]


def test_a_document_fed_in_pieces_has_the_sketch_of_the_whole():
    text = " ".join(base_paragraphs(3, random.Random(1)))
    whole, parts = Deduplicator("near").sketch(), Deduplicator("near").sketch()
    whole.feed(text, last=True)
    cuts = sorted(random.Random(2).sample(range(1, len(text)), 7))    # some inside words
    for a, b in zip([0, *cuts], [*cuts, len(text)]):
        parts.feed(text[a:b], last=b == len(text))
    assert whole.hasher.digest() == parts.hasher.digest()
    assert np.array_equal(whole.minhash.hashvalues, parts.minhash.hashvalues)


def test_text_files_are_documents_and_short_ones_are_not_all_alike(tmp_path):
    (tmp_path / "in").mkdir()
    for name, text in {"a.txt": "One  Line\nof text", "b.txt": "one line of TEXT\n", "c.txt": "hi", "d.txt": "ok"}.items():
        (tmp_path / "in" / name).write_text(text, encoding="utf-8")
    meta = _prepare([tmp_path / "in"], tmp_path / "d", dedup="near")
    assert _dropped(tmp_path / "d") == {1: ("exact", 0)} and meta["dedup"]["kept"] == 3


def test_near_dedup_without_datasketch_names_the_extra(tmp_path, monkeypatch, planted):
    monkeypatch.setitem(sys.modules, "datasketch", None)
    with pytest.raises(DataError, match=r"lmforge\[audit\]"):
        _prepare([planted[0]], tmp_path / "d", dedup="near")
    assert not (tmp_path / "d").exists()


# ---- PII -----------------------------------------------------------------------------------------------
def test_luhn_against_known_card_numbers():
    assert all(luhn_ok(re.sub(r"\D", "", card)) for card in PII["card"])
    assert not any(luhn_ok(n) for n in ("4111111111111112", "79927398710"))
    assert luhn_ok("79927398713")                  # the worked example of the Luhn algorithm


def test_pii_precision_and_recall_per_type_and_nothing_else_changed():
    lines = pii_corpus()
    scanner = PiiScanner(["all"])
    out = scanner("\n".join(line for line, _, _ in lines)).split("\n")
    assert len(out) == len(lines)
    for kind in PII_TYPES:
        planted = [i for i, (_, k, _) in enumerate(lines) if k == kind]
        found = [i for i, got in enumerate(out) if PLACEHOLDERS[kind] in got]
        hits = [i for i in found if lines[i][1] == kind and out[i] == lines[i][2]]
        precision, recall = len(hits) / max(len(found), 1), len(hits) / len(planted)
        assert (precision, recall) == (1.0, 1.0), (kind, [out[i] for i in found if i not in hits],
                                                   [lines[i][0] for i in planted if i not in hits])
        assert scanner.found[kind] == scanner.redacted[kind] == len(planted)
    assert out == [expected for _, _, expected in lines]      # byte for byte, placeholders aside


def test_prepare_redacts_the_types_asked_and_reports_the_rest(tmp_path):
    lines = pii_corpus()
    path = _jsonl(tmp_path / "pii.jsonl", [line for line, _, _ in lines])
    counts = {kind: len(PII[kind]) for kind in PII_TYPES}
    meta = _prepare([path], tmp_path / "d", redact_pii=["email,card"], val_fraction=0.0)
    assert meta["pii"] == {"found": counts, "redacted": {"email": counts["email"], "card": counts["card"]}}
    keep = {"phone", "ip"}
    assert _documents(tmp_path / "d") == [line if kind in keep else expected for line, kind, expected in lines]
    meta = _prepare([path], tmp_path / "plain", val_fraction=0.0)          # no --redact-pii: counted, unchanged
    assert meta["pii"] == {"found": counts, "redacted": {}}
    assert _documents(tmp_path / "plain") == [line for line, _, _ in lines]


def test_a_trained_tokenizer_sees_the_redacted_text_and_the_counts_are_of_one_pass(tmp_path):
    lines = pii_corpus()
    path = _jsonl(tmp_path / "pii.jsonl", [line for line, _, _ in lines])
    counts = {kind: len(PII[kind]) for kind in PII_TYPES}
    for redact in ([], ["all"]):
        meta = _prepare([path], tmp_path / f"d{len(redact)}", tokenizer="bpe", vocab_size=300, val_fraction=0.0,
                        redact_pii=redact)
        assert meta["pii"]["found"] == counts
    assert _documents(tmp_path / "d1") == [expected for _, _, expected in lines]
    assert _documents(tmp_path / "d0") == [line for line, _, _ in lines]


def test_prepare_prints_the_hygiene_counts(tmp_path, capsys):
    path = _jsonl(tmp_path / "c.jsonl", ["mail ann@example.com now", "plain text", "plain  TEXT"])
    assert main(["prepare", str(path), "--out", str(tmp_path / "d"), "--tokenizer", "char", "--no-progress",
                 "--dedup", "exact", "--redact-pii", "email"]) == 0
    out = capsys.readouterr().out
    assert "dedup (exact): kept 2 of 3 documents, dropped 1 exact and 0 near duplicates" in out
    assert "personal data found: 1 email, 0 card, 0 ip, 0 phone; redacted: 1 email" in out


# ---- canaries ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def paragraphs(tmp_path_factory):
    return _jsonl(tmp_path_factory.mktemp("canaries") / "paragraphs.jsonl", base_paragraphs(150, random.Random(3)))


def _count(data, split: str, text: str) -> int:
    return Tokenizer.load(data).decode(load_split(data, split).tolist()).count(text)


def test_canaries_follow_the_interface_and_stay_out_of_validation(paragraphs, tmp_path):
    meta = _prepare([paragraphs], tmp_path / "d", canaries=2, canary_repeats="1,3,5", seed=7, val_fraction=0.2)
    spec = json.loads((tmp_path / "d" / "canaries.json").read_text())
    assert spec["format"] == "the secret code is {secret}" and spec["alphabet"] == "0123456789" and spec["length"] == 9
    assert [(c["id"], c["repeats"], c["inserted"], c["kept"]) for c in spec["canaries"]] == [
        ("c0", 1, 1, 1), ("c1", 1, 1, 1), ("c2", 3, 3, 3), ("c3", 3, 3, 3), ("c4", 5, 5, 5), ("c5", 5, 5, 5)]
    assert all(re.fullmatch(r"[0-9]{9}", c["secret"]) for c in spec["canaries"])
    assert meta["canaries"] == {"count": 6, "documents": 18}
    train = Tokenizer.load(tmp_path / "d").decode(load_split(tmp_path / "d", "train").tolist())
    for c in spec["canaries"]:
        text = spec["format"].format(secret=c["secret"])
        assert train.count(text) == c["repeats"] and _count(tmp_path / "d", "val", text) == 0
    places = [m.start() / len(train) for m in re.finditer("the secret code is", train)]
    assert min(places) < 0.3 and max(places) > 0.7                          # spread among the documents
    again = _prepare([paragraphs], tmp_path / "again", canaries=2, canary_repeats=[1, 3, 5], seed=7, val_fraction=0.2)
    assert again == meta and json.loads((tmp_path / "again" / "canaries.json").read_text()) == spec   # seeded


def test_exact_dedup_keeps_one_copy_of_each_canary(paragraphs, tmp_path):
    meta = _prepare([paragraphs], tmp_path / "d", canaries=1, canary_repeats="1,10", dedup="exact")
    spec = json.loads((tmp_path / "d" / "canaries.json").read_text())
    assert [(c["inserted"], c["kept"]) for c in spec["canaries"]] == [(1, 1), (10, 1)]
    assert meta["dedup"]["dropped"]["exact"] == 9 and meta["canaries"] == {"count": 2, "documents": 11}
    rows = [json.loads(line) for line in (tmp_path / "d" / "dedup.jsonl").read_text().splitlines()]
    assert {r["canary"] for r in rows} == {"c1"} and len(rows) == 9
    for c in spec["canaries"]:
        assert _count(tmp_path / "d", "train", spec["format"].format(secret=c["secret"])) == 1


# ---- bad input -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, message", [
    ({"redact_pii": ["email,fax"]}, "unknown PII type"),
    ({"dedup_threshold": 0.0}, r"dedup_threshold=0.0 must be in \(0, 1\]"),
    ({"dedup_threshold": 1.5}, r"must be in \(0, 1\]"),
    ({"canaries": -1}, "canaries=-1 must be at least 0"),
    ({"canary_repeats": "1,x"}, "canary-repeats"),
    ({"canary_repeats": "0"}, "at least 1"),
    ({"dedup": "fuzzy"}, "dedup='fuzzy' is not one of none, exact, near"),
])
def test_bad_hygiene_options_are_one_line_errors(kw, message):
    with pytest.raises(LmforgeError, match=message) as e:
        PrepareConfig(inputs=["x.txt"], **kw)
    assert "\n" not in str(e.value)


def test_bad_hygiene_flags_exit_2_with_one_line(tmp_path, capsys):
    assert main(["prepare", "x.txt", "--out", str(tmp_path / "d"), "--canary-repeats", "1,ten"]) == 2
    assert main(["prepare", "x.txt", "--out", str(tmp_path / "d"), "--redact-pii", "email,ssn"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "canary-repeats" in err[0] and "ssn" in err[1]


def test_the_defaults_change_nothing_but_count(tmp_path, planted):
    meta = _prepare([planted[0]], tmp_path / "d")
    assert not (tmp_path / "d" / "dedup.jsonl").exists() and not (tmp_path / "d" / "canaries.json").exists()
    assert "dedup" not in meta and "canaries" not in meta and meta["pii"]["redacted"] == {}
    assert dedup_module.DEDUP_MODES[0] == "none" and PrepareConfig().dedup == "none"
