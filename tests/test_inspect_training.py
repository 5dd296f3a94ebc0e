"""`train --inspect-interval N`: every N steps an {"kind": "inspect"} row of metrics.jsonl holds
each layer's highest previous-token and induction head score and its logit-lens loss, equal to
`lmforge.inspect` on the checkpoint of that step; loss.png draws them beside the loss curve;
with the interval 0 (the default) no row is written and no hook is ever set."""

from __future__ import annotations

import json

import pytest
import torch

import lmforge
import lmforge.inspect.hooks as hooks
from lmforge.cli import main
from lmforge.inspect import head_scores, lens_loss
from lmforge.tasks.clm import CausalLMTask
from lmforge.train import train
from lmforge.train.inspection import lens_batch, scored_tokens

from .conftest import tiny_train_config
from .test_inspect_oracle import random_model


def rows(out, kind: str) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


def test_rows_at_the_interval_equal_the_tools_on_the_checkpoint(tmp_path, char_data):
    out = tmp_path / "m"
    train(tiny_train_config(char_data, out, max_steps=6, eval_interval=6, inspect_interval=3))
    inspected = rows(out, "inspect")
    assert [r["step"] for r in inspected] == [3, 6]
    lm = lmforge.load(out, device="cpu")                        # the checkpoint of step 6, the last row's
    ids, targets = lens_batch(CausalLMTask(char_data, lm.config.context_length), seed=1337)
    scores = head_scores(lm, alphabet=scored_tokens(lm.tokenizer, (ids, targets)))
    last = inspected[-1]
    for i in range(lm.config.n_layer):
        assert last[f"induction_L{i}"] == pytest.approx(float(scores.induction[i].max()), abs=1e-5)
        assert last[f"previous_token_L{i}"] == pytest.approx(float(scores.previous_token[i].max()), abs=1e-5)
    losses = lens_loss(lm.module, ids, targets)
    assert [last[f"lens_loss_{label}"] for label in ("0_pre", "1_pre", "final_post")] == \
        pytest.approx(losses.tolist(), abs=1e-5)
    import matplotlib.image
    assert matplotlib.image.imread(out / "loss.png").shape[1] > 1500           # the loss, heads and lens panels


def test_off_writes_no_row_and_sets_no_hook(tmp_path, char_data, monkeypatch):
    installs = []
    monkeypatch.setattr(hooks, "_install", lambda model, contexts: installs.append(1))
    train(tiny_train_config(char_data, tmp_path / "m", max_steps=4, eval_interval=4))
    assert rows(tmp_path / "m", "inspect") == [] and installs == []


def test_the_lens_loss_is_the_logit_lens_in_one_number(char_data):
    lm = random_model("gpt-tiny", char_data)
    text = "the cat sat on the mat"
    lens = lm.logit_lens(text)
    ids = torch.tensor([lm.tokenizer.encode(text, bos=lm.tokenizer.add_bos)])
    losses = lens_loss(lm.module, ids[:, :-1], ids[:, 1:])
    torch.testing.assert_close(losses, -lens.expected_prob[:, :-1].log().mean(-1), atol=1e-5, rtol=1e-5)


def test_encoders_and_seq2seq_log_what_applies(tmp_path, wordpiece_data, pairs_tsv):
    """A masked-LM encoder: head scores and its lens loss on the masked tokens; an encoder-decoder:
    the decoder's head scores (its batches are not one token stream for the lens)."""
    train(tiny_train_config(wordpiece_data, tmp_path / "bert", preset="bert-tiny", task="mlm", max_steps=2,
                            eval_interval=2, inspect_interval=2))
    bert = rows(tmp_path / "bert", "inspect")[0]
    assert {"induction_L0", "previous_token_L1", "lens_loss_final_post"} <= set(bert)
    assert main(["train", "--task", "seq2seq", "--preset", "seq2seq-tiny", "--data", str(pairs_tsv), "-o",
                 str(tmp_path / "s2s"), "--max-steps", "2", "--eval-interval", "2", "--inspect-interval", "1",
                 "--batch-size", "4", "--eval-iters", "1", "--no-progress", "--device", "cpu",
                 "--eval-translations", "2", "--source-column", "en", "--target-column", "zh"]) == 0
    s2s = rows(tmp_path / "s2s", "inspect")
    assert [r["step"] for r in s2s] == [1, 2] and "induction_L0" in s2s[0] and "lens_loss_final_post" not in s2s[0]
