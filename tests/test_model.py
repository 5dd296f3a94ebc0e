import pytest
import torch

from lmforge.config import PRESETS, ModelConfig, derive, get_preset
from lmforge.errors import ConfigError
from lmforge.model import build_model
from lmforge.model.kv_cache import attention_mask
from lmforge.model.positions import sinusoidal_table

VARIANTS = {
    "gpt": get_preset("gpt-tiny", vocab_size=97),
    "llama_gqa": get_preset("llama-tiny", vocab_size=97),                      # rope, rmsnorm, swiglu, 4q/2kv
    "sinusoidal_postnorm_relu": derive(get_preset("gpt-tiny", vocab_size=97), position="sinusoidal",
                                       norm_position="post", mlp="relu"),
    "mqa_untied_nopos": derive(get_preset("llama-tiny", vocab_size=97), n_kv_head=1, position="none"),
}


def _model(cfg: ModelConfig, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(cfg).eval()


@pytest.mark.parametrize("name", VARIANTS)
def test_causality_future_tokens_do_not_change_past_logits(name):
    model = _model(VARIANTS[name])
    x = torch.randint(0, 97, (2, 20))
    y = x.clone()
    y[:, 12:] = torch.randint(0, 97, (2, 8))
    with torch.no_grad():
        a, b = model(x), model(y)
    torch.testing.assert_close(a[:, :12], b[:, :12])
    assert not torch.allclose(a[:, 12:], b[:, 12:])


@pytest.mark.parametrize("name", VARIANTS)
def test_kv_cache_decoding_matches_full_forward(name):
    model = _model(VARIANTS[name])
    x = torch.randint(0, 97, (2, 24))
    with torch.no_grad():
        full = model(x)
        model.setup_cache(2, 32)
        steps = [model(x[:, :10], input_pos=torch.arange(10))]               # prefill 10
        for t in range(10, 24):                                              # then one token at a time
            steps.append(model(x[:, t:t + 1], input_pos=torch.tensor([t])))
        model.clear_cache()
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["gpt", "llama_gqa"])
def test_left_padding_with_positions_matches_unpadded(name):
    model = _model(VARIANTS[name])
    x = torch.randint(4, 97, (1, 9))
    padded = torch.cat([torch.zeros(1, 3, dtype=torch.long), x], dim=1)
    valid = torch.tensor([[False] * 3 + [True] * 9])
    pos = (valid.long().cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        ref = model(x)
        out = model(padded, pos_ids=pos, key_valid=valid)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[:, 3:], ref, atol=1e-5, rtol=1e-4)


def test_padded_vocab_rows_are_cut_from_logits():
    cfg = get_preset("gpt-tiny", vocab_size=97)
    model = _model(cfg)
    assert cfg.padded_vocab_size == 128 and model.transformer.tok_emb.weight.shape[0] == 128
    assert model(torch.tensor([[1, 2]])).shape == (1, 2, 97)


def test_tied_and_untied_heads():
    gpt = _model(VARIANTS["gpt"])
    assert gpt.lm_head.weight is gpt.transformer.tok_emb.weight
    llama = _model(VARIANTS["llama_gqa"])
    assert llama.lm_head.weight is not llama.transformer.tok_emb.weight


def test_param_counts_match_known_models():
    from lmforge.model import num_params
    assert abs(num_params(PRESETS["gpt2-124m"]) - 124_475_904) == 0       # nanoGPT's 124M with vocab 50304
    llama = PRESETS["llama-1b"]
    assert llama.kv_heads == 8 and llama.head_dim == 64 and 1.0e9 < num_params(llama) < 1.2e9


def test_presets_and_errors():
    with pytest.raises(ConfigError, match=r"unknown preset 'gpt2-125m' \(did you mean 'gpt2-124m'\?\); known presets"):
        get_preset("gpt2-125m")
    with pytest.raises(ConfigError, match="not divisible by n_head"):
        ModelConfig(d_model=100, n_head=3)
    with pytest.raises(ConfigError, match="not a multiple of n_kv_head"):
        ModelConfig(n_head=4, n_kv_head=3)
    with pytest.raises(ConfigError, match="mlp='geglu'"):
        ModelConfig(mlp="geglu")
    with pytest.raises(ConfigError, match="unknown fields"):
        ModelConfig.from_dict({"n_layers": 3})
    assert ModelConfig.from_dict(get_preset("llama-tiny").to_dict()) == get_preset("llama-tiny")


def test_swiglu_default_width():
    assert get_preset("llama-tiny").ff_dim == 192                      # 8/3 * 64 rounded up to 64
    assert get_preset("gpt-tiny").ff_dim == 256


def test_sinusoidal_table_values():
    t = sinusoidal_table(4, 6)
    assert torch.allclose(t[0], torch.tensor([0., 1., 0., 1., 0., 1.]))
    assert torch.isclose(t[1, 0], torch.sin(torch.tensor(1.0))) and torch.isclose(t[1, 1], torch.cos(torch.tensor(1.0)))


def test_attention_mask_rows_never_fully_masked():
    valid = torch.tensor([[False, False, True, True]])
    m = attention_mask(causal=True, q_pos=None, k_len=4, key_valid=valid, device=torch.device("cpu"))
    assert m.shape == (1, 1, 4, 4) and m.any(-1).all()
    assert m[0, 0, 3].tolist() == [False, False, True, True]


def test_dropout_only_in_training():
    model = build_model(derive(VARIANTS["gpt"], dropout=0.5))
    x = torch.randint(0, 97, (2, 8))
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(x))
    model.train()
    with torch.no_grad():
        assert not torch.allclose(model(x), model(x))


def test_attention_dropout_has_its_own_rate():
    gpt = VARIANTS["gpt"]
    assert derive(gpt, dropout=0.3).attn_dropout == 0.3                   # unset: the same as dropout
    assert derive(gpt, dropout=0.3, attention_dropout=0.0).attn_dropout == 0.0
    x = torch.randint(0, 97, (2, 8))
    for rate, random in ((0.5, True), (0.0, False)):                     # only the attention weights dropped
        model = build_model(derive(gpt, dropout=0.0, attention_dropout=rate)).train()
        with torch.no_grad():
            assert torch.allclose(model(x), model(x)) is not random
    with pytest.raises(ConfigError, match="attention_dropout"):
        derive(gpt, attention_dropout=1.0)
