"""The pretrain -> fine-tune recipe (examples/pretrain_finetune_topics.py) end to end on a tiny
table: the unlabelled text leaves the held-out rows out, the encoder is pretrained with the
masked-LM objective and fine-tuned into a classifier, and a bad input is one line, exit 2; the
second benchmark table (examples/debian_sections_table.py) is built from apt's Packages files."""

import importlib.util
import json
from pathlib import Path

import pytest

from lmforge.tasks.classify import ClassifyConfig, split_rows, table_baselines, training_texts
from lmforge.data.tables import read_table

from .conftest import write_topics_csv

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "pretrain_finetune_topics.py"


def recipe():
    spec = importlib.util.spec_from_file_location("recipe", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_training_texts_leave_out_the_held_out_rows(tmp_path):
    table = write_topics_csv(tmp_path / "t.csv")
    rows = read_table(table, ["text", "label"])
    split = split_rows(rows, ClassifyConfig())
    texts = training_texts(table)
    assert texts == [rows[i]["text"] for i in split["train"]]
    assert len(texts) == len(split["train"]) < len(rows) and split["val"] and split["test"]


def test_pretrain_then_finetune_recipe_runs_and_reports(tmp_path, capsys):
    table = write_topics_csv(tmp_path / "t.csv")
    out = tmp_path / "recipe"
    argv = ["--data", str(table), "--out", str(out), "--pretrain-steps", "4", "--finetune-steps", "4",
            "--batch-size", "4", "--vocab-size", "300", "--device", "cpu", "--from-scratch"]
    assert recipe().main(argv) == 0
    printed = capsys.readouterr().out
    assert "masked-LM validation perplexity" in printed and "pretrain -> fine-tune (lmforge)" in printed
    encoder = json.loads((out / "encoder" / "config.json").read_text())
    classifier = json.loads((out / "classifier" / "config.json").read_text())
    assert encoder["family"] == classifier["family"] == "encoder" and classifier["labels"]
    report = json.loads((out / "recipe_report.json").read_text())["results"]
    assert 0.0 <= report["pretrain -> fine-tune (lmforge)"]["test_macro_f1"] <= 1.0
    assert "from scratch, same shape and steps (lmforge)" in report
    from sklearn.metrics import f1_score                      # the ensemble's score, against scikit-learn's
    from lmforge.api import load
    from lmforge.tasks.classify import predict_proba
    rows = read_table(table, ["text", "label"])
    test = [rows[i] for i in split_rows(rows, ClassifyConfig())["test"]]
    members = [load(out / name, device="cpu") for name in ("classifier", "classifier-2")]
    mean = sum(predict_proba(m.module, m.tokenizer, [r["text"] for r in test]) for m in members) / 2
    labels = members[0].config.labels
    oracle = f1_score([r["label"] for r in test], [labels[i] for i in mean.argmax(-1)], average="macro")
    assert abs(report["pretrain -> 2 fine-tunes averaged (lmforge)"]["test_macro_f1"] - oracle) < 1e-4
    baselines = table_baselines(table, ClassifyConfig())                 # scikit-learn is a test extra
    assert report["TF-IDF character 2-5-grams + logistic regression"]["test_macro_f1"] == baselines["char"]["macro_f1"]
    assert recipe().main(argv) == 2                       # --out holds the run: refused without --overwrite
    assert "--overwrite" in capsys.readouterr().err
    assert recipe().main(["--data", str(tmp_path / "missing.tsv"), "--out", str(tmp_path / "x")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_the_benchmark_tfidf_arm_reports_the_table_baselines(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location(
        "bench_pf", Path(__file__).resolve().parents[1] / "benchmarks" / "pretrain_finetune.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    table = write_topics_csv(tmp_path / "t.csv")
    assert module.main(["--data", str(table), "--arms", "tfidf", "--out", str(tmp_path / "bench")]) == 0
    arm = json.loads((tmp_path / "bench" / "tfidf.json").read_text())
    want = table_baselines(table, ClassifyConfig())
    assert {name: r["test_macro_f1"] for name, r in arm.items()} == {
        "TF-IDF word 1-2-grams + logistic regression": want["word"]["macro_f1"],
        "TF-IDF character 2-5-grams + logistic regression": want["char"]["macro_f1"]}
    assert "TF-IDF character 2-5-grams + logistic regression" in capsys.readouterr().out


def test_the_debian_sections_table_is_built_from_packages_files(tmp_path):
    """examples/debian_sections_table.py on a small Packages file: synopsis -> section, the
    section's archive prefix dropped, a synopsis seen twice kept once, the top sections only."""
    import csv
    lists = tmp_path / "lists"
    lists.mkdir()
    stanzas = [("a", "Python bindings for foo", "python"), ("b", "Python bindings for bar", "python"),
               ("c", "network daemon", "contrib/net"), ("d", "network daemon", "net"), ("e", "a game", "games"),
               ("f", "another tool", "net")]
    (lists / "x_main_binary-amd64_Packages").write_text(
        "\n\n".join(f"Package: {p}\nVersion: 1\nDescription: {d}\nSection: {s}" for p, d, s in stanzas) + "\n")
    spec = importlib.util.spec_from_file_location(
        "debian_sections", Path(__file__).resolve().parents[1] / "examples" / "debian_sections_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "t.tsv"
    assert module.main(["--lists", str(lists), "--out", str(out), "--sections", "2"]) == 0
    rows = sorted((r["text"], r["label"]) for r in csv.DictReader(out.open(), delimiter="\t"))
    assert rows == [("Python bindings for bar", "python"), ("Python bindings for foo", "python"),
                    ("another tool", "net"), ("network daemon", "net")]
    with pytest.raises(SystemExit):
        module.main(["--lists", str(tmp_path / "none"), "--out", str(out)])


def test_the_sentiment_table_is_built_from_the_vader_sdist(tmp_path, capsys):
    """examples/sentiment_table.py on a source package shaped like vaderSentiment's: the nested
    tarball's rated snippets -> positive / negative by the rating's sign, rating 0 and a repeated
    snippet left out; an existing --out is kept without --overwrite; a wrong file is one line."""
    import csv
    import io
    import tarfile

    def add(tar, name, data):
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))

    snippets = "1\t2.5\tA  gorgeous film.\r\n2\t-1.2\tDull and tepid.\r\n3\t0\tIt is a film.\r\n4\t0.1\ta gorgeous film.\r\n"
    inner = io.BytesIO()
    with tarfile.open(fileobj=inner, mode="w:gz") as tar:
        add(tar, "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt", snippets.encode())
    sdist = tmp_path / "vaderSentiment-3.3.2.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        add(tar, "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz", inner.getvalue())
    spec = importlib.util.spec_from_file_location(
        "sentiment_table", Path(__file__).resolve().parents[1] / "examples" / "sentiment_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "s.tsv"
    assert module.main(["--sdist", str(sdist), "--out", str(out)]) == 0
    rows = sorted((r["text"], r["label"]) for r in csv.DictReader(out.open(), delimiter="\t"))
    assert rows == [("A gorgeous film.", "positive"), ("Dull and tepid.", "negative")]
    assert module.main(["--sdist", str(sdist), "--out", str(out)]) == 2
    assert "pass --overwrite" in capsys.readouterr().err
    for wrong in (out, tmp_path / "missing.tar.gz"):
        assert module.main(["--sdist", str(wrong), "--out", str(tmp_path / "other.tsv")]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: --sdist {wrong}") and err.count("\n") == 1
    assert not (tmp_path / "other.tsv").exists()
