"""`lmforge inspect` on encoders and encoder-decoders, from a model directory as a user has one:
the lens of a masked-LM encoder and of an encoder-decoder's decoder (over its greedy
translation by default), attribution on an encoder classifier, the cross-attention heads and
maps, and direct logit attribution with its cross-attention heads. (test_inspect.py checks
each tool's numbers on every family in Python; here the command line reaches them.)"""

from __future__ import annotations

import json

import pytest

from lmforge.cli import main

from .test_inspect_oracle import random_model

PRE_NORM = {"norm_position": "pre", "position": "rope", "mlp": "swiglu", "norm": "rmsnorm"}


@pytest.fixture(scope="module")
def model_dirs(char_data, tmp_path_factory) -> dict[str, str]:
    root = tmp_path_factory.mktemp("families")
    models = {"bert": random_model("bert-tiny", char_data),
              "bert-classifier": random_model("bert-tiny", char_data, labels=["neg", "pos"]),
              "seq2seq": random_model("seq2seq-tiny", char_data, **PRE_NORM)}
    for name, lm in models.items():
        lm.save(root / name)
    return {name: str(root / name) for name in models}


def inspect_json(capsys, *argv: str) -> dict:
    assert main(["inspect", *argv, "--json", "--device", "cpu"]) == 0, argv
    return json.loads(capsys.readouterr().out)


def test_the_lens_and_heads_read_an_encoder_and_a_decoder(model_dirs, capsys, tmp_path):
    bert = inspect_json(capsys, "lens", model_dirs["bert"], "a cat", "--out", str(tmp_path / "a.png"))
    assert bert["tokens"][1:-1] == list("a cat") and None not in bert["expected"]       # the token itself
    s2s = inspect_json(capsys, "lens", model_dirs["seq2seq"], "a cat", "--target", "un chat",
                       "--out", str(tmp_path / "b.png"))
    assert s2s["tokens"][1:] == list("un chat") and s2s["expected"][-1] is None
    heads = inspect_json(capsys, "heads", model_dirs["bert"], "--seq-len", "6", "--out", str(tmp_path / "h.png"))
    assert heads["kind"] == "self" and len(heads["induction"]) == 2          # bidirectional attention scores too
    assert main(["inspect", "attention", model_dirs["bert"], "a cat", "--out", str(tmp_path / "x.png"),
                 "--device", "cpu"]) == 0 and "7 x 7 tokens" in capsys.readouterr().out     # <bos> a cat <eos>
    greedy = inspect_json(capsys, "lens", model_dirs["seq2seq"], "a cat", "--out", str(tmp_path / "c.png"))
    assert greedy["tokens"][0] == s2s["tokens"][0]                       # <bos>, then the greedy translation


def test_attribution_on_an_encoder_classifier(model_dirs, capsys, tmp_path):
    attr = inspect_json(capsys, "attribute", model_dirs["bert-classifier"], "a fine cat", "--steps", "16",
                        "--out", str(tmp_path / "a.png"))
    assert attr["target"] in ("neg", "pos") and len(attr["scores"]) == len(attr["tokens"])
    assert main(["inspect", "attribute", model_dirs["seq2seq"], "a cat", "--device", "cpu"]) == 2
    assert "input attribution takes classifiers" in capsys.readouterr().err


def test_cross_attention_heads_maps_and_attribution(model_dirs, capsys, tmp_path):
    s2s = model_dirs["seq2seq"]
    heads = inspect_json(capsys, "heads", s2s, "--kind", "cross", "--seq-len", "6", "--out", str(tmp_path / "h.png"))
    assert heads["kind"] == "cross" and len(heads["entropy"]) == 2 and "induction" not in heads
    assert inspect_json(capsys, "heads", s2s, "--kind", "encoder", "--seq-len", "6",
                        "--out", str(tmp_path / "e.png"))["kind"] == "encoder"
    assert main(["inspect", "attention", s2s, "a cat", "--kind", "cross", "--target", "un chat", "--out",
                 str(tmp_path / "x.png"), "--device", "cpu"]) == 0
    assert "8 x 6 tokens" in capsys.readouterr().out              # <bos> + "un chat" reading "a cat" <eos>
    dla = inspect_json(capsys, "dla", s2s, "a cat", "--target", "un chat", "--answer", "t",
                       "--out", str(tmp_path / "d.png"))
    assert {"L0X0", "L1X1", "L1 cross bias"} <= set(dla["pieces"])           # the cross-attention heads' shares
    assert abs(sum(dla["pieces"].values()) + dla["constant"] - dla["logit"]) < 1e-3
