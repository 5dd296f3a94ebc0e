"""Hugging Face interop, with `transformers` as the oracle: tiny random-weight GPT-2 and Llama
models are built from small configs (offline), saved with save_pretrained, imported, exported
and compared logit for logit and token for token."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer as HFTokenizer
from tokenizers.processors import TemplateProcessing
from transformers import (AutoModelForCausalLM, AutoTokenizer, GPT2Config, GPT2LMHeadModel, LlamaConfig,
                          LlamaForCausalLM, PreTrainedTokenizerFast)

import lmforge
from lmforge.api import Model
from lmforge.cli import main
from lmforge.config import get_preset
from lmforge.errors import ConfigError, ModelDirError
from lmforge.generate import GenerationConfig, generate, generate_ids
from lmforge.generate.core import encode_prompt
from lmforge.interop import export_hf, import_hf
from lmforge.interop.gpt2 import GPT2
from lmforge.interop.llama import LLAMA
from lmforge.model import build_model
from lmforge.tokenizers import train_char_tokenizer

from .conftest import edit_hf_dir

TEXT = "the quick brown fox jumps over the lazy dog; def main(): return 42"
SPECIAL = dict(bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>")


@pytest.fixture(scope="module")
def tok():
    return train_char_tokenizer([TEXT])


def hf_config(case: str, vocab_size: int):
    ids = dict(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    if case.startswith("gpt2"):
        return GPT2Config(vocab_size=vocab_size, n_positions=64, n_embd=32, n_layer=2, n_head=4,
                          tie_word_embeddings=case != "gpt2-untied", **ids)
    return LlamaConfig(vocab_size=vocab_size, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                       num_attention_heads=4, num_key_value_heads=1 if case == "llama-mqa-bias" else 2,
                       max_position_embeddings=64, rope_theta=500.0, rms_norm_eps=1e-5,
                       tie_word_embeddings=case == "llama-gqa-tied", attention_bias=case == "llama-mqa-bias",
                       mlp_bias=case == "llama-mqa-bias", **ids)


def make_hf(case: str, tok, directory, **save_kw):
    """A random HF model of `case` saved with its tokenizer into `directory`. Every parameter is
    perturbed (norm weights away from 1, biases away from 0) so a misplaced tensor shows."""
    torch.manual_seed(0)
    config = hf_config(case, tok.vocab_size)
    model = (GPT2LMHeadModel if case.startswith("gpt2") else LlamaForCausalLM)(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(directory, **save_kw)
    PreTrainedTokenizerFast(tokenizer_object=tok.hf, **SPECIAL).save_pretrained(directory)
    return model


def logits(module, x):
    with torch.no_grad():
        out = module(x)
    return out.logits if hasattr(out, "logits") else out


def assert_same(ours, theirs):
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


CASES = ["gpt2", "gpt2-untied", "llama-gqa", "llama-gqa-tied", "llama-mqa-bias"]


@pytest.mark.parametrize("case", CASES)
def test_import_and_export_match_transformers_logits(case, tok, tmp_path):
    sharded = case == "llama-gqa-tied"                                    # also reads model.safetensors.index.json
    hf = make_hf(case, tok, tmp_path / "hf", **({"max_shard_size": "20KB"} if sharded else {}))
    assert (tmp_path / "hf" / "model.safetensors.index.json").is_file() == sharded
    x = torch.randint(0, tok.vocab_size, (2, 24))
    expected = logits(hf, x)

    import_hf(tmp_path / "hf", tmp_path / "ours")
    imported = lmforge.load(tmp_path / "ours", device="cpu")
    assert imported.config.vocab_size == tok.vocab_size == imported.config.padded_vocab_size
    assert imported.config.tie_embeddings == hf.config.tie_word_embeddings
    assert_same(logits(imported.module, x), expected)
    assert_same(logits(lmforge.load(tmp_path / "hf", device="cpu").module, x), expected)   # the HF layout directly

    export_hf(tmp_path / "ours", tmp_path / "back")
    assert_same(logits(AutoModelForCausalLM.from_pretrained(tmp_path / "back").eval(), x), expected)


@pytest.mark.parametrize("case", ["gpt2", "llama-gqa"])
def test_greedy_generation_matches_transformers_generate(case, tok, tmp_path):
    hf = make_hf(case, tok, tmp_path / "hf")
    lm = lmforge.load(tmp_path / "hf", device="cpu")
    prompt = torch.tensor([tok.encode("the lazy fox")])
    theirs = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=32, do_sample=False,
                         eos_token_id=None, pad_token_id=0)[0, prompt.shape[1]:].tolist()
    ours, _, _ = generate_ids(lm.module, prompt.tolist(), GenerationConfig(max_new_tokens=32, greedy=True))
    assert len(theirs) == 32 and ours[0] == theirs


def test_prompts_start_with_bos_where_they_did_in_transformers(tok, tmp_path):
    """A Llama tokenizer's post-processor puts <s> before every text in transformers; imported,
    lmforge's text prompts start with it too, so greedy generation from the same text gives the
    same tokens. An explicit add_bos_token=false wins, and GPT-2 (no template) adds nothing."""
    hf = make_hf("llama-gqa", tok, tmp_path / "hf")
    tok_file = tmp_path / "hf" / "tokenizer.json"
    with_bos = HFTokenizer.from_file(str(tok_file))
    with_bos.post_processor = TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", tok.bos_id)])
    with_bos.save(str(tok_file))
    text = "the lazy fox"
    ids = AutoTokenizer.from_pretrained(tmp_path / "hf")(text).input_ids
    assert ids == [tok.bos_id] + tok.encode(text)

    import_hf(tmp_path / "hf", tmp_path / "ours")
    lm = lmforge.load(tmp_path / "ours", device="cpu")
    assert lm.tokenizer.add_bos and encode_prompt(lm.tokenizer, text) == ids
    theirs = hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                         max_new_tokens=16, do_sample=False, eos_token_id=None, pad_token_id=0)[0, len(ids):].tolist()
    ours = generate(lm.module, lm.tokenizer, text, GenerationConfig(max_new_tokens=16, greedy=True, ignore_eos=True))
    assert ours[0].prompt_tokens == len(ids) and ours[0].ids == theirs

    cfg = tmp_path / "hf" / "tokenizer_config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "add_bos_token": False}))
    assert not lmforge.load(tmp_path / "hf", device="cpu").tokenizer.add_bos
    make_hf("gpt2", tok, tmp_path / "gpt2")
    gpt2 = lmforge.load(tmp_path / "gpt2", device="cpu").tokenizer
    assert not gpt2.add_bos and encode_prompt(gpt2, text) == tok.encode(text)


@pytest.mark.parametrize("preset", ["gpt-tiny", "llama-tiny"])
def test_export_of_an_lmforge_model_loads_in_transformers(preset, tok, tmp_path):
    config = get_preset(preset, vocab_size=tok.vocab_size)
    assert config.padded_vocab_size > config.vocab_size                 # export must drop the padding rows
    torch.manual_seed(0)
    Model(build_model(config).eval(), config, tok).save(tmp_path / "ours")
    lm = lmforge.load(tmp_path / "ours", device="cpu")
    x = torch.randint(0, tok.vocab_size, (2, 16))

    export_hf(tmp_path / "ours", tmp_path / "hf")
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert type(hf).__name__ == ("GPT2LMHeadModel" if preset == "gpt-tiny" else "LlamaForCausalLM")
    assert_same(logits(hf, x), logits(lm.module, x))
    lm.save(tmp_path / "hf-from-api", format="hf")                        # the same through the Python API
    assert_same(logits(AutoModelForCausalLM.from_pretrained(tmp_path / "hf-from-api").eval(), x), logits(lm.module, x))

    hf_tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    text = "the fox 说中文 🙂 and a literal <eos> stays text"
    assert hf_tok(text)["input_ids"] == tok.encode(text)
    assert hf_tok.decode(tok.encode(text)) == text
    assert (hf_tok.bos_token_id, hf_tok.eos_token_id, hf_tok.pad_token_id) == (tok.bos_id, tok.eos_id, tok.pad_id)

    import_hf(tmp_path / "hf", tmp_path / "again")                       # and back: same tokenizer, same logits
    again = lmforge.load(tmp_path / "again", device="cpu")
    assert again.tokenizer.kind == "char" and again.tokenizer.hf.to_str() == tok.hf.to_str()
    assert_same(logits(again.module, x), logits(lm.module, x))


def test_hub_style_gpt2_directory_imports(tok, tmp_path):
    """openai-community/gpt2 stores GPT2Model names (no "transformer." prefix) and causal-mask
    buffers, and its tokenizer_config.json names no special tokens (config.json has their ids)."""
    hf = make_hf("gpt2", tok, tmp_path / "hf")
    path = tmp_path / "hf" / "model.safetensors"
    tensors = {k.removeprefix("transformer."): v for k, v in load_file(path).items()}
    tensors.update({f"h.{i}.attn.bias": torch.tril(torch.ones(1, 1, 64, 64)) for i in range(2)})
    save_file(tensors, path, metadata={"format": "pt"})
    (tmp_path / "hf" / "tokenizer_config.json").write_text('{"model_max_length": 64}')
    tok_file = tmp_path / "hf" / "tokenizer.json"
    tok_file.write_text(tok_file.read_text().replace('"<bos>"', '"<|startoftext|>"').replace('"<eos>"', '"<|endoftext|>"'))
    lm = lmforge.load(tmp_path / "hf", device="cpu")
    x = torch.randint(0, tok.vocab_size, (1, 12))
    assert_same(logits(lm.module, x), logits(hf, x))
    assert lm.tokenizer.special["eos"] == "<|endoftext|>" and (lm.tokenizer.bos_id, lm.tokenizer.eos_id) == (1, 2)


# ---------------------------------------------------------------------------- errors
@pytest.fixture(scope="module")
def gpt2_dir(tok, tmp_path_factory):
    d = tmp_path_factory.mktemp("hf") / "gpt2"
    make_hf("gpt2", tok, d)
    return d


def test_unsupported_architecture_lists_the_supported_ones(gpt2_dir, tmp_path):
    d = edit_hf_dir(gpt2_dir, tmp_path / "neox", config={"model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"]})
    with pytest.raises(ConfigError, match=r"model_type='gpt_neox' cannot be imported; lmforge supports gpt2 .*llama"):
        import_hf(d, tmp_path / "out")
    d = edit_hf_dir(gpt2_dir, tmp_path / "cls", config={"architectures": ["GPT2ForSequenceClassification"]})
    with pytest.raises(ConfigError, match=r"GPT2ForSequenceClassification.*supports gpt2 \(GPT2LMHeadModel"):
        lmforge.load(d)


def test_missing_mismatched_and_unexpected_tensors_are_named(gpt2_dir, tmp_path):
    d = edit_hf_dir(gpt2_dir, tmp_path / "missing", tensors={"transformer.h.1.ln_2.bias": None})
    with pytest.raises(ModelDirError, match=r"no tensor 'transformer.h.1.ln_2.bias' \(shape \(32,\)\)"):
        import_hf(d, tmp_path / "out")
    d = edit_hf_dir(gpt2_dir, tmp_path / "shape", tensors={"transformer.h.0.attn.c_attn.weight": torch.zeros(96, 32)})
    with pytest.raises(ModelDirError, match=r"'transformer.h.0.attn.c_attn.weight' has shape \(96, 32\) but "
                                            r"config.json implies \(32, 96\)"):
        import_hf(d, tmp_path / "out")
    d = edit_hf_dir(gpt2_dir, tmp_path / "extra", tensors={"score.weight": torch.zeros(2, 32)})
    with pytest.raises(ModelDirError, match=r"no place for: \['score.weight'\]"):
        import_hf(d, tmp_path / "out")
    d = edit_hf_dir(gpt2_dir, tmp_path / "layers", config={"n_layer": 3})
    with pytest.raises(ModelDirError, match=r"no tensor 'transformer.h.2.ln_1.weight'"):
        import_hf(d, tmp_path / "out")


def test_config_fields_lmforge_cannot_represent_are_named():
    llama = dict(vocab_size=100, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4)
    assert LLAMA.config_from_hf({**llama, "rope_theta": 5e5, "rope_scaling": None}).rope_theta == 5e5      # 4.x
    rope = {"rope_type": "default", "rope_theta": 7.0}
    assert LLAMA.config_from_hf({**llama, "rope_parameters": rope}).rope_theta == 7                      # 5.x
    with pytest.raises(ConfigError, match=r"rope_scaling=\{'type': 'linear'.*not 'linear'"):
        LLAMA.config_from_hf({**llama, "rope_scaling": {"type": "linear", "factor": 2.0}})
    with pytest.raises(ConfigError, match=r"rope_parameters=.*not 'llama3'"):
        LLAMA.config_from_hf({**llama, "rope_parameters": {"rope_type": "llama3", "rope_theta": 5e5, "factor": 8.0}})
    with pytest.raises(ConfigError, match=r"mlp_bias=False is not supported.*attention_bias is True"):
        LLAMA.config_from_hf({**llama, "attention_bias": True, "mlp_bias": False})
    with pytest.raises(ConfigError, match=r"head_dim=16 is not supported"):
        LLAMA.config_from_hf({**llama, "head_dim": 16})
    with pytest.raises(ConfigError, match=r"activation_function='gelu_fast'"):
        GPT2.config_from_hf({"activation_function": "gelu_fast"})
    with pytest.raises(ConfigError, match=r"scale_attn_by_inverse_layer_idx=True"):
        GPT2.config_from_hf({"scale_attn_by_inverse_layer_idx": True})


def test_attention_dropout_round_trips_through_hf_configs():
    # GPT-2 and BERT keep a rate for the attention weights beside the residual one; Llama has only that one
    gpt2 = GPT2.config_from_hf(GPT2Config(resid_pdrop=0.1, embd_pdrop=0.1, attn_pdrop=0.0).to_dict())
    assert (gpt2.dropout, gpt2.attn_dropout) == (0.1, 0.0)
    assert {k: GPT2.config_to_hf(gpt2)[k] for k in ("resid_pdrop", "attn_pdrop")} == {"resid_pdrop": 0.1,
                                                                                       "attn_pdrop": 0.0}
    assert GPT2.config_from_hf(GPT2Config().to_dict()).attention_dropout is None   # equal rates: follows dropout
    llama = LLAMA.config_from_hf(LlamaConfig(attention_dropout=0.1).to_dict())
    assert (llama.dropout, llama.attn_dropout, LLAMA.config_to_hf(llama)["attention_dropout"]) == (0.0, 0.1, 0.1)


def test_export_refuses_a_model_no_hf_architecture_holds(tok, tmp_path):
    config = get_preset("gpt-tiny", vocab_size=tok.vocab_size, position="rope")
    Model(build_model(config), config, tok).save(tmp_path / "ours")
    with pytest.raises(ConfigError, match=r"as gpt2: position='rope' .*as llama: norm='layernorm'"):
        export_hf(tmp_path / "ours", tmp_path / "hf")


def test_directory_errors(gpt2_dir, tmp_path, capsys):
    d = edit_hf_dir(gpt2_dir, tmp_path / "pickle")
    (d / "model.safetensors").rename(d / "pytorch_model.bin")
    with pytest.raises(ModelDirError, match=r"pytorch_model.bin, a pickle, which lmforge never loads"):
        import_hf(d, tmp_path / "out")
    d = edit_hf_dir(gpt2_dir, tmp_path / "notok")
    (d / "tokenizer.json").unlink()
    with pytest.raises(ModelDirError, match=r"has no tokenizer.json; .*AutoTokenizer"):
        import_hf(d, tmp_path / "out")
    import_hf(gpt2_dir, tmp_path / "out")
    assert main(["import", str(gpt2_dir), str(tmp_path / "out")]) == 2
    assert "already holds a model (config.json); pass --overwrite" in capsys.readouterr().err
    assert main(["import", str(gpt2_dir), str(tmp_path / "out"), "--overwrite"]) == 0
    assert main(["export", str(gpt2_dir), str(tmp_path / "again")]) == 2
    assert "already a Hugging Face model directory" in capsys.readouterr().err
