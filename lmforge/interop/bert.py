"""BERT (`BertModel`, `BertForMaskedLM`, `BertForSequenceClassification`) <-> lmforge encoder:
word + learned position + segment embeddings and a LayerNorm, post-norm blocks, a pooler, a
masked-LM head tied to the word embeddings, a classifier on the pooled [CLS] state.

lmforge fuses HF's separate query / key / value Linears into one `qkv` ([q; k; v] rows, d each).
The heads are optional: a `BertModel` checkpoint (all-MiniLM-L6-v2, say) has a pooler but no
masked-LM head, a `BertForMaskedLM` the head but no pooler. Which of them the model gets is read
from the checkpoint's tensor names (`heads_from_checkpoint`), so every tensor still has a rule.
Export writes `BertForSequenceClassification` for a classifier, else `BertForMaskedLM` when
there is a masked-LM head, else `BertModel`; the pooler's weights are written whenever the
model has one, so `AutoModel` loads it from any of the three.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from ..config import ModelConfig
from .keys import (Architecture, Rule, activation_from_hf, activation_to_hf, attention_rate, hf_value, qkv_rows, refuse,
                   require_config, require_full_heads, require_hf, weight_and_bias)

B, H = "transformer.blocks.{i}.", "bert.encoder.layer.{i}."     # one block: lmforge's name, HF's name
EMB = "bert.embeddings."


KEYS = (
    Rule("transformer.tok_emb.weight", EMB + "word_embeddings.weight", vocab_rows=True),
    Rule("transformer.pos_emb.weight", EMB + "position_embeddings.weight"),
    Rule("transformer.type_emb.weight", EMB + "token_type_embeddings.weight"),
    *weight_and_bias("transformer.emb_norm", EMB + "LayerNorm"),
    Rule(B + "attn.qkv.weight", tuple(H + f"attention.self.{p}.weight" for p in ("query", "key", "value")),
         split=qkv_rows),
    Rule(B + "attn.qkv.bias", tuple(H + f"attention.self.{p}.bias" for p in ("query", "key", "value")),
         split=qkv_rows),
    *weight_and_bias(B + "attn.out", H + "attention.output.dense"),
    *weight_and_bias(B + "attn_norm", H + "attention.output.LayerNorm"),     # post-norm: after the residual add
    *weight_and_bias(B + "mlp.fc", H + "intermediate.dense"),
    *weight_and_bias(B + "mlp.proj", H + "output.dense"),
    *weight_and_bias(B + "mlp_norm", H + "output.LayerNorm"),
    *weight_and_bias("pooler.dense", "bert.pooler.dense"),                     # present when config.pooler
    *weight_and_bias("mlm_head.dense", "cls.predictions.transform.dense"),     # present when config.mlm_head
    *weight_and_bias("mlm_head.norm", "cls.predictions.transform.LayerNorm"),
    Rule("mlm_head.bias", "cls.predictions.bias", vocab_rows=True),
    Rule("mlm_head.decoder.weight", "cls.predictions.decoder.weight", vocab_rows=True),  # absent when tied
    *weight_and_bias("classifier.proj", "classifier"),                         # present when config.labels
)
IGNORED = (EMB + "position_ids",                 # a buffer of 0..511 older checkpoints saved
           "cls.predictions.decoder.bias",       # older checkpoints' second copy of cls.predictions.bias
           "cls.seq_relationship.weight", "cls.seq_relationship.bias")   # the next-sentence head: no counterpart

def config_from_hf(hf: dict[str, Any]) -> ModelConfig:
    """Every head on; `heads_from_checkpoint` then keeps those the checkpoint holds."""
    require_hf(hf, (
        ("position_embedding_type", "absolute", "lmforge's BERT has learned absolute positions, not relative ones"),
        ("is_decoder", False, "lmforge imports BERT as a bidirectional encoder"),
        ("add_cross_attention", False, "lmforge's encoder has no cross attention")))
    mlp = activation_from_hf(hf, "hidden_act", "gelu")
    return ModelConfig(
        family="encoder", vocab_size=hf_value(hf, "vocab_size", 30522), pad_vocab_multiple=1,
        context_length=hf_value(hf, "max_position_embeddings", 512), n_layer=hf_value(hf, "num_hidden_layers", 12),
        n_head=hf_value(hf, "num_attention_heads", 12), d_model=hf_value(hf, "hidden_size", 768),
        d_ff=hf_value(hf, "intermediate_size", 3072), mlp=mlp, norm="layernorm",
        norm_eps=hf_value(hf, "layer_norm_eps", 1e-12), norm_position="post", position="learned",
        type_vocab_size=hf_value(hf, "type_vocab_size", 2), embed_norm=True, pooler=True, mlm_head=True, bias=True,
        dropout=(hidden := hf_value(hf, "hidden_dropout_prob", 0.1)),
        attention_dropout=attention_rate(hf, "attention_probs_dropout_prob", 0.1, hidden),
        tie_embeddings=hf_value(hf, "tie_word_embeddings", True), init_std=hf_value(hf, "initializer_range", 0.02))


def labels_from_hf(hf: dict[str, Any]) -> list[str]:
    """Class names in id order from id2label (a classifier's config.json)."""
    problem = hf.get("problem_type")
    if problem not in (None, "single_label_classification"):
        raise refuse("problem_type", problem, "lmforge classifiers pick one label per text "
                                              "(single_label_classification)")
    id2label = hf.get("id2label") or {}
    labels = [str(id2label[k]) for k in sorted(id2label, key=int)]
    if len(labels) < 2:
        raise refuse("id2label", id2label, "lmforge classifiers need at least 2 classes (regression is not supported)")
    return labels


def heads_from_checkpoint(config: ModelConfig, hf: dict[str, Any], names: set[str]) -> ModelConfig:
    """The heads this checkpoint has weights for: pooler, masked-LM head, classifier."""
    return dataclasses.replace(config, pooler="bert.pooler.dense.weight" in names,
                               mlm_head="cls.predictions.transform.dense.weight" in names,
                               labels=labels_from_hf(hf) if "classifier.weight" in names else [])


def config_to_hf(c: ModelConfig) -> dict[str, Any]:
    require_config(c, (
        ("family", "encoder", "BERT is an encoder"),
        ("position", "learned", "BERT has learned position embeddings"),
        ("norm", "layernorm", "BERT uses LayerNorm"),
        ("norm_position", "post", "BERT normalises after each residual add"),
        ("embed_norm", True, "BERT normalises the summed embeddings"),
        ("embed_scale", False, "BERT does not scale its embeddings"),
        ("bias", True, "BERT's layers all have biases")))
    activation = activation_to_hf(c, "BERT")
    require_full_heads(c, "BERT")
    if c.type_vocab_size < 1:
        raise refuse("type_vocab_size", c.type_vocab_size, "BERT always adds segment embeddings")
    fields = {"vocab_size": c.vocab_size, "hidden_size": c.d_model, "num_hidden_layers": c.n_layer,
              "num_attention_heads": c.n_head, "intermediate_size": c.ff_dim, "hidden_act": activation,
              "hidden_dropout_prob": c.dropout, "attention_probs_dropout_prob": c.attn_dropout,
              "max_position_embeddings": c.context_length, "type_vocab_size": c.type_vocab_size,
              "layer_norm_eps": c.norm_eps, "initializer_range": c.init_std, "tie_word_embeddings": c.tie_embeddings,
              "position_embedding_type": "absolute", "is_decoder": False, "add_cross_attention": False}
    if c.labels:
        if not c.pooler or c.pool_method != "cls":
            raise refuse("pooling", c.pool_method if c.pooler else "no pooler",
                         "BertForSequenceClassification classifies the pooler's output for [CLS]; fine-tune "
                         "with --pooling cls to export the classifier")
        return {**fields, "architectures": ["BertForSequenceClassification"],
                "id2label": {str(i): name for i, name in enumerate(c.labels)},
                "label2id": {name: i for i, name in enumerate(c.labels)},
                "problem_type": "single_label_classification"}
    return {**fields, "architectures": ["BertForMaskedLM" if c.mlm_head else "BertModel"]}


BERT = Architecture(name="bert", model_type="bert",
                    hf_classes=("BertModel", "BertForMaskedLM", "BertForSequenceClassification", "BertForPreTraining"),
                    base_prefix="bert.", keys=KEYS, ignored=IGNORED,
                    config_from_hf=config_from_hf, config_to_hf=config_to_hf, heads=heads_from_checkpoint)
