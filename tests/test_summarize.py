"""Summarization: ROUGE equals Google's rouge-score run directly, `lmforge summarize` / `Model.summarize`
with an encoder-decoder and with a decoder fine-tuned by SFT, `lmforge eval --pairs`, ROUGE in the
seq2seq task's evaluations and report and in SFT's (`--eval-replies`), and the minimum length."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from rouge_score import rouge_scorer

from lmforge.api import load
from lmforge.cli import main
from lmforge.errors import LmforgeError
from lmforge.evaluate.rouge import ROUGE_TYPES, UnicodeTokenizer, format_rouge, lead, rouge_scores
from lmforge.data.pairs import source_ids
from lmforge.generate import GenerationConfig, generate
from lmforge.generate.seq2seq import generate_seq2seq_ids
from lmforge.tasks.seq2seq import Seq2SeqConfig
from lmforge.train import train

from .conftest import tiny_train_config

ADJECTIVES, ANIMALS = ["big", "small", "red", "old"], ["cat", "dog", "bird", "horse"]
ACTIONS = [("sleeps", "sleeping"), ("runs", "running"), ("eats", "eating"), ("sings", "singing")]


def summary_rows(n: int = 240, seed: int = 0) -> list[tuple[str, str]]:
    """(document, summary) rows of a tiny English summarization task: the summary names the animal
    and what it does, the document says it at length."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        adj, animal, (does, doing) = rng.choice(ADJECTIVES), rng.choice(ANIMALS), rng.choice(ACTIONS)
        place = rng.choice(["in the garden", "near the house", "by the river"])
        rows.append((f"There is a {adj} {animal} {place}. The {animal} is {doing} all day.", f"a {adj} {animal} {does}"))
    return rows


def direct_rouge(predictions: list[str], references: list[str], **scorer) -> dict[str, float]:
    """The oracle: rouge_score.rouge_scorer.RougeScorer, averaged over the pairs, x100."""
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), **scorer)
    scores = [scorer.score(r, p) for p, r in zip(predictions, references)]
    return {k: 100 * sum(s[k].fmeasure for s in scores) / len(scores) for k in ROUGE_TYPES}


@pytest.fixture(scope="module")
def summaries_tsv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tables") / "summaries.tsv"
    path.write_text("document\tsummary\n" + "".join(f"{d}\t{s}\n" for d, s in summary_rows()), encoding="utf-8")
    return path


def test_rouge_equals_rouge_score():
    predictions = ["the cats were sitting on the mat", "in the park\na dog ran", "", "completely different words"]
    references = ["the cat sat on the mat", "the dog ran in the park", "something", "a summary"]
    ours = rouge_scores(predictions, references)
    want = direct_rouge(predictions, references, use_stemmer=True)
    assert ours["rouge_tokenize"] == "default" and ours["rouge_stemmer"] is True
    assert {k: ours[k] for k in ROUGE_TYPES} == pytest.approx(want, abs=1e-9)
    assert ours["rougeLsum"] != ours["rougeL"]                 # Lsum: sentences are the lines
    assert rouge_scores(["the cats sat"], ["the cat sat"])["rouge2"] == 100.0          # Porter stemming
    assert format_rouge(ours).startswith(f"ROUGE-1 {ours['rouge1']:.2f}, ROUGE-2 ")


def test_rouge_of_non_english_text_is_not_zero():
    # rouge-score's own tokenizer keeps a-z and 0-9 only: Chinese would score 0 against anything
    predictions, references = ["一只大猫", "一只小狗"], ["一只大猫", "一只红狗"]
    assert direct_rouge(predictions, references)["rouge1"] == 0.0
    ours = rouge_scores(predictions, references)
    assert ours["rouge_tokenize"] == "unicode" and ours["rouge_stemmer"] is False
    assert {k: ours[k] for k in ROUGE_TYPES} == pytest.approx(direct_rouge(predictions, references,
                                                                         tokenizer=UnicodeTokenizer()))
    assert ours["rouge1"] == pytest.approx(87.5)                # 4/4 and 3/4 characters
    assert UnicodeTokenizer().tokenize("Grüße, Welt! 你好") == ["grüße", "welt", "你", "好"]


def test_lead_is_the_first_sentence():
    assert lead("Tools for Debian. They help you.\nSecond paragraph.") == "Tools for Debian."
    assert lead("no full stop here\nnext line") == "no full stop here"
    assert lead("version 1.2 of it. More.") == "version 1.2 of it."


