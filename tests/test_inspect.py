"""`lmforge.inspect` on every family: hook points that cost nothing until a trace or a patch opens
them, edits that reach generation, the tools' own invariants (the lens's last row is the output,
direct attribution adds up, integrated gradients are complete), the families each tool takes, and
`lmforge inspect` on the command line. (The references are in test_inspect_oracle.py; a trained
circuit in test_inspect_circuit.py.)"""

from __future__ import annotations

import json

import pytest
import torch

from lmforge.api import Model, load
from lmforge.cli import main
from lmforge.config import get_preset
from lmforge.errors import LmforgeError
from lmforge.inspect import hook_names

from .test_inspect_oracle import random_model

FAMILIES = [("gpt-tiny", {}), ("llama-tiny", {}), ("bert-tiny", {}), ("seq2seq-tiny", {}),
            ("seq2seq-tiny", {"norm_position": "pre", "position": "rope", "mlp": "swiglu", "norm": "rmsnorm"})]


def hooks_set(lm: Model) -> list[str]:
    return [name for name, m in lm.module.named_modules() if getattr(m, "hook", None) is not None]


def run(lm: Model, text: str = "a cat sat") -> torch.Tensor:
    ids = torch.tensor([lm.tokenizer.encode(text)])
    with torch.no_grad():
        return lm.module(ids, ids) if lm.config.family == "seq2seq" else lm.module(ids)


@pytest.mark.parametrize("preset, kw", FAMILIES)
def test_every_hook_point_fires_and_none_is_left_set(char_data, preset, kw):
    lm = random_model(preset, char_data, **kw)
    before = run(lm)
    trace = lm.trace("a cat sat", target="un chat" if lm.config.family == "seq2seq" else None)
    assert trace.names == hook_names(lm.module) and hooks_set(lm) == []       # each point fired; all unset after
    assert torch.allclose(run(lm), before, atol=1e-6)                      # written-out attention = the fused one
    n_layer = lm.config.n_layer
    if lm.config.family == "seq2seq":
        assert trace["decoder.blocks.0.cross_attn.hook_pattern"].shape == (2, 8, len(trace.source_tokens))
        assert len([n for n in trace.names if n.startswith("encoder.")]) >= 12 * n_layer
    else:
        T, H, hs = len(trace.tokens), lm.config.n_head, lm.config.head_dim
        assert trace["blocks.1.attn.hook_z"].shape == (T, H, hs)
        assert trace["blocks.1.attn.hook_result"].shape == (T, H, lm.config.d_model)
        assert torch.allclose(trace["blocks.1.attn.hook_result"].sum(1), trace["blocks.1.hook_attn_out"]
                              - lm.module.transformer.blocks[1].attn.out(torch.zeros(H * hs)), atol=1e-5)


