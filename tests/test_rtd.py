"""Replaced-token detection (ELECTRA): the replaced-token labels, a golden loss on a toy
vocabulary, the generator's shape and its shared embeddings, and a run whose discriminator is a
plain encoder that a classification fine-tune takes."""

import math

import pytest
import torch

from lmforge.config import get_preset
from lmforge.errors import ConfigError
from lmforge.model import build_model
from lmforge.modeldir import read_weights
from lmforge.tasks.classify import ClassifyConfig
from lmforge.tasks.rtd import (DISC_WEIGHT, HEADS_FILE, RTDConfig, RTDHeads, corrupt, generator_config,
                               replaced_labels, rtd_loss)
from lmforge.train import train
from lmforge.train.finetune import FinetuneConfig, finetune

from .conftest import tiny_train_config


def test_a_sample_equal_to_the_original_is_labelled_original():
    ids = torch.tensor([[5, 6, 7, 8]])
    selected = torch.tensor([[False, True, True, False]])
    corrupted = corrupt(ids, selected, torch.tensor([6, 9]))       # position 1: the generator sampled 6 back
    assert corrupted.tolist() == [[5, 6, 9, 8]]
    assert replaced_labels(ids, corrupted).tolist() == [[0.0, 0.0, 1.0, 0.0]]


def test_golden_loss_on_a_toy_vocabulary():
    # vocabulary of 4; two masked positions: uniform logits with target 2 (p = 1/4), and logits
    # [ln 3, 0, 0, 0] with target 0 (p = 3/6); the discriminator says 0 (p = 1/2) at all 4 positions
    gen_logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [math.log(3), 0.0, 0.0, 0.0]])
    targets = torch.tensor([2, 0])
    replaced = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    total, gen, disc = rtd_loss(gen_logits, targets, torch.zeros(1, 4), replaced)
    assert gen.item() == pytest.approx((math.log(4) + math.log(2)) / 2)
    assert disc.item() == pytest.approx(math.log(2))
    assert total.item() == pytest.approx(1.5 * math.log(2) + 50 * math.log(2)) and DISC_WEIGHT == 50


def test_the_generator_is_a_quarter_as_wide_and_shares_the_embeddings():
    config = get_preset("bert-tiny")
    g = generator_config(config, RTDConfig().generator_ratio)
    assert (g.d_model, g.n_head, g.n_layer) == (32, 1, config.n_layer) and RTDConfig().generator_ratio == 0.25
    model = build_model(config)
    model.rtd = RTDHeads(config, 0.25)
    vocab_sized = [n for n, p in model.rtd.named_parameters() if p.dim() == 2 and config.padded_vocab_size in p.shape]
    assert vocab_sized == []                                        # no embedding of its own
    emb, _ = model.transformer.embed(torch.tensor([[1, 2, 3]]), torch.arange(3))
    logits = model.rtd.generator(emb, torch.tensor([[False, True, False]]), model.transformer.tok_emb.weight)
    logits.sum().backward()
    assert logits.shape == (1, config.padded_vocab_size) and model.transformer.tok_emb.weight.grad.abs().sum() > 0
    with pytest.raises(ConfigError, match="generator_ratio"):
        RTDConfig(generator_ratio=1.5)


def test_rtd_pretrains_a_plain_encoder_that_finetunes(tmp_path, wordpiece_data, topics_csv):
    out = tmp_path / "rtd"
    cfg = tiny_train_config(wordpiece_data, out, preset="bert-tiny", task="rtd", max_steps=12, eval_interval=6,
                            stop_after=6)
    first = train(cfg)
    assert first["stopped"] and (out / HEADS_FILE).is_file()
    heads, _ = read_weights(out / HEADS_FILE)
    assert heads and all(k.startswith("rtd.") for k in heads)
    cfg.resume, cfg.stop_after = True, None
    summary = train(cfg)                                             # the generator comes back from HEADS_FILE
    assert summary["step"] == 12 and math.isfinite(summary["val_loss"])
    weights, _ = read_weights(out / "model.safetensors")
    assert not any(k.startswith("rtd.") for k in weights)           # a plain encoder
    ft = finetune(FinetuneConfig(model_dir=str(out), task="classify"),
                  tiny_train_config(topics_csv, tmp_path / "clf", max_steps=6, eval_interval=6),
                  ClassifyConfig(baseline=False))
    assert "test_macro_f1" in ft
    with pytest.raises(ConfigError, match="task rtd pretrains an encoder"):
        train(tiny_train_config(wordpiece_data, tmp_path / "gpt", preset="gpt-tiny", task="rtd"))
