import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lmforge.errors import ConfigError, ModelDirError
from lmforge.tokenizers import (SPECIAL_TOKENS, Tokenizer, train_bpe_tokenizer, train_char_tokenizer, train_tokenizer,
                                train_wordpiece_tokenizer)

TRAIN_TEXT = ["The quick brown fox jumps over the lazy dog. " * 20, "def f(x):\n    return x + 1\n" * 10,
              "床前明月光，疑是地上霜。", "emoji 🎉🚀 and accents é ü ñ"]


@pytest.fixture(scope="module")
def char_tok():
    return train_char_tokenizer(TRAIN_TEXT)


@pytest.fixture(scope="module")
def bpe_tok():
    return train_bpe_tokenizer(TRAIN_TEXT, vocab_size=400)


text_strategy = st.text(st.characters(codec="utf-8"), max_size=200)


@settings(max_examples=300, deadline=None)
@given(text_strategy)
def test_char_round_trip_any_unicode(char_tok, text):
    assert char_tok.decode(char_tok.encode(text)) == text


@settings(max_examples=300, deadline=None)
@given(text_strategy)
def test_bpe_round_trip_any_unicode(bpe_tok, text):
    assert bpe_tok.decode(bpe_tok.encode(text)) == text


@settings(max_examples=100, deadline=None)
@given(text_strategy)
def test_stream_decoding_matches_decode(bpe_tok, text):
    ids = bpe_tok.encode(text)
    assert "".join(bpe_tok.stream(ids)) == bpe_tok.decode(ids)


@pytest.mark.parametrize("make", [lambda: train_char_tokenizer(TRAIN_TEXT),
                                  lambda: train_bpe_tokenizer(TRAIN_TEXT, vocab_size=300),
                                  lambda: train_wordpiece_tokenizer(TRAIN_TEXT, vocab_size=300)])
def test_special_tokens_have_fixed_ids_recorded_in_the_file(tmp_path, make):
    tok = make()
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id, tok.mask_id) == (0, 1, 2, 3, 4)
    tok.save(tmp_path)
    added = {t["content"]: t["id"] for t in json.loads((tmp_path / "tokenizer.json").read_text())["added_tokens"]}
    assert added == {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3, "<mask>": 4}
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert cfg["eos_token"] == "<eos>" and cfg["pad_token"] == "<pad>"
    again = Tokenizer.load(tmp_path)
    assert again.kind == tok.kind and again.eos_id == 2
    sample = "héllo 世界 🎉"
    assert again.encode(sample) == tok.encode(sample)


def test_literal_special_token_text_is_not_a_special_token(char_tok, bpe_tok):
    for tok in (char_tok, bpe_tok):
        ids = tok.encode("a <eos> b")
        assert set(ids).isdisjoint(SPECIAL_TOKENS_IDS)
        assert tok.decode(ids) == "a <eos> b"


SPECIAL_TOKENS_IDS = {0, 1, 2, 3, 4}


def test_char_golden_ids():
    tok = train_char_tokenizer(["abba"])              # 5 specials + 256 bytes, then b, a (by count; ties by first)
    assert tok.vocab_size == 263
    assert tok.encode("ab") == [261, 262] or tok.encode("ab") == [262, 261]
    assert tok.encode("€") == [5 + 0xE2, 5 + 0x82, 5 + 0xAC]     # unseen char -> its UTF-8 bytes
    assert tok.decode(tok.encode("a€b")) == "a€b"


def test_bos_eos_wrapping(char_tok):
    ids = char_tok.encode("hi", bos=True, eos=True)
    assert ids[0] == char_tok.bos_id and ids[-1] == char_tok.eos_id
    assert char_tok.decode(ids) == "hi"


def test_bpe_vocab_too_small_for_specials():
    with pytest.raises(ConfigError, match="special tokens.*--vocab-size 261"):
        train_bpe_tokenizer(TRAIN_TEXT, vocab_size=100)


def test_unknown_tokenizer_kind():
    with pytest.raises(ConfigError, match="unknown tokenizer kind 'wordpeice'"):
        train_tokenizer("wordpeice", TRAIN_TEXT)


def test_bpe_compresses_better_than_char(char_tok, bpe_tok):
    text = TRAIN_TEXT[0]
    assert len(bpe_tok.encode(text)) < len(char_tok.encode(text)) / 2


def test_missing_or_corrupt_tokenizer_file(tmp_path):
    with pytest.raises(ModelDirError, match="no tokenizer"):
        Tokenizer.load(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ModelDirError, match="not a readable tokenizer.json"):
        Tokenizer.load(tmp_path)


def test_streaming_survives_invalid_byte_sequences():
    """A model can emit any byte-fallback tokens; HF's DecodeStream raises on some invalid
    sequences, the stream must not (it restarts at that token)."""
    import random
    tok = train_char_tokenizer(["héllo wörld ✓"])
    rng = random.Random(0)
    for _ in range(50):
        ids = [rng.randrange(tok.vocab_size) for _ in range(30)]
        assert isinstance("".join(tok.stream(ids)), str)


def test_wordpiece_pieces_and_normalisation():
    tok = train_wordpiece_tokenizer(["the player plays; players played. 你好世界"] * 50, vocab_size=80)
    assert tok.kind == "wordpiece"
    pieces = [tok.id_to_token(i) for i in tok.encode("players")]
    assert pieces[0].startswith("play") and all(p.startswith("##") for p in pieces[1:])
    assert tok.decode(tok.encode("players play")) == "players play"          # words, not exact bytes
    assert tok.encode("zzz") == [tok.unk_id]                                # no piece for z: unknown word
    assert len(tok.encode("你好")) == 2                                      # CJK characters split apart
    lower = train_wordpiece_tokenizer(["Hello World"] * 20, vocab_size=60, lowercase=True)
    assert lower.decode(lower.encode("HELLO")) == "hello"


def test_old_tokenizer_without_mask_has_no_mask_role(tmp_path):
    tok = train_bpe_tokenizer(TRAIN_TEXT, vocab_size=300)
    tok.save(tmp_path)
    cfg = json.loads((tmp_path / "tokenizer_config.json").read_text())
    del cfg["mask_token"]
    raw = json.loads((tmp_path / "tokenizer.json").read_text())
    raw["added_tokens"] = [t for t in raw["added_tokens"] if t["content"] != "<mask>"]
    raw["model"]["vocab"].pop("<mask>")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(cfg))
    (tmp_path / "tokenizer.json").write_text(json.dumps(raw))
    assert Tokenizer.load(tmp_path).mask_id is None


def test_wordpiece_ids_are_canonical():
    # HF's trainer numbers "##" pieces in hash order (huggingface/tokenizers#1794), so the same text gave
    # different ids each run; lmforge renumbers: the specials, then the pieces sorted, so ids follow the vocabulary
    tok = train_wordpiece_tokenizer(TRAIN_TEXT, vocab_size=120)
    pieces = [tok.id_to_token(i) for i in range(tok.vocab_size)]
    assert pieces[:5] == list(SPECIAL_TOKENS.values()) and pieces[5:] == sorted(pieces[5:])
