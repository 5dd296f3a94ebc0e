"""GGUF export and import. Oracles: lmforge's own logits (an f32 round trip is exact), the
`gguf` package's reference quantizers (ggml's block layouts), and `transformers`' GGUF reader,
which loads the exported file with its own tensor and tokenizer mapping."""

from __future__ import annotations

import json

import gguf
import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q
from transformers import AutoModelForCausalLM, AutoTokenizer

import lmforge
from lmforge.api import Model
from lmforge.cli import main
from lmforge.config import get_preset
from lmforge.data.chat import ChatTemplate, set_chat_template
from lmforge.errors import ConfigError, ModelDirError
from lmforge.interop import export_gguf, import_gguf
from lmforge.interop.gguf.quants import dequantize
from lmforge.interop.gguf.vocab import tokenizer_from_metadata, tokenizer_metadata
from lmforge.model import build_model
from lmforge.tokenizers import train_char_tokenizer
from lmforge.tokenizers.bpe import train_bpe_tokenizer

TEXT = "the quick brown fox jumps over the lazy dog; def main(): return 42 — 说中文 🙂 naïve café\n"
UNICODE = "the fox 说中文 🙂 and a literal <eos> stays text; ünïcödé  ∑ x²\ttab"


@pytest.fixture(scope="module")
def bpe():
    return train_bpe_tokenizer([TEXT * 20], vocab_size=320)


