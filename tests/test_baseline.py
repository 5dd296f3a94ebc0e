"""The TF-IDF + logistic regression baseline beside every classifier: its figures equal
scikit-learn run directly on the same split, a collapsed classifier is reported as behind it,
and a missing scikit-learn is a one-line hint, not a failure."""

import contextlib
import dataclasses
import json
import random
import sys

import pytest
import torch

from lmforge.data.tables import read_table
from lmforge.evaluate.baseline import MISSING_HINT, fit_baselines
from lmforge.model import build_model
from lmforge.tasks.classify import ClassificationTask, ClassifyConfig, split_rows, table_baselines


@pytest.fixture(scope="module")
def noisy_tsv(tmp_path_factory):
    """Three topics told apart by their words, with shared filler and 20% of labels flipped: a
    table on which the baselines are good but not perfect (so their figures differ)."""
    rng = random.Random(0)
    words = {"a": "cat dog horse bird fish".split(), "b": "bread soup rice tea cake".split(),
             "c": "code disk chip wire screen".split()}
    filler = "the a of and to in is it that was".split()
    rows = []
    for _ in range(300):
        label = rng.choice("abc")
        text = " ".join(rng.choice(words[label] if rng.random() < 0.3 else filler) for _ in range(8))
        rows.append((text, rng.choice("abc") if rng.random() < 0.2 else label))
    path = tmp_path_factory.mktemp("tables") / "noisy.tsv"
    path.write_text("text\tlabel\n" + "".join(f"{t}\t{lab}\n" for t, lab in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def task(noisy_tsv, tiny_encoder_dir):
    from lmforge.api import load_model
    _, config, tok = load_model(tiny_encoder_dir)
    return ClassificationTask(noisy_tsv, config, tok, ClassifyConfig()), config


def test_baseline_equals_scikit_learn_on_the_same_split(task, noisy_tsv):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score
    obj, _ = task
    figures, line = obj.baseline()
    on_table = table_baselines(noisy_tsv, ClassifyConfig(), "val")       # what the example and the benchmark use
    rows = read_table(noisy_tsv, ["text", "label"])
    split = split_rows(rows, ClassifyConfig())
    text = {s: [rows[i]["text"] for i in idx] for s, idx in split.items()}
    gold = {s: [rows[i]["label"] for i in idx] for s, idx in split.items()}
    for kind, vec in [("word", TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)),
                      ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2))]:
        clf = LogisticRegression(C=10, solver="saga", tol=1e-3, max_iter=1000, random_state=0)
        clf.fit(vec.fit_transform(text["train"]), gold["train"])
        pred = clf.predict(vec.transform(text["val"]))
        assert figures[f"baseline_{kind}_val_macro_f1"] == round(f1_score(gold["val"], pred, average="macro"), 4)
        assert figures[f"baseline_{kind}_val_accuracy"] == round(accuracy_score(gold["val"], pred), 4)
        assert on_table[kind]["macro_f1"] == pytest.approx(f1_score(gold["val"], pred, average="macro"), abs=5e-5)
        assert on_table[kind]["accuracy"] == pytest.approx(accuracy_score(gold["val"], pred), abs=5e-5)
    best = max(("word", "char"), key=lambda k: figures[f"baseline_{k}_val_macro_f1"])
    assert figures["baseline_val_macro_f1"] == figures[f"baseline_{best}_val_macro_f1"]
    assert 0.4 < figures["baseline_val_macro_f1"] < 1.0
    assert "word 1-2-grams macro-F1" in line and "character 2-5-grams macro-F1" in line


def test_a_collapsed_classifier_is_reported_behind(task, tmp_path):
    obj, config = task
    obj.baseline()
    model = build_model(dataclasses.replace(config, labels=obj.labels))
    with torch.no_grad():                                # every text gets label "a": a collapsed classifier
        model.classifier.proj.weight.zero_()
        model.classifier.proj.bias.copy_(torch.tensor([5.0, 0.0, 0.0]))
    out = obj.report(model, tmp_path, torch.device("cpu"), contextlib.nullcontext)
    assert out["test_macro_f1"] < out["baseline_test_macro_f1"]
    assert out["baseline_verdict"].startswith("the model is BEHIND the TF-IDF baseline: macro-F1 ")
    assert "likely fixes: start from a pretrained encoder" in out["baseline_verdict"]
    # the model card shows both baselines beside the model's own scores, and the verdict
    from types import SimpleNamespace
    from lmforge.card.render import baselines
    report = json.loads((tmp_path / "classification_report.json").read_text())
    rows, verdicts = baselines(SimpleNamespace(reports=[report], settings={}))
    for kind, name in [("word", "word 1-2-grams"), ("char", "character 2-5-grams")]:
        assert f"| test | {report['data']} | TF-IDF {name} + logistic regression: macro F1 | " \
               f"{out[f'baseline_{kind}_test_macro_f1']:.4f} |" in rows
    assert verdicts == ["T" + out["baseline_verdict"][1:] + "."]


def test_without_scikit_learn_a_hint_and_no_baseline(task, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)                 # import sklearn raises ImportError
    with pytest.warns(UserWarning, match=r"scikit-learn is not installed.*lmforge\[baseline\]"):
        assert fit_baselines(["a b", "c d"], ["x", "y"]) is None
    assert "pip install" in MISSING_HINT
    obj, _ = task
    assert dataclasses.replace(obj.options, baseline=False).baseline is False
    off = object.__new__(ClassificationTask)
    off.options = ClassifyConfig(baseline=False)
    assert off.baseline() is None                                      # --no-baseline: nothing fitted
