"""The encoder and encoder-decoder families, assembled from the same blocks as the decoder."""

import pytest
import torch

from lmforge.config import derive, get_preset
from lmforge.errors import ConfigError
from lmforge.model import build_model
from lmforge.model.heads import pool

V = 97
ENCODERS = {
    "bert": get_preset("bert-tiny", vocab_size=V, labels=["a", "b", "c"]),            # post-norm, segments, pooler
    "prenorm_rope_mean": derive(get_preset("bert-tiny", vocab_size=V), norm_position="pre", position="rope",
                                embed_norm=False, type_vocab_size=0, pooler=False, labels=["x", "y"], pooling="mean"),
}
SEQ2SEQ = {
    "prenorm_shared": get_preset("seq2seq-tiny", vocab_size=V),
    "original_separate_vocab": derive(get_preset("transformer-base", vocab_size=V), n_layer=2, n_encoder_layer=3,
                                      n_head=2, d_model=32, d_ff=64, dropout=0.0, target_vocab_size=61),
}


def _model(cfg, seed=0):
    torch.manual_seed(seed)
    return build_model(cfg).eval()


def test_encoder_sees_the_future_decoder_does_not():
    enc = _model(ENCODERS["bert"])
    dec = _model(get_preset("gpt-tiny", vocab_size=V))
    x = torch.randint(5, V, (2, 16))
    y = x.clone()
    y[:, 12] = (y[:, 12] + 1) % V                       # change one later token
    with torch.no_grad():
        e_x, e_y = enc(x, head="hidden"), enc(y, head="hidden")
        d_x, d_y = dec.hidden_states(x), dec.hidden_states(y)
    assert not torch.allclose(e_x[:, :12], e_y[:, :12])             # earlier positions of the encoder change
    torch.testing.assert_close(d_x[:, :12], d_y[:, :12])             # the decoder's do not


