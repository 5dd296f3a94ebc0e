"""Text classification: metrics against hand-computed values, table reading and its errors,
fine-tuning from an encoder and from a decoder, `lmforge classify`."""

import dataclasses
import json

import pytest
import torch

from lmforge.api import load
from lmforge.cli import main
from lmforge.config import get_preset
from lmforge.data.classify import encode_for_classification
from lmforge.tasks.classify import ClassificationTask, ClassifyConfig, class_logits, ensemble_split_scores
from lmforge.data.tables import read_table, split_indices
from lmforge.errors import ConfigError, DataError, LmforgeError
from lmforge.evaluate.classification import classification_metrics
from lmforge.train.finetune import FinetuneConfig, finetune

from .conftest import tiny_train_config


def test_metrics_equal_hand_computed_values():
    # true  a a a b b c      confusion (rows true, cols predicted):  a [2 1 0]
    # pred  a a b b c c                                              b [0 1 1]
    #                                                                c [0 0 1]
    m = classification_metrics([0, 0, 0, 1, 1, 2], [0, 0, 1, 1, 2, 2], ["a", "b", "c"])
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["accuracy"] == round(4 / 6, 4)
    pc = m["per_class"]
    assert (pc["a"]["precision"], pc["a"]["recall"], pc["a"]["f1"]) == (1.0, round(2 / 3, 4), 0.8)
    assert (pc["b"]["precision"], pc["b"]["recall"], pc["b"]["f1"]) == (0.5, 0.5, 0.5)
    assert (pc["c"]["precision"], pc["c"]["recall"], pc["c"]["f1"]) == (0.5, 1.0, round(2 / 3, 4))
    assert [pc[k]["support"] for k in "abc"] == [3, 2, 1]
    assert m["macro_precision"] == round(2 / 3, 4) and m["macro_recall"] == round((2 / 3 + 0.5 + 1) / 3, 4)
    assert m["macro_f1"] == round((0.8 + 0.5 + 2 / 3) / 3, 4)
    never = classification_metrics([0, 1], [0, 0], ["x", "y"])          # y is never predicted: precision 0, not NaN
    assert never["per_class"]["y"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}


def test_tables_csv_tsv_jsonl_and_their_errors(tmp_path):
    tsv = tmp_path / "t.tsv"
    tsv.write_text('label\ttext\npos\t"quoted" stays as typed\nneg\t\n\tno label\nneg\tfine\n')
    with pytest.warns(UserWarning, match=r"skipped 2 row\(s\) of .*t.tsv with an empty.*lines 3, 4"):
        rows = read_table(tsv, ["text", "label"])
    assert rows == [{"text": '"quoted" stays as typed', "label": "pos"}, {"text": "fine", "label": "neg"}]
    csv_ = tmp_path / "t.csv"
    csv_.write_text('review,stars\n"a, b",5\n')
    assert read_table(csv_, ["review", "stars"]) == [{"review": "a, b", "stars": "5"}]
    with pytest.raises(DataError, match=r"has no column 'text' \(columns found: review, stars\); pass --text-column"):
        read_table(csv_, ["text", "stars"], (), {"text": "--text-column"})
    jl = tmp_path / "t.jsonl"
    jl.write_text('{"text": "x", "label": 1}\n\n{"text": "y", "label": 0}\n')
    assert [r["label"] for r in read_table(jl, ["text", "label"])] == ["1", "0"]
    jl.write_text('{"text": "x", "label": 1}\n[1, 2]\n')
    with pytest.raises(DataError, match=r"t.jsonl:2 is a JSON list"):
        read_table(jl, ["text", "label"])
    (tmp_path / "t.xlsx").write_text("")
    with pytest.raises(DataError, match="unknown table format '.xlsx'"):
        read_table(tmp_path / "t.xlsx", ["text"])


def test_stratified_split_is_seeded():
    labels = ["a"] * 50 + ["b"] * 10
    s1 = split_indices(60, 0.2, 0.1, seed=0, strata=labels)
    assert s1 == split_indices(60, 0.2, 0.1, seed=0, strata=labels) != split_indices(60, 0.2, 0.1, seed=1,
                                                                                       strata=labels)
    assert sorted(s1["train"] + s1["val"] + s1["test"]) == list(range(60))
    assert sum(labels[i] == "b" for i in s1["val"]) == 2 and sum(labels[i] == "b" for i in s1["test"]) == 1
    with pytest.raises(DataError, match="validation split is empty"):
        split_indices(3, 0.1, 0.0, seed=0)