def test_trace_takes_globs_and_names_unknown_points(char_data):
    lm = random_model("gpt-tiny", char_data)
    trace = lm.trace("a cat", names=["blocks.*.hook_resid_post", "hook_embed"])
    assert trace.names == ["hook_embed", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    head = lm.module.lm_head(lm.module.transformer.norm(trace["blocks.1.hook_resid_post"]))
    assert torch.allclose(head[:, : lm.config.vocab_size], trace.logits, atol=1e-5)
    with pytest.raises(LmforgeError, match="no hook point of this decoder model matches 'blocks.9.hook_z'"):
        lm.trace("a cat", names=["blocks.9.hook_z"])


def test_only_the_modules_asked_for_get_a_hook(char_data):
    lm = random_model("gpt-tiny", char_data)
    seen = []
    with lm.patched({"blocks.1.hook_resid_mid": lambda x, name: seen.append(hooks_set(lm))}):
        run(lm)
    assert seen == [["transformer.blocks.1"]]                     # attention keeps its fused kernel


def test_patched_edits_every_forward_generation_included(char_data):
    lm = random_model("gpt-tiny", char_data)
    plain = lm.generate("a cat", max_new_tokens=6, greedy=True)
    z = lm.tokenizer.encode("z")[0]
    push = 50 * lm.module.lm_head.weight[z].detach()              # toward the token 'z'

    def toward_z(resid, name):
        resid += push                                            # in place: returning None keeps the tensor
    with lm.patched({"blocks.1.hook_resid_post": toward_z}):
        assert lm.generate("a cat", max_new_tokens=6, greedy=True) == "zzzzzz"
        trace = lm.trace("a cat", names=["blocks.1.hook_resid_post"])    # a trace inside sees the edit
    assert lm.generate("a cat", max_new_tokens=6, greedy=True) == plain and hooks_set(lm) == []
    assert trace.logits[-1].argmax() == z
    with pytest.raises(LmforgeError, match="must be a function"):
        lm.patched({"hook_embed": 3})


@pytest.mark.parametrize("preset, kw", FAMILIES[:4])
def test_logit_lens_ends_in_the_model_output(char_data, preset, kw):
    lm = random_model(preset, char_data, **kw)
    target = "un chat" if lm.config.family == "seq2seq" else None
    lens = lm.logit_lens("a cat", target=target, top_k=3)
    probs = lm.trace("a cat", names=[], target=target).logits.softmax(-1)
    L = len(lens.layers)
    assert L == lm.config.n_layer + 1 and lens.layers[-1] == "final_post" and lens.top_probs.shape[2] == 3
    assert torch.allclose(lens.top_probs[-1, :, 0], probs.max(-1).values, atol=1e-5)
    if lm.config.family == "encoder":                              # an encoder reconstructs the token itself
        assert lens.expected == lm.tokenizer.encode("a cat", bos=True, eos=True)
    else:
        assert lens.expected[-1] is None and lens.expected_rank[:, -1].eq(-1).all()
    assert json.loads(json.dumps(lens.to_dict()))["layers"] == lens.layers and "final_post" in lens.table()


@pytest.mark.parametrize("preset, kw", [FAMILIES[0], FAMILIES[1], FAMILIES[4]])
def test_direct_logit_attribution_adds_up_to_the_logit(char_data, preset, kw):
    lm = random_model(preset, char_data, **kw)
    attr = lm.dla("a cat sat", answer="t", wrong="a", position=3, target="un chat sur")
    assert attr.heads.shape == (2, lm.config.n_head) and attr.position == 3
    assert abs(attr.total() - attr.logit) < 1e-4
    assert (attr.cross_heads is not None) == (lm.config.family == "seq2seq")
    assert (attr.constant == 0) == (lm.config.norm == "rmsnorm")          # RMSNorm has no bias term
    with pytest.raises(LmforgeError, match="must be one token; it is 2"):
        lm.dla("a cat", answer="at", target="un")


def test_tools_say_which_families_they_take(char_data):
    bert = random_model("bert-tiny", char_data)
    with pytest.raises(LmforgeError, match="direct logit attribution takes pre-norm decoders"):
        bert.dla("a cat", answer="a")
    with pytest.raises(LmforgeError, match="activation patching takes decoder models"):
        bert.patch("a cat", "a dog", answer="a", wrong="b")
    with pytest.raises(LmforgeError, match="input attribution takes classifiers"):
        bert.attribute("a cat")
    gpt = random_model("gpt-tiny", char_data)
    with pytest.raises(LmforgeError, match="same number of tokens; they have 5 and 4"):
        gpt.patch("a cat", "a ca", answer="a", wrong="b")
    with pytest.raises(LmforgeError, match="nothing to restore"):
        gpt.patch("a cat", "a cat", answer="a", wrong="b")
    with pytest.raises(LmforgeError, match="does not fit twice in the model's context of 64"):
        gpt.head_scores(seq_len=40)


@pytest.mark.parametrize("preset", ["gpt-tiny", "bert-tiny"])
def test_integrated_gradients_are_complete_for_classifiers_and_next_tokens(char_data, preset):
    lm = random_model(preset, char_data, labels=["neg", "pos"])
    attr = lm.attribute("a fine cat", steps=32)
    assert attr.target in ("neg", "pos") and attr.scores.shape == (len(attr.tokens),)
    assert abs(attr.delta) <= 0.01 * abs(attr.output - attr.baseline_output)
    if preset == "gpt-tiny":
        lm.config.labels = []                                     # the same weights as a language model
        nxt = lm.attribute("a fine cat", method="gxi")
        assert nxt.steps is None and len(nxt.tokens) == len("a fine cat")
        assert lm.attribute("a fine cat", target="x", steps=32).target == "x"
    with pytest.raises(LmforgeError, match="'maybe' is not a label"):
        random_model(preset, char_data, labels=["neg", "pos"]).attribute("a cat", target="maybe")


def test_head_scores_of_each_kind_of_attention(char_data):
    lm = random_model("seq2seq-tiny", char_data)
    cross = lm.head_scores(kind="cross", seq_len=8)
    assert cross.previous_token is None and cross.entropy.shape == (2, 2)
    dec = lm.head_scores(seq_len=8)
    assert dec.kind == "decoder" and dec.induction.shape == (2, 2) and len(dec.tokens) == 17   # <bos> + 2 x 8
    enc = lm.head_scores(kind="encoder", seq_len=8, alphabet="abc")
    assert set("".join(enc.tokens[:16])) <= set("abc") and (enc.entropy > 0).all()
    with pytest.raises(LmforgeError, match="'self' does not exist in a seq2seq model"):
        lm.head_scores(kind="self")


def test_inspect_cli_prints_tables_json_and_pictures(tmp_path, tiny_model_dir, capsys):
    model = str(tiny_model_dir)
    for tool, extra in [("lens", ["The for"]), ("dla", ["The for", "--answer", " "]),
                        ("patch", ["The for", "--corrupted", "The fox", "--answer", " ", "--wrong", "e"]),
                        ("attribute", ["The for", "--steps", "8"]), ("heads", ["--seq-len", "6"]),
                        ("attention", ["The for"])]:
        out = tmp_path / f"{tool}.png"
        assert main(["inspect", tool, model, *extra, "--out", str(out), "--device", "cpu"]) == 0, tool
        assert out.read_bytes()[:4] == b"\x89PNG" and f"wrote {out}" in capsys.readouterr().out
    assert main(["inspect", "lens", model, "The for", "--json", "--out", str(tmp_path / "l.png")]) == 0
    lens = json.loads(capsys.readouterr().out)
    assert lens["tool"] == "lens" and lens["tokens"] == list("The for") and len(lens["layers"]) == 3
    assert main(["inspect", "patch", model, "The for", "--corrupted", "The", "--answer", " ", "--wrong", "e"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lmforge inspect: error: the clean and corrupted prompts must have the same number") \
        and "Traceback" not in err and err.count("\n") == 1
    assert main(["inspect", "dla", model, "The for"]) == 2
    assert "needs the answer token (--answer TOKEN)" in capsys.readouterr().err
    assert load(tiny_model_dir, device="cpu").head_scores(seq_len=6).seq_len == 6
