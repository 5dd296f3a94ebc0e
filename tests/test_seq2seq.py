"""Seq2seq training on a pairs table, translation (greedy and beam), BLEU / chrF, bad pair files."""

import json

import pytest

from lmforge.api import load
from lmforge.cli import main
from lmforge.tasks.seq2seq import Seq2SeqConfig, Seq2SeqTask
from lmforge.errors import ConfigError, DataError
from lmforge.evaluate.bleu import bleu_tokenize_for, translation_scores
from lmforge.config import get_preset
from lmforge.train import train

from .conftest import pair_rows, tiny_train_config


def test_bleu_and_chrf_on_hand_checked_examples():
    # hypothesis "a b c d e" vs reference "a b c d f": n-gram precisions 4/5, 3/4, 2/3, 1/2, same length
    # (no brevity penalty) -> BLEU = (4/5 * 3/4 * 2/3 * 1/2) ** (1/4) = 0.2 ** 0.25 = 66.87
    s = translation_scores(["a b c d e"], ["a b c d f"])
    assert s["bleu"] == 66.87 and s["bleu_tokenize"] == "13a"
    assert translation_scores(["the cat sat"], ["the cat sat"])["chrf"] == 100.0
    # Chinese is scored per character: "一只大猫" vs "一只小猫" has the same precisions as "a b c d" vs "a b x d"
    # (3/4, 1/3, 0/2, 0/1 -> exp smoothing), so both get the same BLEU
    zh = translation_scores(["一只大猫"], ["一只小猫"])
    assert zh["bleu_tokenize"] == "zh" and zh["bleu"] == translation_scores(["a b c d"], ["a b x d"])["bleu"] > 0
    assert bleu_tokenize_for(["hello world"]) == "13a"


@pytest.fixture(scope="module")
def translator(tmp_path_factory, pairs_tsv):
    out = tmp_path_factory.mktemp("runs") / "en-zh"
    cfg = tiny_train_config(pairs_tsv, out, preset="seq2seq-tiny", task="seq2seq", max_steps=250,
                            eval_interval=125, sample_interval=125, lr=3e-3, warmup_steps=10, batch_size=16,
                            task_options=Seq2SeqConfig(source_column="en", target_column="zh", tokenizer="char",
                                                        separate_vocab=True, eval_translations=16))
    return out, train(cfg)


def test_seq2seq_learns_a_tiny_language(translator):
    out, summary = translator
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r for r in rows if r["kind"] == "train"][-1]["loss"] < rows[0]["loss"] - 1.0
    assert summary["val_chrf"] > 40 and summary["test_bleu"] > 20
    assert any(r["kind"] == "sample" and " => " in r["text"] for r in rows)
    report = json.loads((out / "translation_report.json").read_text())
    assert report["num_beams"] == 4 and report["bleu_tokenize"] == "zh" and len(report["samples"]) == report["pairs"]
    assert (out / "target_tokenizer" / "tokenizer.json").is_file()          # separate vocabularies
    lm = load(out, device="cpu")
    assert lm.config.target_vocab_size == lm.target_tokenizer.vocab_size != lm.tokenizer.vocab_size
    seen = dict(pair_rows())
    hits = sum(lm.translate(en, num_beams=b) == zh for en, zh in list(seen.items())[:6] for b in (1, 3))
    assert hits >= 6                                                        # most of 12 exact


def test_translate_cli(translator, tmp_path, capsys, pairs_tsv):
    out, _ = translator
    assert main(["translate", str(out), "a big cat", "--num-beams", "2", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.strip().startswith("一只")
    assert main(["translate", str(out), "--file", str(pairs_tsv), "--source-column", "en", "--target-column", "zh",
                 "--num-beams", "1", "--json", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.splitlines()) == 300 and "chrF" in captured.err


def test_bad_pair_files(tmp_path, translator):
    out, _ = translator
    bad = tmp_path / "pairs.tsv"
    bad.write_text("en\tzh\na cat\t一只猫\na dog\t\n\t一只狗\nno tab at all\n" + "a bird\t一只鸟\n" * 20)
    config = get_preset("seq2seq-tiny")
    with pytest.warns(UserWarning, match=r"skipped 3 row\(s\) .*empty or missing 'en' / 'zh' \(lines 3, 4, 5\)"):
        Seq2SeqTask(bad, config, None, Seq2SeqConfig(source_column="en", target_column="zh", tokenizer="char"))
    with pytest.raises(DataError, match=r"no column 'source' \(columns found: en, zh\); pass --source-column"):
        Seq2SeqTask(bad, config, None)
    with pytest.raises(ConfigError, match="task seq2seq needs an encoder-decoder.*seq2seq-mini"):
        Seq2SeqTask(bad, get_preset("gpt-tiny"), None)
    assert main(["translate", str(out), "--device", "cpu"]) == 2
    with pytest.raises(DataError, match=r"val_fraction=0.0 must be in \(0, 1\)"):
        Seq2SeqConfig(val_fraction=0.0)