def perturbed(config):
    """A random model whose every parameter (norms and biases too) is moved off its init."""
    torch.manual_seed(0)
    model = build_model(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def save_model(preset, tokenizer, directory, **overrides):
    config = get_preset(preset, vocab_size=tokenizer.vocab_size, **overrides)
    Model(perturbed(config), config, tokenizer).save(directory)
    return lmforge.load(directory, device="cpu")


def logits(module, x):
    with torch.no_grad():
        out = module(x)
    return out.logits if hasattr(out, "logits") else out


def ids(vocab_size):
    return torch.randint(0, vocab_size, (2, 24), generator=torch.Generator().manual_seed(1))


# llama-tiny has GQA (4 query / 2 kv heads) and an untied head; the variants cover the rest. transformers'
# GGUF reader ignores Llama biases (its config never sets attention_bias), so it is no oracle for those.
CASES = {"gpt2": ("gpt-tiny", {}), "llama": ("llama-tiny", {}),
         "llama-tied-mqa": ("llama-tiny", {"tie_embeddings": True, "n_kv_head": 1}),
         "llama-bias": ("llama-tiny", {"bias": True})}


@pytest.mark.parametrize("case", CASES)
def test_f32_round_trip_is_exact_and_transformers_reads_the_file(case, bpe, tmp_path):
    preset, overrides = CASES[case]
    lm = save_model(preset, bpe, tmp_path / "ours", **overrides)
    x = ids(bpe.vocab_size)
    done = export_gguf(tmp_path / "ours", tmp_path / "m.gguf", outtype="f32")
    assert done["architecture"] == ("gpt2" if preset.startswith("gpt") else "llama")

    back = lmforge.load(tmp_path / "m.gguf", device="cpu")                     # load reads .gguf directly
    assert torch.equal(logits(back.module, x), logits(lm.module, x))
    lm.save(tmp_path / "api.gguf", format="gguf")                               # the Python side of export
    assert torch.equal(logits(lmforge.load(tmp_path / "api.gguf", device="cpu").module, x), logits(lm.module, x))
    assert back.config.tie_embeddings == lm.config.tie_embeddings and back.config.bias == lm.config.bias
    assert back.tokenizer.encode(UNICODE) == bpe.encode(UNICODE)
    assert back.tokenizer.decode(bpe.encode(UNICODE)) == UNICODE
    assert back.tokenizer.kind == "bpe" and back.tokenizer.special == bpe.special

    if lm.config.bias and preset.startswith("llama"):
        return
    # the independent oracle: transformers' GGUF reader (its own name table, q/k un-permutation, tokenizer)
    kw = {"n_positions": lm.config.context_length} if preset.startswith("gpt") else {}   # it maps context_length
    hf = AutoModelForCausalLM.from_pretrained(tmp_path, gguf_file="m.gguf", **kw).eval()  # to n_ctx, not n_positions
    torch.testing.assert_close(logits(hf, x), logits(lm.module, x), atol=1e-5, rtol=0)
    hf_tok = AutoTokenizer.from_pretrained(tmp_path, gguf_file="m.gguf")
    assert hf_tok(UNICODE, add_special_tokens=False, split_special_tokens=True)["input_ids"] == bpe.encode(UNICODE)
    assert (hf_tok.bos_token_id, hf_tok.eos_token_id, hf_tok.pad_token_id) == (bpe.bos_id, bpe.eos_id, bpe.pad_id)


@pytest.mark.parametrize("outtype, tolerance", [("f16", 0.005), ("bf16", 0.05), ("q8_0", 0.05)])
def test_reduced_precision_exports_stay_close(outtype, tolerance, bpe, tmp_path):
    """Stated tolerance: max |logit difference| <= tolerance * max |logit| on random weights of std ~0.1."""
    lm = save_model("llama-tiny", bpe, tmp_path / "ours")
    export_gguf(tmp_path / "ours", tmp_path / "f32.gguf", outtype="f32")
    done = export_gguf(tmp_path / "ours", tmp_path / f"{outtype}.gguf", outtype=outtype)
    assert done["bytes"] < (tmp_path / "f32.gguf").stat().st_size * (0.6 if outtype == "q8_0" else 0.8)
    reader = gguf.GGUFReader(tmp_path / f"{outtype}.gguf")
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["blk.0.attn_q.weight"] == outtype.upper() and types["blk.0.attn_norm.weight"] == "F32"
    x = ids(bpe.vocab_size)
    ref = logits(lm.module, x)
    again = logits(lmforge.load(tmp_path / f"{outtype}.gguf", device="cpu").module, x)
    assert 0 < (again - ref).abs().max() <= tolerance * ref.abs().max()


def test_char_tokenizer_is_written_as_sentencepiece_and_reads_back(tmp_path):
    char = train_char_tokenizer([TEXT])
    lm = save_model("gpt-tiny", char, tmp_path / "ours")
    export_gguf(tmp_path / "ours", tmp_path / "m.gguf")
    meta = gguf.GGUFReader(tmp_path / "m.gguf").fields
    assert meta["tokenizer.ggml.model"].contents() == "llama"
    tokens = meta["tokenizer.ggml.tokens"].contents()
    assert "\u2581" in tokens and " " not in tokens and meta["tokenizer.ggml.token_type"].contents()[5] == 6   # <0x00>
    back = lmforge.load(tmp_path / "m.gguf", device="cpu")
    assert back.tokenizer.encode(UNICODE) == char.encode(UNICODE)       # unseen characters fall back to bytes
    assert back.tokenizer.decode(char.encode(UNICODE)) == UNICODE
    x = ids(char.vocab_size)
    assert torch.equal(logits(back.module, x), logits(lm.module, x))


def test_sentencepiece_vocabulary_with_merges_encodes_like_transformers(tmp_path):
    """A Llama-style (TinyLlama) vocabulary: scores, a space prefix, merges recovered from scores."""
    pieces = ["\u2581", "a", "b", "c", "\u2581a", "ab", "\u2581ab", "bc", "\u2581abc", "\u2581b"]
    tokens = ["<unk>", "<s>", "</s>", *[f"<0x{b:02X}>" for b in range(256)], *pieces]
    types = [2, 3, 3] + [6] * 256 + [1] * len(pieces)
    scores = [0.0] * 259 + [-float(i) for i in range(len(pieces))]
    meta = {"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": tokens, "tokenizer.ggml.token_type": types,
            "tokenizer.ggml.scores": scores, "tokenizer.ggml.bos_token_id": 1, "tokenizer.ggml.eos_token_id": 2,
            "tokenizer.ggml.unknown_token_id": 0}
    ours = tokenizer_from_metadata(meta, "test")
    assert ours.add_bos and ours.special["bos"] == "<s>"                  # llama.cpp adds <s> to sentencepiece
    writer = gguf.GGUFWriter(tmp_path / "spm.gguf", "llama")
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_scores(scores)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_unk_token_id(0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    theirs = AutoTokenizer.from_pretrained(tmp_path, gguf_file="spm.gguf")
    for text in ("abc abc", "a bc cab", "ab é", "c"):
        assert ours.encode(text) == theirs(text, add_special_tokens=False)["input_ids"], text
        assert ours.decode(ours.encode(text)) == text


def test_an_imported_sentencepiece_tokenizer_exports_and_reads_back():
    """A Llama tokenizer as transformers builds it (byte-fallback BPE, Metaspace "▁", merges) goes
    to GGUF's sentencepiece form (merge order as scores, the space prefix) and back unchanged in use."""
    from transformers import LlamaTokenizer
    pieces = ["\u2581", "a", "b", "c", "\u2581a", "ab", "\u2581ab", "bc", "\u2581abc", "\u2581b"]
    vocab = {t: i for i, t in enumerate(["<unk>", "<s>", "</s>", *[f"<0x{b:02X}>" for b in range(256)], *pieces])}
    merges = [("\u2581", "a"), ("a", "b"), ("\u2581a", "b"), ("b", "c"), ("\u2581ab", "c"), ("\u2581", "b")]
    hf = LlamaTokenizer(vocab=vocab, merges=merges)
    ours = lmforge.Tokenizer(hf.backend_tokenizer, "hf", {"bos": "<s>", "eos": "</s>", "unk": "<unk>"})
    meta = tokenizer_metadata(ours, len(vocab))
    assert meta["tokenizer.ggml.model"] == "llama" and meta["tokenizer.ggml.add_space_prefix"] is True
    back = tokenizer_from_metadata(meta, "test")
    # (not text starting with a space: llama.cpp always adds the prefix, transformers' Metaspace only when missing)
    for text in ("abc abc", "a bc cab", "ab é 🙂", "c", "cab  abc"):
        assert back.encode(text) == ours.encode(text) == hf(text, add_special_tokens=False)["input_ids"], text
        assert back.decode(back.encode(text)) == text


def test_chat_template_is_written_in_jinja_and_survives_the_round_trip(bpe, tmp_path):
    config = get_preset("llama-tiny", vocab_size=bpe.vocab_size)
    tok = train_bpe_tokenizer([TEXT * 20], vocab_size=320)
    set_chat_template(tok, ChatTemplate(system="<|sys|>\n"))
    Model(perturbed(config), config, tok).save(tmp_path / "ours")
    export_gguf(tmp_path / "ours", tmp_path / "m.gguf")
    messages = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Hi ü"},
                {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}]
    hf_tok = AutoTokenizer.from_pretrained(tmp_path, gguf_file="m.gguf")
    rendered = hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    ids_, _ = ChatTemplate(system="<|sys|>\n").render(tok, messages, add_generation_prompt=True)
    assert rendered == tok.decode(ids_, skip_special_tokens=False)
    import_gguf(tmp_path / "m.gguf", tmp_path / "back")
    cfg = json.loads((tmp_path / "back" / "tokenizer_config.json").read_text())
    assert cfg["lmforge_chat_template"]["system"] == "<|sys|>\n"


# ---- dequantization against the gguf package's reference implementation (ggml's layouts)
@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_0", "F16", "BF16"])
def test_dequantize_matches_the_gguf_reference(qtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 256)).astype(np.float32) * 3
    raw = gguf.quants.quantize(x, Q[qtype]) if qtype != "F16" else x.astype(np.float16)
    ours = dequantize(raw, qtype, x.shape).numpy()
    np.testing.assert_array_equal(ours, gguf.quants.dequantize(raw, Q[qtype]).reshape(x.shape))
    assert np.abs(ours - x).max() < {"Q8_0": 0.1, "Q4_0": 1.5, "F16": 0.01, "BF16": 0.1}[qtype]


