"""`lmforge audit canaries` on the gpt-tiny overfitted on a corpus holding three canaries, written
1, 10 and 100 times (tests/audit_corpora.py; DATA/canaries.json as `prepare --canaries` writes it):
exposure grows with repetition, greedy decoding extracts the 100x secret and not the 1x one; with
`--dedup exact` the 100x secret falls to the 1x level; the findings reach the model card."""

from __future__ import annotations

import json

import pytest

from lmforge import audit, load
from lmforge.cli import main

from .audit_corpora import CANARY_FORMAT

FAST = dict(progress=False, device="cpu")


@pytest.fixture(scope="module")
def exact(memorized):
    model, data = memorized
    return audit.canaries(model, data=str(data), **FAST)


def test_exposure_grows_with_repetition_and_the_100x_secret_comes_out(exact, memorized):
    by_repeats = {c.repeats: c for c in exact.canaries}
    one, ten, hundred = by_repeats[1], by_repeats[10], by_repeats[100]
    assert one.exposure < ten.exposure <= hundred.exposure, exact.table()
    assert exact.space == 1000 and hundred.rank == 1 and hundred.exposure == pytest.approx(exact.max_exposure)
    assert one.exposure < 6 and all(c.method == "enumerated 1000 candidates" for c in exact.canaries)
    assert hundred.extracted and not one.extracted
    lm = load(memorized[0], device="cpu")                       # and decoded for real, from the prefix
    prefix = CANARY_FORMAT.split("{secret}")[0]
    assert lm.generate(prefix, greedy=True, max_new_tokens=3) == hundred.secret
    assert lm.generate(prefix, greedy=True, max_new_tokens=3) != one.secret
    found = audit.findings.read(memorized[0])["canaries"]
    assert found["summary"] == exact.summary and len(found["results"]["canaries"]) == 3


def test_the_audit_is_written_into_the_model_card(exact, memorized):
    """The card (README.md, written when training ended) is refreshed with what the audit found,
    and still loads in huggingface_hub."""
    from huggingface_hub import ModelCard
    card = ModelCard.load(memorized[0] / "README.md")
    assert "### Canaries" in card.text and exact.summary in card.text, card.text[-1500:]


def test_a_hand_written_card_is_left_alone_and_the_findings_kept(memorized, tmp_path):
    import shutil
    model = tmp_path / "model"
    shutil.copytree(memorized[0], model)
    (model / "README.md").write_text("# my own notes\n", encoding="utf-8")
    (model / "audit.json").unlink()
    with pytest.warns(UserWarning, match="was not written by lmforge"):
        result = audit.canaries(model, data=str(memorized[1]), **FAST)
    assert (model / "README.md").read_text(encoding="utf-8") == "# my own notes\n"
    assert audit.findings.read(model)["canaries"]["summary"] == result.summary


def test_dedup_brings_the_100x_secret_down_to_the_1x_level(exact, deduplicated):
    """The same corpus prepared with --dedup exact, the same training: every canary is left once,
    and the one written 100 times is no more exposed than a secret written once (measured: 5.2 bits
    against 3.7 and 7.2 for the two written once; 10.0, rank 1 of 1,000, before), nor extracted."""
    deduped = audit.canaries(deduplicated[0], data=str(deduplicated[1]), **FAST)
    before = {c.repeats: c for c in exact.canaries}
    after = {c.repeats: c for c in deduped.canaries}
    assert all(c.kept == 1 for c in deduped.canaries)
    assert not after[100].extracted and before[100].extracted
    assert after[100].exposure < before[100].exposure - 3, (deduped.table(), exact.table())
    once = max(before[1].exposure, after[1].exposure)          # the secrets written once, in either run
    assert after[100].exposure <= once + 1, (deduped.table(), exact.table())


def test_a_large_space_is_extrapolated_from_sampled_candidates(exact, memorized):
    """The skew-normal fit of Carlini et al. (Section 4.3), against the exact ranks of all 1,000."""
    model, data = memorized
    est = audit.canaries(model, data=str(data), enumerate_limit=100, samples=1000, record=False, **FAST)
    for e, x in zip(est.canaries, exact.canaries):
        assert e.rank is None and e.method == "skew-normal fit to 1000 sampled candidates"
        assert e.exposure == pytest.approx(x.exposure, abs=2.5) or min(e.exposure, x.exposure) > 7, (e, x)
    assert [c.exposure for c in est.canaries] == sorted(c.exposure for c in est.canaries)


def test_cli_table_and_errors(memorized, tmp_path, capsys):
    model, data = memorized
    assert main(["audit", "canaries", str(model), "--data", str(data), "--enumerate-limit", "10", "--samples", "200",
                 "--no-progress", "--device", "cpu"]) == 0
    out, err = capsys.readouterr()
    assert "exposure at most 9.97 bits; rank by skew-normal fit to 200 sampled candidates" in out and "c2" in out
    assert f"recorded in {model / 'audit.json'} and the model card, README.md" in err
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("meta.json", "tokenizer.json", "tokenizer_config.json", "train.bin", "val.bin"):
        (bad / name).write_bytes((data / name).read_bytes())
    assert main(["audit", "canaries", str(model), "--data", str(bad), "--device", "cpu"]) == 2
    assert "has no canaries.json; plant canaries with `lmforge prepare" in capsys.readouterr().err
    (bad / "canaries.json").write_text(json.dumps({"format": "no placeholder", "alphabet": "01", "length": 3,
                                                   "canaries": []}))
    assert main(["audit", "canaries", str(model), "--data", str(bad), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "is not a canaries file" in err and err.count("\n") == 1


@pytest.mark.slow
def test_the_readme_demonstration_runs(tmp_path, capsys):
    """examples/canary_exposure.py (the README's table) end to end on a short corpus and 3 steps."""
    import importlib.util
    from pathlib import Path

    from .conftest import corpus_text
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(corpus_text()[:20_000], encoding="utf-8")
    path = Path(__file__).resolve().parents[1] / "examples" / "canary_exposure.py"
    spec = importlib.util.spec_from_file_location("canary_exposure", path)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    argv = ["--work", str(tmp_path / "work"), "--preset", "gpt-tiny", "--max-steps", "3", "--corpus", str(corpus)]
    assert example.main(argv) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines() if line.startswith(("none ", "exact "))]
    assert [(r[0], r[1], r[2]) for r in rows] == [("none", "1", "1"), ("none", "10", "10"), ("none", "100", "100"),
                                                  ("exact", "1", "1"), ("exact", "10", "1"), ("exact", "100", "1")]
