"""Llama (`LlamaForCausalLM`) <-> lmforge decoder: RoPE, pre-RMSNorm, SwiGLU, grouped-query heads.

lmforge fuses what HF keeps apart: self-attention has one `qkv` Linear ([q; k; v] rows, the
k and v parts n_kv_head heads wide) and the SwiGLU MLP one `fc` ([gate; up] rows). Import
concatenates q_proj/k_proj/v_proj and gate_proj/up_proj; export splits them again. HF's
q/k weights are already in the "rotate half" RoPE layout lmforge uses, so nothing is permuted.
"""

from __future__ import annotations

from typing import Any

from ..config import ModelConfig
from .keys import Architecture, Rule, attention_rate, gate_up_rows, hf_value, qkv_rows, refuse, require_config

B, H = "transformer.blocks.{i}.", "model.layers.{i}."     # one block: lmforge's name, HF's name


KEYS = (
    Rule("transformer.tok_emb.weight", "model.embed_tokens.weight", vocab_rows=True),
    Rule(B + "attn_norm.weight", H + "input_layernorm.weight"),
    Rule(B + "attn.qkv.weight", (H + "self_attn.q_proj.weight", H + "self_attn.k_proj.weight",
                                 H + "self_attn.v_proj.weight"), split=qkv_rows),
    Rule(B + "attn.qkv.bias", (H + "self_attn.q_proj.bias", H + "self_attn.k_proj.bias",
                               H + "self_attn.v_proj.bias"), split=qkv_rows),
    Rule(B + "attn.out.weight", H + "self_attn.o_proj.weight"),
    Rule(B + "attn.out.bias", H + "self_attn.o_proj.bias"),
    Rule(B + "mlp_norm.weight", H + "post_attention_layernorm.weight"),
    Rule(B + "mlp.fc.weight", (H + "mlp.gate_proj.weight", H + "mlp.up_proj.weight"), split=gate_up_rows),
    Rule(B + "mlp.fc.bias", (H + "mlp.gate_proj.bias", H + "mlp.up_proj.bias"), split=gate_up_rows),
    Rule(B + "mlp.proj.weight", H + "mlp.down_proj.weight"),
    Rule(B + "mlp.proj.bias", H + "mlp.down_proj.bias"),
    Rule("transformer.norm.weight", "model.norm.weight"),
    Rule("lm_head.weight", "lm_head.weight", vocab_rows=True),      # absent when tied to embed_tokens
)
IGNORED = (H + "self_attn.rotary_emb.inv_freq",)                      # a RoPE buffer some old checkpoints saved


def rope_theta(hf: dict[str, Any]) -> float:
    """RoPE base from config.json in either layout: transformers 5 `rope_parameters`, or 4.x
    `rope_theta` + `rope_scaling`. Scaled variants (linear, dynamic, yarn, llama3) are refused."""
    field = "rope_parameters" if hf.get("rope_parameters") else "rope_scaling"
    rope = hf.get(field) or {}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind != "default":
        raise refuse(field, rope, f"lmforge implements plain RoPE only (rope_type 'default', not {kind!r})")
    return float(rope.get("rope_theta", hf_value(hf, "rope_theta", 10000.0)))


def config_from_hf(hf: dict[str, Any]) -> ModelConfig:
    act = hf_value(hf, "hidden_act", "silu")
    if act != "silu":
        raise refuse("hidden_act", act, "lmforge's Llama MLP is SwiGLU (silu)")
    bias = hf_value(hf, "attention_bias", False)
    if hf_value(hf, "mlp_bias", False) != bias:
        raise refuse("mlp_bias", hf["mlp_bias"], f"lmforge has biases in attention and MLP together or in neither, "
                                                 f"and attention_bias is {bias}")
    d_model, n_head = hf_value(hf, "hidden_size", 4096), hf_value(hf, "num_attention_heads", 32)
    if hf_value(hf, "head_dim", d_model // n_head) != d_model // n_head:
        raise refuse("head_dim", hf["head_dim"], f"lmforge's head size is hidden_size / num_attention_heads "
                                                 f"= {d_model // n_head}")
    return ModelConfig(
        family="decoder", vocab_size=hf_value(hf, "vocab_size", 32000), pad_vocab_multiple=1,
        context_length=hf_value(hf, "max_position_embeddings", 2048), n_layer=hf_value(hf, "num_hidden_layers", 32),
        n_head=n_head, n_kv_head=hf_value(hf, "num_key_value_heads", n_head), d_model=d_model,
        d_ff=hf_value(hf, "intermediate_size", 11008), mlp="swiglu", norm="rmsnorm",
        norm_eps=hf_value(hf, "rms_norm_eps", 1e-6), norm_position="pre", position="rope", rope_theta=rope_theta(hf),
        bias=bias, dropout=0.0, attention_dropout=attention_rate(hf, "attention_dropout", 0.0, 0.0),  # Llama's only one
        tie_embeddings=hf_value(hf, "tie_word_embeddings", False), init_std=hf_value(hf, "initializer_range", 0.02))


def config_to_hf(c: ModelConfig) -> dict[str, Any]:
    require_config(c, (
        ("family", "decoder", "Llama is a decoder-only model"),
        ("position", "rope", "Llama uses rotary positions"),
        ("norm", "rmsnorm", "Llama uses RMSNorm"),
        ("norm_position", "pre", "Llama normalises before each sub-layer"),
        ("mlp", "swiglu", "Llama's MLP is SwiGLU")))
    rope = {"rope_type": "default", "rope_theta": c.rope_theta}
    return {"vocab_size": c.vocab_size, "hidden_size": c.d_model, "intermediate_size": c.ff_dim,
            "num_hidden_layers": c.n_layer, "num_attention_heads": c.n_head, "num_key_value_heads": c.kv_heads,
            "head_dim": c.head_dim, "hidden_act": "silu", "max_position_embeddings": c.context_length,
            "rms_norm_eps": c.norm_eps, "rope_parameters": rope,          # transformers >= 5
            "rope_theta": c.rope_theta, "rope_scaling": None,              # transformers 4.x
            "attention_bias": c.bias, "mlp_bias": c.bias, "attention_dropout": c.attn_dropout,
            "tie_word_embeddings": c.tie_embeddings, "initializer_range": c.init_std, "pretraining_tp": 1}


LLAMA = Architecture(name="llama", model_type="llama", hf_classes=("LlamaForCausalLM", "LlamaModel"),
                     base_prefix="model.", keys=KEYS, ignored=IGNORED,
                     config_from_hf=config_from_hf, config_to_hf=config_to_hf)
