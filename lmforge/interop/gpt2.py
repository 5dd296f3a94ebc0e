"""GPT-2 (`GPT2LMHeadModel`) <-> lmforge decoder: learned positions, pre-LayerNorm, GELU, biases.

HF's GPT-2 uses `Conv1D` layers, whose weight is (in, out): the transpose of `nn.Linear`.
Its fused `c_attn` is [q; k; v] along the output dimension, the same order as lmforge's `qkv`.
"""

from __future__ import annotations

from typing import Any

from ..config import ModelConfig
from .keys import (Architecture, Rule, activation_from_hf, activation_to_hf, attention_rate, hf_value, require_config,
                   require_full_heads, require_hf, weight_and_bias)

B, H = "transformer.blocks.{i}.", "transformer.h.{i}."     # one block: lmforge's name, HF's name

KEYS = (
    Rule("transformer.tok_emb.weight", "transformer.wte.weight", vocab_rows=True),
    Rule("transformer.pos_emb.weight", "transformer.wpe.weight"),
    *weight_and_bias(B + "attn_norm", H + "ln_1"),
    *weight_and_bias(B + "attn.qkv", H + "attn.c_attn", transpose=True),        # Conv1D: (in, out) weights
    *weight_and_bias(B + "attn.out", H + "attn.c_proj", transpose=True),
    *weight_and_bias(B + "mlp_norm", H + "ln_2"),
    *weight_and_bias(B + "mlp.fc", H + "mlp.c_fc", transpose=True),
    *weight_and_bias(B + "mlp.proj", H + "mlp.c_proj", transpose=True),
    *weight_and_bias("transformer.norm", "transformer.ln_f"),
    Rule("lm_head.weight", "lm_head.weight", vocab_rows=True),      # absent when tied to wte
)
IGNORED = (H + "attn.bias", H + "attn.masked_bias")                  # causal-mask buffers of old checkpoints

def config_from_hf(hf: dict[str, Any]) -> ModelConfig:
    require_hf(hf, (
        ("scale_attn_weights", True, "lmforge always scales attention scores by 1/sqrt(head size)"),
        ("scale_attn_by_inverse_layer_idx", False, "lmforge does not scale attention by 1/layer index"),
        ("add_cross_attention", False, "lmforge's GPT-2 import is decoder-only, without cross attention")))
    mlp = activation_from_hf(hf, "activation_function", "gelu_new")
    return ModelConfig(
        family="decoder", vocab_size=hf_value(hf, "vocab_size", 50257), pad_vocab_multiple=1,
        context_length=hf_value(hf, "n_positions", 1024), n_layer=hf_value(hf, "n_layer", 12),
        n_head=hf_value(hf, "n_head", 12), d_model=hf_value(hf, "n_embd", 768), d_ff=hf.get("n_inner"),
        mlp=mlp, norm="layernorm", norm_eps=hf_value(hf, "layer_norm_epsilon", 1e-5),
        norm_position="pre", position="learned", bias=True,
        dropout=(resid := hf_value(hf, "resid_pdrop", 0.1)),   # lmforge's one rate for residuals and embeddings
        attention_dropout=attention_rate(hf, "attn_pdrop", 0.1, resid),
        tie_embeddings=hf_value(hf, "tie_word_embeddings", True), init_std=hf_value(hf, "initializer_range", 0.02))


def config_to_hf(c: ModelConfig) -> dict[str, Any]:
    require_config(c, (
        ("family", "decoder", "GPT-2 is a decoder-only model"),
        ("position", "learned", "GPT-2 has learned position embeddings"),
        ("norm", "layernorm", "GPT-2 uses LayerNorm"),
        ("norm_position", "pre", "GPT-2 normalises before each sub-layer"),
        ("bias", True, "GPT-2's layers all have biases")))
    activation = activation_to_hf(c, "GPT-2")
    require_full_heads(c, "GPT-2")
    return {"vocab_size": c.vocab_size, "n_positions": c.context_length, "n_embd": c.d_model, "n_layer": c.n_layer,
            "n_head": c.n_head, "n_inner": c.ff_dim, "activation_function": activation,
            "resid_pdrop": c.dropout, "embd_pdrop": c.dropout, "attn_pdrop": c.attn_dropout,
            "layer_norm_epsilon": c.norm_eps, "initializer_range": c.init_std, "tie_word_embeddings": c.tie_embeddings,
            "scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False, "reorder_and_upcast_attn": False,
            "add_cross_attention": False}


GPT2 = Architecture(name="gpt2", model_type="gpt2", hf_classes=("GPT2LMHeadModel", "GPT2Model"),
                    base_prefix="transformer.", keys=KEYS, ignored=IGNORED,
                    config_from_hf=config_from_hf, config_to_hf=config_to_hf)