def q4_k_blocks(n_blocks: int, seed: int = 0) -> np.ndarray:
    """Random Q4_K super-blocks (gguf-py has no Q4_K quantizer): random nibbles and 6-bit scales,
    small positive f16 d / dmin."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (n_blocks, 144), dtype=np.uint8)
    for at in (0, 2):
        halves = rng.uniform(0.001, 0.05, n_blocks).astype(np.float16)
        blocks[:, at:at + 2] = halves.view(np.uint8).reshape(n_blocks, 2)
    return blocks


def test_q4_k_dequantizes_like_the_gguf_reference():
    blocks = q4_k_blocks(12)
    ours = dequantize(blocks, "Q4_K", (3, 1024)).numpy()
    np.testing.assert_array_equal(ours, gguf.quants.dequantize(blocks.reshape(3, 4 * 144), Q.Q4_K))


def rewrite(src, dst, replace):
    """Copy a GGUF file, `replace(name, float32 array) -> (data, raw type or None)` giving each tensor."""
    reader = gguf.GGUFReader(src)
    writer = gguf.GGUFWriter(dst, reader.fields["general.architecture"].contents())
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), field.types[0], sub_type=sub)
    for t in reader.tensors:
        data, raw = replace(t.name, gguf.quants.dequantize(t.data, t.tensor_type))
        writer.add_tensor(t.name, data, raw_dtype=raw)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_import_of_q4_0_and_q4_k_files_holds_the_dequantized_weights(bpe, tmp_path):
    """A public-checkpoint-like file: Q4_0 projections, a Q4_K embedding (rows of 256 values)."""
    save_model("llama-tiny", bpe, tmp_path / "ours", d_model=256, n_head=4, n_kv_head=2, n_layer=1)
    export_gguf(tmp_path / "ours", tmp_path / "f32.gguf")
    vocab = bpe.vocab_size
    embd = q4_k_blocks(vocab)

    def replace(name, x):
        if name == "token_embd.weight":
            return embd, Q.Q4_K
        if name.endswith("attn_q.weight") or name.endswith("ffn_down.weight"):
            return gguf.quants.quantize(x, Q.Q4_0), Q.Q4_0
        return x, None

    rewrite(tmp_path / "f32.gguf", tmp_path / "q4.gguf", replace)
    out = main(["import", str(tmp_path / "q4.gguf"), str(tmp_path / "imported"), "--no-progress"])
    assert out == 0
    weights = lmforge.load(tmp_path / "imported", device="cpu").module.state_dict()
    expected = torch.from_numpy(gguf.quants.dequantize(embd.reshape(vocab, 144), Q.Q4_K)).float()
    torch.testing.assert_close(weights["transformer.tok_emb.weight"], expected, atol=0, rtol=0)
    reader = gguf.GGUFReader(tmp_path / "q4.gguf")
    down = next(t for t in reader.tensors if t.name == "blk.0.ffn_down.weight")
    torch.testing.assert_close(weights["transformer.blocks.0.mlp.proj.weight"],
                               torch.from_numpy(gguf.quants.dequantize(down.data, Q.Q4_0)), atol=0, rtol=0)


# ---- errors a user can act on
def test_unsupported_architectures_and_types_are_refused_with_the_supported_ones(bpe, tmp_path):
    save_model("llama-tiny", bpe, tmp_path / "ours")
    export_gguf(tmp_path / "ours", tmp_path / "m.gguf")
    writer = gguf.GGUFWriter(tmp_path / "qwen.gguf", "qwen2")
    writer.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ConfigError, match="'qwen2' cannot be imported; lmforge supports llama, gpt2"):
        import_gguf(tmp_path / "qwen.gguf", tmp_path / "out")
    rewrite(tmp_path / "m.gguf", tmp_path / "q5.gguf", lambda name, x: (
        (gguf.quants.quantize(x, Q.Q5_0), Q.Q5_0) if name == "blk.0.attn_q.weight" else (x, None)))
    with pytest.raises(ConfigError, match="type Q5_0.*F32, F16, BF16, Q8_0, Q4_0, Q4_K"):
        lmforge.load(tmp_path / "q5.gguf", device="cpu")


def test_export_refusals_and_file_errors(bpe, tmp_path, capsys):
    save_model("llama-tiny", bpe, tmp_path / "ours")
    Model(build_model(c := get_preset("bert-tiny", vocab_size=bpe.vocab_size)), c, bpe).save(tmp_path / "bert")
    cases = [
        (["export", str(tmp_path / "bert"), str(tmp_path / "b.gguf"), "--format", "gguf"], "no GGUF architecture"),
        (["export", str(tmp_path / "ours"), str(tmp_path / "noext"), "--format", "gguf"], "should end in .gguf"),
        (["export", str(tmp_path / "ours"), str(tmp_path / "hf"), "--outtype", "q8_0"],
         "--outtype is for --format gguf"),
        (["import", str(tmp_path / "missing.gguf"), str(tmp_path / "x")], "missing.gguf does not exist"),
    ]
    (tmp_path / "bad.gguf").write_bytes(b"not a gguf file at all")
    cases.append((["import", str(tmp_path / "bad.gguf"), str(tmp_path / "x")], "not a readable GGUF file"))
    for argv, message in cases:
        assert main(argv) == 2, argv
        assert message in capsys.readouterr().err
    assert main(["export", str(tmp_path / "ours"), str(tmp_path / "m.gguf"), "--format", "gguf", "--no-progress"]) == 0
    assert "llama-cli -m" in capsys.readouterr().out
    assert main(["export", str(tmp_path / "ours"), str(tmp_path / "m.gguf"), "--format", "gguf"]) == 2
    assert "already exists; pass --overwrite" in capsys.readouterr().err
    main(["import", str(tmp_path / "m.gguf"), str(tmp_path / "imp"), "--no-progress"])
    assert main(["import", str(tmp_path / "m.gguf"), str(tmp_path / "imp")]) == 2      # never over a model
    assert "--overwrite" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="wordpiece tokenizer has no GGUF form"):
        from lmforge.tokenizers.wordpiece import train_wordpiece_tokenizer
        wp = train_wordpiece_tokenizer([TEXT * 5], vocab_size=120)
        config = get_preset("llama-tiny", vocab_size=wp.vocab_size)
        Model(build_model(config), config, wp).save(tmp_path / "wp")
        export_gguf(tmp_path / "wp", tmp_path / "wp.gguf")
    with pytest.raises(ModelDirError):
        export_gguf(tmp_path / "nothere", tmp_path / "n.gguf")
