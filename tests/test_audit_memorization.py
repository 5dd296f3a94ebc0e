"""`lmforge audit memorization` (k-extractability) and `membership` (loss-based membership
inference) on a gpt-tiny overfitted on documents of random words (tests/audit_corpora.py), and on
the shared tiny model that saw a fraction of its corpus once; the findings in MODEL/audit.json."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lmforge import audit, load
from lmforge.audit.membership import roc_auc
from lmforge.audit.samples import sample_windows
from lmforge.cli import main
from lmforge.errors import LmforgeError
from lmforge.generate import GenerationConfig
from lmforge.generate.decode import decode_ids

FAST = dict(progress=False, device="cpu")


def test_an_overfitted_model_gives_training_windows_away(memorized):
    model, data = memorized
    result = audit.memorization(model, data=str(data), k=32, m=16, windows=100, **FAST)
    assert result.heldout.share <= 0.02 and result.train.share >= result.heldout.share + 0.05, result.summary
    assert result.train.token_accuracy > result.heldout.token_accuracy
    found = audit.findings.read(model)["memorization"]
    assert found["summary"] == result.summary and found["settings"]["k"] == 32 and found["results"]["train"]["share"]


def test_one_teacher_forced_pass_decides_what_greedy_decoding_writes(memorized):
    """The share counts a window when greedy decoding from its first k tokens writes the next m:
    the same windows, decoded for real, agree."""
    model, data = memorized
    lm = load(model, device="cpu")
    k, m = 32, 16
    windows = sample_windows(data, "train", k + m, 40, seed=0)
    from lmforge.audit.likelihood import token_logprobs
    predicted = [bool(g[k - 1:].all()) for _, g in token_logprobs(lm.module, windows.tolist())]
    generated, _, _ = decode_ids(lm.module, windows[:, :k].tolist(), GenerationConfig(greedy=True, max_new_tokens=m),
                                 eos_id=None)
    assert predicted == [g == w[k:].tolist() for g, w in zip(generated, windows)] and any(predicted)


def test_a_model_that_saw_its_data_once_is_about_as_good_on_held_out_text(tiny_model_dir, char_data):
    mem = audit.memorization(tiny_model_dir, data=str(char_data), k=16, m=8, windows=200, record=False, **FAST)
    assert abs(mem.train.share - mem.heldout.share) <= 0.05, mem.summary
    assert abs(audit.membership(tiny_model_dir, data=str(char_data), record=False, **FAST).auc - 0.5) < 0.15


def test_membership_inference_by_loss_on_an_overfitted_model(memorized):
    from sklearn.metrics import roc_auc_score
    model, data = memorized
    result = audit.membership(model, data=str(data), windows=100, **FAST)
    assert result.auc > 0.7 and result.train_loss < result.heldout_loss, result.summary
    losses = np.array(result.train_losses + result.heldout_losses)
    truth = [1] * len(result.train_losses) + [0] * len(result.heldout_losses)
    assert result.auc == pytest.approx(roc_auc_score(truth, -losses), abs=1e-9)     # sklearn, the oracle
    assert audit.findings.read(model)["membership"]["results"]["auc"] == result.auc


def test_roc_auc_with_ties_matches_sklearn():
    from sklearn.metrics import roc_auc_score
    rng = np.random.default_rng(0)
    pos, neg = rng.integers(0, 5, 37).astype(float), rng.integers(0, 4, 23).astype(float)
    assert roc_auc(pos, neg) == pytest.approx(roc_auc_score([1] * 37 + [0] * 23, np.concatenate([pos, neg])))


def test_cli_prints_a_table_or_json(memorized, capsys):
    model, data = memorized
    assert main(["audit", "memorization", str(model), "--data", str(data), "--k", "32", "--m", "16", "--windows",
                 "20", "--no-progress", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "held out" in out and "training windows extractable (k=32, m=16)" in out
    assert main(["audit", "membership", str(model), "--data", str(data), "--windows", "20", "--json",
                 "--no-progress", "--device", "cpu"]) == 0
    assert 0.0 <= json.loads(capsys.readouterr().out)["auc"] <= 1.0


@pytest.mark.parametrize("argv, message", [
    (["--k", "60"], "do not fit the model's context of 64"),
    (["--windows", "0"], "windows=0 must be at least 1"),
])
def test_bad_settings_are_one_line_errors(memorized, capsys, argv, message):
    model, data = memorized
    assert main(["audit", "memorization", str(model), "--data", str(data), *argv, "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_data_of_another_tokenizer_or_none_is_refused(memorized, bpe_data, tiny_encoder_dir, capsys):
    model, data = memorized
    assert main(["audit", "membership", str(model), "--data", str(bpe_data), "--device", "cpu"]) == 2
    assert "was not tokenized with the tokenizer of" in capsys.readouterr().err
    assert main(["audit", "memorization", str(model), "--device", "cpu"]) == 2
    assert "--data DATA" in capsys.readouterr().err
    with pytest.raises(LmforgeError, match="needs a decoder"):
        audit.memorization(tiny_encoder_dir, data=str(data), **FAST)


def test_findings_keep_each_audit_under_its_key(tmp_path):
    audit.findings.record(tmp_path, "bias", {"pairs": "p.tsv"}, "first", {"n": 1})
    audit.findings.record(tmp_path, "membership", {}, "other", {})
    audit.findings.record(tmp_path, "bias", {"pairs": "q.tsv"}, "again", {"n": 2})
    found = json.loads((tmp_path / "audit.json").read_text())
    assert set(found) == {"bias", "membership"} and found["bias"]["summary"] == "again"
    assert set(found["bias"]) == {"when", "settings", "summary", "results"} and found["bias"]["when"].endswith("Z")
    (tmp_path / "audit.json").write_text("{not json")
    with pytest.raises(LmforgeError, match="audit.json is not valid JSON"):
        audit.findings.read(tmp_path)
    assert audit.findings.read(tmp_path / "nowhere") == {}
