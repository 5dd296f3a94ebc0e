"""GGUF key tables: lmforge tensors <-> llama.cpp's tensor names, config <-> its metadata keys.

The same `Architecture` / `Rule` machinery as the Hugging Face tables (`../keys.py`), with
"hf" naming the GGUF tensor and `config_to_hf` / `config_from_hf` giving / reading the
`{arch}.*` metadata keys. Names and keys are those llama.cpp's `convert_hf_to_gguf.py` writes
and `llama-model.cpp` reads:

    llama:  token_embd, blk.N.{attn_norm, attn_q, attn_k, attn_v, attn_output, ffn_norm,
            ffn_gate, ffn_up, ffn_down}, output_norm, output (absent when tied)
    gpt2:   token_embd, position_embd, blk.N.{attn_norm, attn_qkv, attn_output, ffn_norm,
            ffn_up, ffn_down} (+ .bias), output_norm, output

GGUF stores a Linear as (out, in) like lmforge (GPT-2's Conv1D is transposed back by the
converter), so nothing is transposed; Llama's q / k rows are in llama.cpp's interleaved RoPE
order (`Rule.rotary`).
"""

from __future__ import annotations

from typing import Any

from ...config import ModelConfig
from ...errors import ConfigError
from ..keys import (Architecture, Rule, gate_up_rows, qkv_rows, refuse, require_config, require_full_heads,
                    weight_and_bias)

B = "transformer.blocks.{i}."     # one lmforge block; "blk.{i}." is llama.cpp's


def qkv_rotary(c: ModelConfig) -> tuple[int | None, ...]:
    return c.n_head, c.kv_heads, None            # q and k are interleaved per head, v is not


def need(meta: dict[str, Any], key: str) -> Any:
    if key not in meta:
        raise ConfigError(f"metadata key {key!r} is missing; the file was not written for llama.cpp's "
                          f"{key.split('.')[0]} architecture")
    return meta[key]


# ------------------------------------------------------------------------------------ llama
LLAMA_KEYS = (
    Rule("transformer.tok_emb.weight", "token_embd.weight", vocab_rows=True),
    Rule(B + "attn_norm.weight", "blk.{i}.attn_norm.weight"),
    Rule(B + "attn.qkv.weight", ("blk.{i}.attn_q.weight", "blk.{i}.attn_k.weight", "blk.{i}.attn_v.weight"),
         split=qkv_rows, rotary=qkv_rotary),
    Rule(B + "attn.qkv.bias", ("blk.{i}.attn_q.bias", "blk.{i}.attn_k.bias", "blk.{i}.attn_v.bias"),
         split=qkv_rows, rotary=qkv_rotary),
    *weight_and_bias(B + "attn.out", "blk.{i}.attn_output"),
    Rule(B + "mlp_norm.weight", "blk.{i}.ffn_norm.weight"),
    Rule(B + "mlp.fc.weight", ("blk.{i}.ffn_gate.weight", "blk.{i}.ffn_up.weight"), split=gate_up_rows),
    Rule(B + "mlp.fc.bias", ("blk.{i}.ffn_gate.bias", "blk.{i}.ffn_up.bias"), split=gate_up_rows),
    *weight_and_bias(B + "mlp.proj", "blk.{i}.ffn_down"),
    Rule("transformer.norm.weight", "output_norm.weight"),
    Rule("lm_head.weight", "output.weight", vocab_rows=True),      # absent when tied to token_embd
)


