"""`Model.attention_maps` and `lmforge attention`: the weights equal transformers' eager
attention (output_attentions) on exported GPT-2 and BERT models; encoder-decoders give the
cross attention over the source."""

from __future__ import annotations

import pytest
import torch

from lmforge.api import Model, load
from lmforge.cli import main
from lmforge.config import get_preset
from lmforge.model import build_model
from lmforge.tokenizers import Tokenizer


def _random_model(preset: str, tokenizer_dir, **kw) -> Model:
    tokenizer = Tokenizer.load(tokenizer_dir)
    torch.manual_seed(0)
    config = get_preset(preset, vocab_size=tokenizer.vocab_size, **kw)
    return Model(build_model(config).eval(), config, tokenizer)


@pytest.mark.parametrize("preset, hf_class", [("gpt-tiny", "GPT2LMHeadModel"), ("bert-tiny", "BertModel")])
def test_attention_maps_equal_transformers(tmp_path, char_data, preset, hf_class):
    transformers = pytest.importorskip("transformers")
    lm = _random_model(preset, char_data)
    lm.save(tmp_path / "hf", format="hf")
    text = "a cat sat"
    maps, (queries, keys) = lm.attention_maps(text, with_tokens=True)
    n = len(text) + (2 if preset.startswith("bert") else 0)           # [CLS] text [SEP]
    assert maps.shape == (2, 2, n, n) and queries == keys and "".join(queries).endswith("".join(text) + (
        "<eos>" if preset.startswith("bert") else ""))
    assert torch.allclose(maps.sum(-1), torch.ones(2, 2, n), atol=1e-5)
    hf = getattr(transformers, hf_class).from_pretrained(tmp_path / "hf", attn_implementation="eager").eval()
    ids = lm.tokenizer.encode(text, bos=preset.startswith("bert"), eos=preset.startswith("bert"))
    with torch.no_grad():
        ref = torch.stack(hf(torch.tensor([ids]), output_attentions=True).attentions)[:, 0]   # (L, H, T, T)
    torch.testing.assert_close(maps, ref, atol=1e-5, rtol=1e-4)
    if preset == "gpt-tiny":
        assert maps[0, 0].triu(1).abs().max() == 0                   # causal: nothing from the future


def test_cross_attention_of_an_encoder_decoder(char_data):
    lm = _random_model("seq2seq-tiny", char_data)
    maps, (queries, keys) = lm.attention_maps("a dog", target="un chien", with_tokens=True)
    assert maps.shape == (2, 2, len("un chien") + 1, len("a dog") + 1)       # <bos> + target x source + <eos>
    assert queries[0] == "<bos>" and keys[-1] == "<eos>"
    assert torch.allclose(maps.sum(-1), torch.ones(maps.shape[:3]), atol=1e-5)
    enc = lm.attention_maps("a dog", kind="encoder")
    assert enc.shape == (2, 2, 6, 6) and enc[0, 0].triu(1).abs().max() > 0    # bidirectional
    with pytest.raises(Exception, match="does not exist in a seq2seq model"):
        lm.attention_maps("a dog", kind="self")


def test_attention_cli_draws_a_png(tmp_path, tiny_model_dir, capsys):
    out = tmp_path / "attn.png"
    assert main(["attention", str(tiny_model_dir), "The for statement", "--layer", "-1", "--head", "1",
                 "--out", str(out), "--device", "cpu"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "layer 1 of 2, head 1 of 2" in capsys.readouterr().out
    assert main(["attention", str(tiny_model_dir), "x", "--head", "7", "--out", str(out), "--device", "cpu"]) == 2
    assert "--head 7 does not exist: each layer has 2 heads" in capsys.readouterr().err
    assert load(tiny_model_dir, device="cpu").attention_maps("The for").shape == (2, 2, 7, 7)