@pytest.fixture(scope="module")
def summarizer(tmp_path_factory, summaries_tsv):
    """A seq2seq-tiny trained on the English summaries, scored with ROUGE."""
    out = tmp_path_factory.mktemp("runs") / "summarizer"
    cfg = tiny_train_config(summaries_tsv, out, preset="seq2seq-tiny", task="seq2seq", max_steps=100, eval_interval=50,
                            optimizer="adamw", lr=3e-3, warmup_steps=10, batch_size=16, context_length=48,
                            task_options=Seq2SeqConfig(source_column="document", target_column="summary",
                                                        tokenizer="bpe", vocab_size=300, metric="rouge",
                                                        eval_translations=8, test_beams=2))
    return out, train(cfg)


def test_seq2seq_task_logs_and_reports_rouge(summarizer):
    out, summary = summarizer
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["kind"] == "eval"]
    assert evals and all(f"val_{k}" in r and "val_bleu" not in r for r in evals for k in ROUGE_TYPES)
    report = json.loads((out / "summarization_report.json").read_text())
    assert not (out / "translation_report.json").exists()
    assert report["num_beams"] == 2 and report["rouge_stemmer"] and len(report["samples"]) == report["pairs"]
    assert summary["test_rougeL"] == report["rougeL"] > 30      # it learnt some of the task's words
    sample = report["samples"][0]
    assert set(sample) == {"source", "reference", "summary"}
    assert report["rougeL"] == pytest.approx(direct_rouge([s["summary"] for s in report["samples"]],
                                                          [s["reference"] for s in report["samples"]],
                                                          use_stemmer=True)["rougeL"])