def test_classification_data_errors(tmp_path, tiny_encoder_dir):
    from lmforge.api import load_model
    _, config, tok = load_model(tiny_encoder_dir)
    one = tmp_path / "one.csv"
    one.write_text("text,label\nhello,pos\nworld,pos\n")
    with pytest.raises(DataError, match=r"single label \('pos'\).*at least two classes"):
        ClassificationTask(one, config, tok)
    with pytest.raises(DataError, match=r"no column 'sentence' \(columns found: text, label\); pass --text-column"):
        ClassificationTask(one, config, tok, ClassifyConfig(text_column="sentence"))
    with pytest.raises(ConfigError, match="classification needs an encoder or a decoder"):
        ClassificationTask(one, get_preset("seq2seq-tiny"), tok)


def test_encoding_layouts_and_class_weights(tmp_path, tiny_encoder_dir):
    from lmforge.api import load_model
    _, config, tok = load_model(tiny_encoder_dir)
    ids, types, cut = encode_for_classification(tok, "encoder", ["the class"], ["a module"], 64)
    a, b = tok.encode("the class"), tok.encode("a module")
    assert ids[0] == [tok.bos_id] + a + [tok.eos_id] + b + [tok.eos_id] and cut == 0
    assert types[0] == [0] * (len(a) + 2) + [1] * (len(b) + 1)
    ids, _, cut = encode_for_classification(tok, "decoder", ["the class " * 20], None, 8)
    assert len(ids[0]) == 8 and ids[0][-1] == tok.eos_id and cut == 1
    skewed = tmp_path / "skewed.csv"
    skewed.write_text("text,label\n" + "the a,x\n" * 30 + "the b,y\n" * 10)
    obj = ClassificationTask(skewed, config, tok, ClassifyConfig(class_weights=True, test_fraction=0.0))
    counts = torch.bincount(obj.splits["train"][2])
    torch.testing.assert_close(obj.weights, counts.sum() / (2 * counts.float()))      # inverse frequency


def test_label_smoothing_softens_the_target(tiny_encoder_dir, topics_csv):
    from lmforge.api import load_model
    from lmforge.errors import OptionError
    from lmforge.model import build_model
    _, config, tok = load_model(tiny_encoder_dir)
    task = ClassificationTask(topics_csv, config, tok, ClassifyConfig(label_smoothing=0.2))
    batch = task.collate("train", torch.arange(8))
    torch.manual_seed(0)
    clf = build_model(dataclasses.replace(config, labels=task.labels)).eval()
    logp = class_logits(clf, batch).float().log_softmax(-1)
    by_hand = 0.8 * -logp.gather(1, batch["y"][:, None]).mean() + 0.2 * -logp.mean()     # (1-e) CE + e uniform
    torch.testing.assert_close(task.loss(clf, batch), by_hand)
    with pytest.raises(OptionError, match="label_smoothing"):
        ClassifyConfig(label_smoothing=1.0)


def test_training_batches_grouped_by_length(tmp_path, tiny_encoder_dir):
    from lmforge.api import load_model
    _, config, tok = load_model(tiny_encoder_dir)
    table = tmp_path / "lengths.csv"
    words = [10 if i % 10 == 0 else 1 + i % 3 for i in range(200)]              # most texts short, a few long
    table.write_text("text,label\n" + "".join(f"{'word ' * w},{'ab'[i % 2]}\n" for i, w in enumerate(words)))
    grouped = ClassificationTask(table, config, tok, ClassifyConfig(test_fraction=0.0, group_by_length=True))
    plain = ClassificationTask(table, config, tok, ClassifyConfig(test_fraction=0.0))

    def padded_tokens(task, split="train"):
        gen = torch.Generator().manual_seed(0)
        return sum(task.collate(split, task.sample(split, 8, gen))["x"].numel() for _ in range(50))
    assert padded_tokens(grouped) < 0.5 * padded_tokens(plain)
    assert padded_tokens(grouped, "val") == padded_tokens(plain, "val")      # evaluation draws as before
    n = len(grouped.splits["train"][0])
    gen = torch.Generator().manual_seed(1)
    counts = torch.bincount(torch.cat([grouped.sample("train", 8, gen) for _ in range(5000)]), minlength=n).float()
    assert counts.min() > 0.6 * counts.mean() and counts.max() < 1.4 * counts.mean()     # every row as likely
    short = grouped.lengths <= grouped.lengths.median()
    assert float(counts[short].mean()) == pytest.approx(float(counts[~short].mean()), rel=0.05)   # short, long alike


@pytest.fixture(scope="module")
def encoder_classifier(tmp_path_factory, tiny_encoder_dir, topics_csv):
    out = tmp_path_factory.mktemp("runs") / "topics"
    cfg = tiny_train_config(topics_csv, out, max_steps=60, eval_interval=30, lr=2e-3, batch_size=16)
    summary = finetune(FinetuneConfig(model_dir=str(tiny_encoder_dir), task="classify"), cfg, ClassifyConfig())
    return out, summary