@pytest.mark.parametrize("name", ENCODERS)
def test_encoder_padding_does_not_change_real_positions(name):
    model = _model(ENCODERS[name])
    x = torch.randint(5, V, (1, 9))
    padded = torch.cat([x, torch.zeros(1, 4, dtype=torch.long)], dim=1)
    valid = torch.tensor([[True] * 9 + [False] * 4])
    with torch.no_grad():
        torch.testing.assert_close(model(padded, key_valid=valid)[:, :9], model(x), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(model(padded, key_valid=valid, head="classify"), model(x, head="classify"),
                                   atol=1e-5, rtol=1e-4)
        assert not torch.allclose(model(padded)[:, :9], model(x), atol=1e-4)   # without the mask it would differ


def test_decoder_classifier_pools_the_last_real_token():
    model = _model(get_preset("gpt-tiny", vocab_size=V, labels=["neg", "pos"]))
    a, b = torch.randint(5, V, (1, 6)), torch.randint(5, V, (1, 3))
    batch = torch.zeros(2, 6, dtype=torch.long)
    batch[0], batch[1, :3] = a[0], b[0]
    valid = batch != 0
    with torch.no_grad():
        both = model(batch, key_valid=valid, head="classify")
        torch.testing.assert_close(both[0], model(a, head="classify")[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(both[1], model(b, head="classify")[0], atol=1e-5, rtol=1e-4)


def test_pooling_methods():
    h = torch.arange(2 * 4 * 1, dtype=torch.float).view(2, 4, 1)       # values 0..7
    valid = torch.tensor([[True, True, True, False], [True, True, False, False]])
    assert pool(h, valid, "cls").flatten().tolist() == [0.0, 4.0]
    assert pool(h, valid, "last").flatten().tolist() == [2.0, 5.0]
    assert pool(h, valid, "mean").flatten().tolist() == [1.0, 4.5]


def test_segment_embeddings_and_mlm_head_tied():
    model = _model(ENCODERS["bert"])
    assert model.mlm_head.decoder.weight is model.transformer.tok_emb.weight
    x = torch.randint(5, V, (1, 8))
    with torch.no_grad():
        same = model(x, type_ids=torch.zeros_like(x))
        other = model(x, type_ids=torch.ones_like(x))
    torch.testing.assert_close(same, model(x))                        # segment 0 is the default
    assert not torch.allclose(same, other)
    selected = torch.zeros_like(x, dtype=torch.bool)
    selected[0, [2, 5]] = True
    torch.testing.assert_close(model(x, select=selected), same[selected])   # logits only where asked


def test_bert_preset_is_hugging_face_bert():
    """A 2-layer BERT built in `transformers` with random weights, copied across by name: the same
    masked-LM logits and pooled output (the architecture issue 4's importer relies on)."""
    transformers = pytest.importorskip("transformers")
    hf_cfg = transformers.BertConfig(vocab_size=V, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=37, max_position_embeddings=40, hidden_dropout_prob=0.0,
                                     attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    hf = transformers.BertForPreTraining(hf_cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0, 0.2)
    ours = build_model(get_preset("bert-base", vocab_size=V, pad_vocab_multiple=1, d_model=32, n_layer=2, n_head=4,
                                  d_ff=37, context_length=40)).eval()
    sd = hf.state_dict()
    emb, head = "bert.embeddings.", "cls.predictions."
    weights = {"transformer.tok_emb.weight": sd[emb + "word_embeddings.weight"],
               "transformer.pos_emb.weight": sd[emb + "position_embeddings.weight"],
               "transformer.type_emb.weight": sd[emb + "token_type_embeddings.weight"],
               "mlm_head.bias": sd[head + "bias"]}
    pairs = [("transformer.emb_norm.", emb + "LayerNorm."), ("pooler.dense.", "bert.pooler.dense."),
             ("mlm_head.dense.", head + "transform.dense."), ("mlm_head.norm.", head + "transform.LayerNorm.")]
    for i in range(2):
        o, h = f"transformer.blocks.{i}.", f"bert.encoder.layer.{i}."
        pairs += [(o + "attn.out.", h + "attention.output.dense."), (o + "attn_norm.", h + "attention.output.LayerNorm."),
                  (o + "mlp.fc.", h + "intermediate.dense."), (o + "mlp.proj.", h + "output.dense."),
                  (o + "mlp_norm.", h + "output.LayerNorm.")]
        for w in ("weight", "bias"):
            weights[o + f"attn.qkv.{w}"] = torch.cat([sd[h + f"attention.self.{n}.{w}"] for n in ("query", "key", "value")])
    for o, h in pairs:
        for w in ("weight", "bias"):
            weights[o + w] = sd[h + w]
    assert set(ours.state_dict()) - set(weights) == {"mlm_head.decoder.weight"}          # tied to tok_emb
    ours.load_state_dict(weights, strict=False)
    x, types = torch.randint(0, V, (2, 11)), torch.randint(0, 2, (2, 11))
    valid = torch.ones(2, 11, dtype=torch.bool)
    valid[1, 7:] = False
    with torch.no_grad():
        ref = hf(input_ids=x, token_type_ids=types, attention_mask=valid.long()).prediction_logits
        ref_pooled = hf.bert(input_ids=x, token_type_ids=types, attention_mask=valid.long()).pooler_output
        logits = ours(x, key_valid=valid, type_ids=types)
        pooled = ours.pooled(ours(x, key_valid=valid, type_ids=types, head="hidden"), valid)
    torch.testing.assert_close(logits[valid], ref[valid], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(pooled, ref_pooled, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", SEQ2SEQ)
def test_seq2seq_cached_decoding_matches_teacher_forcing(name):
    cfg = SEQ2SEQ[name]
    model = _model(cfg)
    src = torch.randint(5, V, (2, 9))
    src_valid = torch.ones_like(src, dtype=torch.bool)
    src_valid[1, 6:] = False
    tgt = torch.randint(5, cfg.tgt_vocab_size, (2, 7))
    with torch.no_grad():
        full = model(src, tgt, src_valid=src_valid)                              # (2, 7, target vocab)
        assert full.shape == (2, 7, cfg.tgt_vocab_size)
        model.setup_cache(2, 8, memory=model.encode(src, src_valid))             # cross K/V projected once
        steps = [model.decode(tgt[:, t:t + 1], memory_valid=src_valid, input_pos=torch.tensor([t])) for t in range(7)]
        model.clear_cache()
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)


def test_cross_attention_uses_only_the_encoder_non_pad_positions():
    model = _model(SEQ2SEQ["prenorm_shared"])
    src = torch.randint(5, V, (1, 6))
    tgt = torch.randint(5, V, (1, 5))
    junk_a = torch.cat([src, torch.randint(5, V, (1, 4))], dim=1)          # the same source + different junk
    junk_b = torch.cat([src, torch.randint(5, V, (1, 4))], dim=1)
    valid = torch.tensor([[True] * 6 + [False] * 4])
    with torch.no_grad():
        alone = model(src, tgt)
        a = model(junk_a, tgt, src_valid=valid)
        b = model(junk_b, tgt, src_valid=valid)
        unmasked = model(junk_a, tgt)
    torch.testing.assert_close(a, alone, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(b, alone, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(unmasked, alone, atol=1e-4)


def test_shared_and_separate_vocabularies():
    shared = _model(SEQ2SEQ["prenorm_shared"])
    assert shared.encoder.tok_emb is shared.decoder.tok_emb
    assert shared.lm_head.weight is shared.decoder.tok_emb.weight
    separate = _model(SEQ2SEQ["original_separate_vocab"])
    assert separate.encoder.tok_emb is not separate.decoder.tok_emb
    assert separate.decoder.tok_emb.weight.shape[0] == 64 and len(separate.encoder.blocks) == 3
    assert separate.decoder.emb_scale == pytest.approx(32 ** 0.5)          # the original's sqrt(d) scaling


def test_config_errors_for_the_new_fields():
    with pytest.raises(ConfigError, match="at least 2 classes"):
        get_preset("bert-tiny", labels=["only"])
    with pytest.raises(ConfigError, match="repeat a name"):
        get_preset("bert-tiny", labels=["a", "a"])
    with pytest.raises(ConfigError, match="pooling='max'"):
        get_preset("bert-tiny", pooling="max")
    with pytest.raises(ConfigError, match="only for seq2seq"):
        get_preset("gpt-tiny", target_vocab_size=10)
    assert get_preset("gpt-tiny").pool_method == "last" and get_preset("bert-tiny").pool_method == "cls"