def llama_from_gguf(meta: dict[str, Any]) -> ModelConfig:
    a = "llama."
    d_model, n_head = need(meta, a + "embedding_length"), need(meta, a + "attention.head_count")
    rope_dim = meta.get(a + "rope.dimension_count", d_model // n_head)
    if rope_dim != d_model // n_head:
        raise refuse(a + "rope.dimension_count", rope_dim, f"lmforge rotates the whole head "
                                                           f"(embedding_length / head_count = {d_model // n_head})")
    scaling = meta.get(a + "rope.scaling.type", "none")
    if scaling != "none":
        raise refuse(a + "rope.scaling.type", scaling, "lmforge implements plain RoPE only")
    if meta.get(a + "expert_count", 0):
        raise refuse(a + "expert_count", meta[a + "expert_count"], "lmforge's Llama has one dense MLP per block")
    return ModelConfig(
        family="decoder", vocab_size=meta["vocab_size"], pad_vocab_multiple=1,
        context_length=need(meta, a + "context_length"), n_layer=need(meta, a + "block_count"), n_head=n_head,
        n_kv_head=meta.get(a + "attention.head_count_kv", n_head), d_model=d_model,
        d_ff=need(meta, a + "feed_forward_length"), mlp="swiglu", norm="rmsnorm",
        norm_eps=meta.get(a + "attention.layer_norm_rms_epsilon", 1e-5), norm_position="pre", position="rope",
        rope_theta=float(meta.get(a + "rope.freq_base", 10000.0)), bias=meta["has_bias"], dropout=0.0,
        tie_embeddings=meta["tied"])


def llama_to_gguf(c: ModelConfig) -> dict[str, Any]:
    require_config(c, (
        ("family", "decoder", "llama.cpp's llama is a decoder-only model"),
        ("position", "rope", "llama.cpp's llama uses rotary positions"),
        ("norm", "rmsnorm", "llama.cpp's llama uses RMSNorm"),
        ("norm_position", "pre", "llama.cpp's llama normalises before each sub-layer"),
        ("mlp", "swiglu", "llama.cpp's llama MLP is SwiGLU")))
    a = "llama."
    return {a + "vocab_size": c.vocab_size, a + "context_length": c.context_length, a + "embedding_length": c.d_model,
            a + "block_count": c.n_layer, a + "feed_forward_length": c.ff_dim, a + "rope.dimension_count": c.head_dim,
            a + "rope.freq_base": float(c.rope_theta), a + "attention.head_count": c.n_head,
            a + "attention.head_count_kv": c.kv_heads, a + "attention.layer_norm_rms_epsilon": float(c.norm_eps)}


LLAMA = Architecture(name="llama", model_type="llama", hf_classes=(), base_prefix="", keys=LLAMA_KEYS,
                     ignored=("rope_freqs.weight",), config_from_hf=llama_from_gguf, config_to_hf=llama_to_gguf)

# ------------------------------------------------------------------------------------- gpt2
GPT2_KEYS = (
    Rule("transformer.tok_emb.weight", "token_embd.weight", vocab_rows=True),
    Rule("transformer.pos_emb.weight", "position_embd.weight"),
    *weight_and_bias(B + "attn_norm", "blk.{i}.attn_norm"),
    *weight_and_bias(B + "attn.qkv", "blk.{i}.attn_qkv"),           # [q; k; v] rows, as lmforge fuses them
    *weight_and_bias(B + "attn.out", "blk.{i}.attn_output"),
    *weight_and_bias(B + "mlp_norm", "blk.{i}.ffn_norm"),
    *weight_and_bias(B + "mlp.fc", "blk.{i}.ffn_up"),
    *weight_and_bias(B + "mlp.proj", "blk.{i}.ffn_down"),
    *weight_and_bias("transformer.norm", "output_norm"),
    Rule("lm_head.weight", "output.weight", vocab_rows=True),       # written even when tied, as the converter does
)


def gpt2_from_gguf(meta: dict[str, Any]) -> ModelConfig:
    a = "gpt2."
    n_head = need(meta, a + "attention.head_count")
    if meta.get(a + "attention.head_count_kv", n_head) != n_head:
        raise refuse(a + "attention.head_count_kv", meta[a + "attention.head_count_kv"],
                     "GPT-2 has as many key/value heads as query heads")
    return ModelConfig(
        family="decoder", vocab_size=meta["vocab_size"], pad_vocab_multiple=1,
        context_length=need(meta, a + "context_length"), n_layer=need(meta, a + "block_count"), n_head=n_head,
        d_model=need(meta, a + "embedding_length"), d_ff=meta.get(a + "feed_forward_length"), mlp="gelu_tanh",
        norm="layernorm", norm_eps=meta.get(a + "attention.layer_norm_epsilon", 1e-5), norm_position="pre",
        position="learned", bias=True, dropout=0.0, tie_embeddings=meta["tied"])


def gpt2_to_gguf(c: ModelConfig) -> dict[str, Any]:
    require_config(c, (
        ("family", "decoder", "GPT-2 is a decoder-only model"),
        ("position", "learned", "GPT-2 has learned position embeddings"),
        ("norm", "layernorm", "GPT-2 uses LayerNorm"),
        ("norm_position", "pre", "GPT-2 normalises before each sub-layer"),
        ("bias", True, "llama.cpp's GPT-2 layers all have biases"),
        ("mlp", "gelu_tanh", "llama.cpp's GPT-2 MLP is the tanh GELU")))
    require_full_heads(c, "GPT-2")
    a = "gpt2."
    return {a + "context_length": c.context_length, a + "embedding_length": c.d_model, a + "block_count": c.n_layer,
            a + "feed_forward_length": c.ff_dim, a + "attention.head_count": c.n_head,
            a + "attention.layer_norm_epsilon": float(c.norm_eps)}


GPT2 = Architecture(name="gpt2", model_type="gpt2", hf_classes=(), base_prefix="", keys=GPT2_KEYS, ignored=(),
                    config_from_hf=gpt2_from_gguf, config_to_hf=gpt2_to_gguf)

ARCHITECTURES: dict[str, Architecture] = {arch.model_type: arch for arch in (LLAMA, GPT2)}