def test_classifier_from_an_encoder(encoder_classifier, tiny_encoder_dir):
    out, summary = encoder_classifier
    assert summary["test_macro_f1"] >= 0.9 and summary["val_accuracy"] >= 0.9        # an easy task, learnt
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    baseline = [r for r in rows if r["kind"] == "baseline"]                            # the TF-IDF baseline, logged
    assert len(baseline) == 1 and baseline[0]["step"] == 0 and "baseline_char_val_macro_f1" in baseline[0]
    assert summary["baseline_val_macro_f1"] == baseline[0]["baseline_val_macro_f1"]
    assert "baseline_test_macro_f1" in summary and "TF-IDF baseline" in summary["baseline_verdict"]
    report = json.loads((out / "classification_report.json").read_text())
    assert report["split"] == "test" and report["labels"] == ["animals", "food", "tech"]
    assert sum(map(sum, report["confusion_matrix"])) == report["examples"] == 24
    assert (out / "confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"
    lm = load(out, device="cpu")
    assert lm.config.labels == ["animals", "food", "tech"]                             # all inference needs
    r = lm.classify("I think the soup is next to the bread")
    assert r["label"] == "food" and abs(sum(r["probs"].values()) - 1) < 1e-5
    base = load(tiny_encoder_dir, device="cpu").module.state_dict()
    tuned = lm.module.state_dict()
    assert torch.equal(base["mlm_head.dense.weight"], tuned["mlm_head.dense.weight"])  # frozen: unused by the task
    assert lm.config.pool_method == "mean" and torch.equal(base["pooler.dense.weight"], tuned["pooler.dense.weight"])
    x = torch.tensor([[5, 6, 7, 8, 0, 0]])
    valid = torch.tensor([[1, 1, 1, 1, 0, 0]], dtype=torch.bool)
    with torch.no_grad():                                    # the head sees the mean over the real tokens
        h = lm.module(x, key_valid=valid, head="hidden")
        mean = h[:, :4].mean(1)
        torch.testing.assert_close(lm.module(x, key_valid=valid, head="classify"), lm.module.classifier(mean))


def test_fine_tune_chooses_the_pooling(tmp_path, tiny_encoder_dir, topics_csv):
    """An encoder lmforge pretrains pools by mean (its [CLS] pooler is never trained); --pooling cls
    at fine-tune time classifies the pooler's output for the first token instead, and that is
    exactly the vector the head sees."""
    assert load(tiny_encoder_dir, device="cpu").config.pool_method == "mean"
    out = tmp_path / "cls"
    cfg = tiny_train_config(topics_csv, out, max_steps=30, eval_interval=30, lr=2e-3, batch_size=16, pooling="cls")
    finetune(FinetuneConfig(model_dir=str(tiny_encoder_dir), task="classify"), cfg, ClassifyConfig(baseline=False))
    m = load(out, device="cpu").module
    assert m.config.pool_method == "cls"
    x = torch.tensor([[5, 6, 7, 8, 0, 0], [9, 10, 11, 12, 13, 14]])
    valid = torch.tensor([[1, 1, 1, 1, 0, 0], [1] * 6], dtype=torch.bool)
    with torch.no_grad():
        h = m(x, key_valid=valid, head="hidden")
        torch.testing.assert_close(m(x, key_valid=valid, head="classify"), m.classifier(m.pooler(h[:, 0])))


def test_classifier_from_a_decoder(tmp_path, tiny_model_dir, topics_csv):
    cfg = tiny_train_config(topics_csv, tmp_path / "gpt-topics", max_steps=200, eval_interval=200, lr=3e-3,
                            batch_size=16)
    with pytest.warns(UserWarning, match="longer than the model's context of 32 tokens and were truncated"):
        summary = finetune(FinetuneConfig(model_dir=str(tiny_model_dir), task="classify"), cfg)
    assert summary["test_accuracy"] > 0.6         # chance is 1/3; 200 steps reach 0.83-1.0 over seeds (80 gave 0.42-0.92)
    lm = load(tmp_path / "gpt-topics", device="cpu")
    assert lm.config.family == "decoder" and lm.config.pool_method == "last"
    assert lm.generate("The ", max_new_tokens=3, greedy=True) is not None          # still a language model


def test_classify_cli(encoder_classifier, tiny_encoder_dir, tmp_path, capsys):
    out, _ = encoder_classifier
    text = "I think the python is next to the code"          # the training template, unseen word pair
    assert main(["classify", str(out), text, "--top-k", "2", "--device", "cpu"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith("tech ") and line.endswith("\t" + text) and len(line.split("  ")) == 2
    lines = tmp_path / "lines.txt"
    lines.write_text("the cat\n\nthe rice\n")
    assert main(["classify", str(out), "--file", str(lines), "--json", "--device", "cpu"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in rows] == ["the cat", "the rice"] and set(rows[0]["probs"]) == {rows[0]["label"]}
    labelled = tmp_path / "eval.csv"
    labelled.write_text("text,label\nthe cat and the dog,animals\nthe tea and the soup,drinks\n")
    assert main(["classify", str(out), "--file", str(labelled), "--label-column", "label", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "warning: 1 row(s) have labels the model was never trained on ('drinks')" in err and "macro-F1" in err
    assert "TF-IDF + logistic regression baseline on these rows (trained on the training split of " in err
    assert "TF-IDF baseline: macro-F1" in err
    assert main(["classify", str(out), "--file", str(labelled), "--label-column", "label", "--no-baseline",
                 "--device", "cpu"]) == 0
    assert "TF-IDF" not in capsys.readouterr().err
    assert main(["classify", str(tiny_encoder_dir), "x", "--device", "cpu"]) == 2
    assert "no classification head" in capsys.readouterr().err


def test_an_ensemble_averages_the_probabilities_of_its_classifiers(encoder_classifier, tiny_encoder_dir, topics_csv,
                                                                   tmp_path, capsys):
    """`classify(..., ensemble=[...])` / `lmforge classify A --ensemble B`: each text gets the mean
    of the members' probabilities (here two fine-tunes of one encoder with other seeds); members
    with other labels are refused, one line, exit 2."""
    out, _ = encoder_classifier
    second = tmp_path / "seed2"
    cfg = tiny_train_config(topics_csv, second, max_steps=30, eval_interval=30, lr=2e-3, batch_size=16, seed=2)
    finetune(FinetuneConfig(model_dir=str(tiny_encoder_dir), task="classify"), cfg, ClassifyConfig(baseline=False))
    a, b = load(out, device="cpu"), load(second, device="cpu")
    texts = ["I think the cat is next to the bread", "I think the disk is next to the tea"]
    alone = [a.classify(texts), b.classify(texts)]
    both = a.classify(texts, ensemble=[b])
    for i, r in enumerate(both):
        for label, p in r["probs"].items():
            assert abs(p - (alone[0][i]["probs"][label] + alone[1][i]["probs"][label]) / 2) < 1e-6
        assert r["label"] == max(r["probs"], key=r["probs"].get) and abs(sum(r["probs"].values()) - 1) < 1e-5
    assert alone[0][0]["probs"] != alone[1][0]["probs"]                            # two different members
    capsys.readouterr()                                                               # the fine-tunes' lines
    assert main(["classify", str(out), texts[0], "--json", "--ensemble", str(second), "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["label"] == both[0]["label"] and abs(printed["score"] - both[0]["score"]) < 1e-4
    other = tmp_path / "other.csv"
    other.write_text("text,label\n" + "the cat,x\nthe tea,y\n" * 20)                 # labels x and y
    odd = tmp_path / "odd"
    finetune(FinetuneConfig(model_dir=str(tiny_encoder_dir), task="classify"),
             tiny_train_config(other, odd, max_steps=2, eval_interval=2, batch_size=4), ClassifyConfig(baseline=False))
    capsys.readouterr()
    assert main(["classify", str(out), texts[0], "--ensemble", str(odd), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "must have the same labels" in err and str(odd) in err and len(err.strip().splitlines()) == 1
    with pytest.raises(LmforgeError, match="must have the same labels"):                # the benchmark's scoring too
        ensemble_split_scores([out, odd], topics_csv, ClassifyConfig())


def test_lora_classifier_trains_and_saves_the_new_head(tmp_path, tiny_encoder_dir, topics_csv):
    from lmforge.adapt.lora import LoRAConfig
    from lmforge.modeldir import ADAPTER_FILE, read_weights
    out = tmp_path / "lora-topics"
    cfg = tiny_train_config(topics_csv, out, max_steps=200, eval_interval=200, lr=3e-3, batch_size=16)
    summary = finetune(FinetuneConfig(model_dir=str(tiny_encoder_dir), task="classify"), cfg, ClassifyConfig(),
                       lora=LoRAConfig(lora_rank=4))
    saved, _ = read_weights(out / ADAPTER_FILE)
    assert {"classifier.proj.weight", "classifier.proj.bias"} <= set(saved)          # the head travels with the adapters
    assert not any(k.startswith("transformer.") and "lora" not in k for k in saved)  # the base does not
    assert summary["test_accuracy"] > 0.75          # chance is 1/3; 0.92-1.0 over seeds
    lm = load(out, device="cpu")
    assert lm.config.labels == ["animals", "food", "tech"]
    assert lm.classify("I think the cat is next to the dog")["label"] == "animals"
