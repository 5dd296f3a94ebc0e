"""The model card (`lmforge.card`): README.md of a model directory in Hugging Face's layout.

`huggingface_hub` is the oracle: the card loads in `ModelCard`, its metadata rebuilds through
`ModelCardData` unchanged (the offline check: `ModelCard.validate()` asks the Hub's servers) and
its `model-index` parses into the evaluation results the run logged. Audits' findings are written
by hand in the format of `lmforge.audit.findings`."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lmforge.card import BEGIN, END, CardConfig, card, current_card, refresh_card
from lmforge.cli import main
from lmforge.errors import LmforgeError

hub = pytest.importorskip("huggingface_hub")

AUDIT = {"memorization": {"when": "2026-12-03T18:40:00Z", "settings": {"data": "data/corpus", "k": 32, "m": 32},
                          "summary": "2.5% of training windows extractable (k=32, m=32) against 0.0% held out",
                          "results": {"train_extractable": 0.025, "heldout_extractable": 0.0, "windows": 200}},
         "canaries": {"when": "2026-12-03T18:41:00Z", "settings": {"data": "data/corpus"},
                      "summary": "the canary repeated 100 times has exposure 19.9 bits of 20; the 1x one 1.2",
                      "results": {"canaries": [{"repeats": 100, "exposure": 19.9}]}},
         "membership": {"when": "2026-12-03T18:42:00Z", "settings": {"examples": 100},
                        "summary": "loss tells training from held-out examples with ROC AUC 0.71",
                        "results": {"auc": 0.71}},
         "bias": {"when": "2026-12-03T18:43:00Z", "settings": {"pairs": "pairs.tsv"},
                  "summary": "prefers the stereotyped sentence in 62% of 300 pairs (95% CI 56%-67%)",
                  "results": {"stereotype_share": 0.62, "ci": [0.56, 0.67]}}}


@pytest.fixture
def model(tiny_model_dir, tmp_path) -> Path:
    """A copy of the tiny trained model (its card written by the run), free to change."""
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "tiny"))


def last_eval(path: Path) -> dict:
    rows = [json.loads(line) for line in (path / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["kind"] == "eval"][-1]


def test_a_run_writes_a_card_that_huggingface_hub_reads(tiny_model_dir):
    card_file = tiny_model_dir / "README.md"
    assert card_file.is_file()                                        # written when the run ended
    model_card = hub.ModelCard.load(card_file)
    data = model_card.data
    assert data.library_name == "lmforge" and data.pipeline_tag == "text-generation"
    assert {"lmforge", "decoder", "clm"} <= set(data.tags)
    assert hub.ModelCardData(**data.to_dict()).to_dict() == data.to_dict()   # the metadata is well-formed
    assert data.model_name == "tiny" and len(data.eval_results) == 1
    result = data.eval_results[0]
    assert (result.task_type, result.metric_type, result.dataset_split) == ("text-generation", "perplexity",
                                                                            "validation")
    assert result.metric_value == pytest.approx(last_eval(tiny_model_dir)["val_ppl"], abs=1e-4)
    text = model_card.text
    for section in ("Model details", "Training data", "Training procedure", "Evaluation", "Audit", "Limitations"):
        assert f"\n## {section}\n" in text
    assert "| preset | gpt-tiny |" in text and "| train_tokens |" in text and "| max_steps | 30 |" in text


def test_each_audit_finding_has_its_section(model):
    (model / "audit.json").write_text(json.dumps(AUDIT))
    assert main(["card", str(model)]) == 0
    text = (model / "README.md").read_text()
    audit = text.split("\n## Audit\n")[1].split("\n## ")[0]
    titles = [line for line in audit.splitlines() if line.startswith("### ")]
    assert len(titles) == 4 and titles[0].startswith("### Memorisation")
    for name, entry in AUDIT.items():
        section = audit.split(titles[list(AUDIT).index(name)])[1].split("\n### ")[0]
        assert entry["summary"] in section and entry["when"] in section
    assert "| auc | 0.71 |" in audit                                    # a result's figures, beside its sentence
    hub.ModelCard(text)                                               # still a valid card


def test_a_refresh_keeps_the_users_text_and_keys(model):
    text = (model / "README.md").read_text()
    front, rest = text.split("\n---\n", 1)
    front += "\nlicense: apache-2.0\nbase_model: gpt2\ntags:\n- my-tag"
    front = front.replace("tags:\n- lmforge\n- decoder\n- clm\n", "")
    rest = rest.replace(BEGIN, "My introduction.\n\n" + BEGIN).replace(END, END + "\n\n## My notes\n\nKeep this.")
    (model / "README.md").write_text(front + "\n---\n" + rest)
    with open(model / "metrics.jsonl", "a") as f:                    # the model evaluated again: new figures
        f.write(json.dumps({"kind": "eval", "step": 40, "val_loss": 1.0, "val_ppl": 2.718282}) + "\n")
    assert refresh_card(model) == model / "README.md"
    refreshed = hub.ModelCard.load(model / "README.md")
    assert "My introduction." in refreshed.text and "## My notes\n\nKeep this." in refreshed.text
    assert refreshed.text.index("My introduction.") < refreshed.text.index(BEGIN) < refreshed.text.index("My notes")
    assert refreshed.data.license == "apache-2.0" and refreshed.data.base_model == "gpt2"
    assert "my-tag" in refreshed.data.tags and "lmforge" in refreshed.data.tags
    assert refreshed.data.eval_results[0].metric_value == pytest.approx(2.7183)
    assert refreshed.text.count(BEGIN) == 1 and "(step 40)" in refreshed.text


def test_a_hand_written_card_is_replaced_only_with_overwrite(model, capsys):
    (model / "README.md").write_text("# My model\n\nMine.\n")
    assert main(["card", str(model)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--overwrite" in err
    with pytest.warns(UserWarning, match="not written by lmforge"):
        assert refresh_card(model) is None                            # what a run's end does: leave it
    assert (model / "README.md").read_text() == "# My model\n\nMine.\n"
    assert current_card(model) == "# My model\n\nMine.\n"             # served and exported as it is
    assert card(CardConfig(str(model), overwrite=True, license="mit", language=["en"])) == model / "README.md"
    data = hub.ModelCard.load(model / "README.md").data
    assert data.license == "mit" and data.language == ["en"]


def test_export_carries_the_card(model, tmp_path):
    from lmforge.interop import export_gguf, export_hf
    card(CardConfig(str(model), license="mit", language=["en"]))
    readme = (model / "README.md").read_text().replace(END, END + "\n\nUser text.")
    (model / "README.md").write_text(readme)
    export_hf(model, tmp_path / "hf")
    exported = hub.ModelCard.load(tmp_path / "hf" / "README.md")
    assert exported.data.library_name == "transformers" and exported.data.license == "mit"
    assert "User text." in exported.text and "## Evaluation" in exported.text
    assert (model / "README.md").read_text() == readme                # the source directory is not touched
    from lmforge.api import load
    assert load(tmp_path / "hf", device="cpu").card() == (tmp_path / "hf" / "README.md").read_text()
    with pytest.raises(LmforgeError, match="not an lmforge model directory"):
        card(CardConfig(str(tmp_path / "hf")))                        # a Hugging Face directory's card is its own
    import gguf
    export_gguf(model, tmp_path / "m.gguf")
    fields = gguf.GGUFReader(tmp_path / "m.gguf").fields

    def strings(key):
        return [bytes(fields[key].parts[i]).decode() for i in fields[key].data]
    assert strings("general.license") == ["mit"] and strings("general.languages") == ["en"]
    assert "lmforge" in strings("general.tags")


def test_bad_model_directories_are_one_line_errors(tmp_path, model, capsys):
    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "empty").mkdir()
    for bad, says in ((tmp_path / "missing", "does not exist"), (tmp_path / "file.txt", "is a file"),
                      (tmp_path / "empty", "holds no config.json")):
        assert main(["card", str(bad)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and says in err, err
    (model / "audit.json").write_text("{not json")
    assert main(["card", str(model)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "audit.json is not valid JSON" in err
    with pytest.raises(LmforgeError, match="does not exist"):
        card(CardConfig(str(tmp_path / "missing")))


def test_the_playground_shows_the_card(model):
    from .test_serve import CHROMIUM, browser_page, running_server
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (/usr/bin/chromium); .ci/run installs it with apt-get")
    (model / "audit.json").write_text(json.dumps(AUDIT))
    card(CardConfig(str(model)))
    readme = (model / "README.md").read_text().replace(END, END + "\n\n## My notes\n\nA <b>user</b>'s words.")
    (model / "README.md").write_text(readme)
    with running_server(model) as url, browser_page(url + "/") as (page, requested):
        page.wait_for_function("document.getElementById('model-name').textContent.includes('tiny')")
        page.click("#tab-card")
        page.wait_for_selector("#card-out[data-ready='true']")
        headings = [h.inner_text() for h in page.query_selector_all("#card-out h2")]
        assert headings == ["Model details", "Training data", "Training procedure", "Evaluation", "Audit",
                            "Limitations", "My notes"]
        assert page.inner_text("#card-out h1") == "tiny"
        assert AUDIT["bias"]["summary"] in page.inner_text("#card-out")
        assert page.inner_text("#card-out table td:first-child") == "family"
        assert "A <b>user</b>'s words." in page.inner_text("#card-out")   # shown as text, never as markup
        assert all(u.startswith(url) for u in requested)