def test_eval_pairs_prints_what_rouge_score_computes(summarizer, summaries_tsv, capsys):
    out, _ = summarizer
    table = summaries_tsv.parent / "few.tsv"
    table.write_text("\n".join(summaries_tsv.read_text(encoding="utf-8").splitlines()[:13]) + "\n", encoding="utf-8")
    assert main(["eval", str(out), "--pairs", str(table), "--source-column", "document", "--target-column", "summary",
                 "--num-beams", "2", "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = summary_rows()[:12]
    documents, references = [d for d, _ in rows], [s for _, s in rows]
    predictions = load(out, device="cpu").summarize(documents, num_beams=2, batch_size=8)     # eval's batches
    assert printed["pairs"] == 12
    want = direct_rouge(predictions, references, use_stemmer=True)
    assert {k: printed[k] for k in ROUGE_TYPES} == pytest.approx(want, abs=1e-4)
    assert printed["lead"] == pytest.approx(direct_rouge([lead(d) for d in documents], references, use_stemmer=True),
                                            abs=1e-4)
    assert main(["eval", str(out), "--pairs", str(table), "--text", str(table)]) == 2      # one or the other
    assert "not both" in capsys.readouterr().err


def test_summarize_cli_and_api(summarizer, summaries_tsv, capsys):
    out, _ = summarizer
    lm = load(out, device="cpu")
    document = summary_rows()[0][0]
    assert isinstance(lm.summarize(document), str) and lm.summarize([document, " "])[1] == ""
    assert lm.summarize(document, num_beams=1) == lm.translate(document, num_beams=1, no_repeat_ngram_size=3)
    source = source_ids(lm.tokenizer, document, lm.config.context_length)
    for beams in (1, 2):
        ids, _ = generate_seq2seq_ids(lm.module, [source], bos_id=lm.target_tokenizer.bos_id, num_beams=beams,
                                      eos_id=lm.target_tokenizer.eos_id, max_new_tokens=30, min_new_tokens=25)
        assert len(ids[0]) >= 25
    assert main(["summarize", str(out), document, "--device", "cpu", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"document": document, "summary": lm.summarize(document)}
    assert main(["summarize", str(out), "--file", str(summaries_tsv), "--source-column", "document",
                 "--target-column", "summary", "--num-beams", "1", "--device", "cpu"]) == 0
    captured = capsys.readouterr()
    outputs = captured.out.splitlines()
    assert len(outputs) == 240
    scores = rouge_scores(outputs, [s for _, s in summary_rows()])
    assert captured.err.strip().endswith(f"{format_rouge(scores)} over 240 pairs")
    with pytest.raises(LmforgeError, match="summarize does not take temperature"):
        lm.summarize(document, temperature=0.5)
    assert main(["summarize", "no-such-model", "x", "--min-new-tokens", "9", "--max-new-tokens", "4"]) == 2
    assert "--min-new-tokens 9 is more than --max-new-tokens 4" in capsys.readouterr().err


def test_decoder_sft_summaries(tmp_path, char_data, capsys):
    """A decoder fine-tuned on document -> summary conversations: SFT logs ROUGE of its replies, and
    summarize gives it each document as the user's message, as chat does."""
    base = tmp_path / "base"
    train(tiny_train_config(char_data, base, context_length=128, max_steps=4, eval_interval=4))
    chats = tmp_path / "chats.jsonl"
    chats.write_text("".join(json.dumps({"messages": [{"role": "user", "content": d},
                                                      {"role": "assistant", "content": s}]}) + "\n"
                             for d, s in summary_rows(60)), encoding="utf-8")
    out = tmp_path / "sft"
    assert main(["finetune", str(base), "--task", "sft", "--data", str(chats), "--out", str(out), "--max-steps", "4",
                 "--eval-interval", "4", "--batch-size", "4", "--eval-iters", "1", "--eval-replies", "3",
                 "--no-progress", "--device", "cpu"]) == 0
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"eval"' in line]
    assert all(f"val_{k}" in evals[-1] for k in ROUGE_TYPES)
    capsys.readouterr()
    lm = load(out, device="cpu")
    document = summary_rows(1)[0][0]
    summary = lm.summarize(document, num_beams=1, no_repeat_ngram_size=0, max_new_tokens=20)
    assert summary == lm.chat([{"role": "user", "content": document}], greedy=True, max_new_tokens=20)
    assert isinstance(lm.summarize(document, num_beams=2, max_new_tokens=8), str)
    assert main(["summarize", str(out), document, "--max-new-tokens", "8", "--device", "cpu"]) == 0
    with pytest.raises(LmforgeError, match="summarize needs an encoder-decoder"):
        from lmforge.generate.summarize import summarize
        summarize(type("M", (), {"config": type("C", (), {"family": "encoder"})()})(), None, None, ["x"])


def test_min_new_tokens_holds_off_the_end(tiny_model_dir, monkeypatch):
    """The end-of-text token cannot be chosen before min_new_tokens, in beam search and in plain
    decoding, even by a model that always wants to stop."""
    from lmforge.generate import auto_compile, decode
    from lmforge.generate.beam import beam_search, best_hypotheses
    V, eos = 5, 4
    wants_to_stop = torch.tensor([[0.0, 1.0, 0.5, 0.2, 9.0]])                # <eos> (4) by far the most likely

    def step(tokens, origin, t):
        return wants_to_stop.expand(len(tokens), V)
    ids, _ = best_hypotheses(beam_search(step, wants_to_stop.expand(2, V), 2, 10, eos), eos)
    assert ids == [[]]
    ids, reasons = best_hypotheses(beam_search(step, wants_to_stop.expand(2, V), 2, 10, eos, min_new_tokens=3), eos)
    assert ids == [[1, 1, 1]] and reasons == ["eos"]
    lm = load(tiny_model_dir, device="cpu")
    eos = lm.tokenizer.eos_id
    stop = torch.zeros(lm.config.vocab_size)
    stop[eos] = 50.0
    monkeypatch.setattr(decode, "prefill", lambda model, idx, *a: stop.expand(idx.shape[0], -1).clone())
    monkeypatch.setattr(auto_compile, "decode_one_token",           # the eager step plain decoding takes
                        lambda model, token, *a: stop.expand(token.shape[0], -1).clone())
    plain = generate(lm.module, lm.tokenizer, ["a", "bc"], GenerationConfig(greedy=True, max_new_tokens=9))
    assert [len(c.ids) for c in plain] == [0, 0]
    held = generate(lm.module, lm.tokenizer, ["a", "bc"], GenerationConfig(greedy=True, max_new_tokens=9,
                                                                           min_new_tokens=4))
    assert [len(c.ids) for c in held] == [4, 4] and all(c.finish_reason == "eos" for c in held)
    with pytest.raises(LmforgeError, match="--min-new-tokens is not supported with a draft model"):
        generate(lm.module, lm.tokenizer, "a", GenerationConfig(min_new_tokens=2), draft=lm.module)
