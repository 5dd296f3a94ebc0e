"""Masked-LM pretraining: masking statistics, training through the one trainer, exact resume."""

import json

import pytest
import torch

from lmforge.api import load_model
from lmforge.data.mlm import mask_tokens
from lmforge.tasks import MLMConfig
from lmforge.errors import ConfigError
from lmforge.train import train

from .conftest import tiny_train_config


def test_masking_statistics():
    g = torch.Generator().manual_seed(0)
    V, special = 1000, {0, 1, 2, 3, 4}
    ids = torch.randint(5, V, (200, 250), generator=g)
    ids[:, 0], ids[:, -1] = 1, 2                                       # <bos> ... <eos>: never selected
    inputs, labels = mask_tokens(ids, mask_id=4, vocab_size=V, special_ids=special, generator=g)
    selected = labels != -100
    n = selected.sum().item()
    assert abs(n / (200 * 248) - 0.15) < 0.005                          # 15% of the ordinary tokens
    assert not selected[:, 0].any() and not selected[:, -1].any()
    torch.testing.assert_close(labels[selected], ids[selected])          # labels: the original tokens
    masked = (inputs == 4) & selected
    kept = (inputs == ids) & selected
    randomised = selected & ~masked & ~kept
    assert abs(masked.sum().item() / n - 0.8) < 0.015
    assert abs(kept.sum().item() / n - 0.1) < 0.015                     # (a random draw equal to the original counts as kept)
    assert abs(randomised.sum().item() / n - 0.1) < 0.015
    assert not torch.isin(inputs[randomised], torch.tensor(sorted(special))).any()   # random tokens are never special
    assert torch.equal(inputs[~selected], ids[~selected])               # unselected positions untouched


def test_at_least_one_position_is_selected():
    ids = torch.tensor([[1, 7, 2]])
    for seed in range(20):
        _, labels = mask_tokens(ids, mask_id=4, vocab_size=10, special_ids={0, 1, 2, 3, 4}, mask_prob=0.01,
                                generator=torch.Generator().manual_seed(seed))
        assert labels.tolist() == [[-100, 7, -100]]


def _rows(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def test_mlm_pretraining_writes_an_encoder_and_the_loss_falls(tiny_encoder_dir):
    rows = _rows(tiny_encoder_dir)
    losses = [r["loss"] for r in rows if r["kind"] == "train"]
    assert losses[-1] < losses[0] - 0.5
    assert [r for r in rows if r["kind"] == "eval"][-1]["val_ppl"] > 1.0
    model, config, tok = load_model(tiny_encoder_dir)
    assert config.family == "encoder" and config.norm_position == "post" and tok.kind == "wordpiece"
    x = torch.tensor([[tok.bos_id] + tok.encode("the for statement")])
    assert model(x).shape == (1, x.shape[1], tok.vocab_size)


def test_mlm_resume_is_exact(tmp_path, wordpiece_data):
    kw = dict(preset="bert-tiny", task="mlm", max_steps=6, eval_interval=3, dropout=0.1)
    train(tiny_train_config(wordpiece_data, tmp_path / "straight", **kw))
    train(tiny_train_config(wordpiece_data, tmp_path / "stopped", stop_after=3, **kw))
    train(tiny_train_config(wordpiece_data, tmp_path / "stopped", resume=True, **kw))
    loss = lambda run: [(r["step"], r["loss"]) for r in _rows(run) if r["kind"] == "train"]  # noqa: E731
    assert loss(tmp_path / "straight") == loss(tmp_path / "stopped")


def test_mlm_errors(tmp_path, char_data, wordpiece_data):
    with pytest.raises(ConfigError, match="task mlm needs an encoder.*bert-tiny"):
        train(tiny_train_config(wordpiece_data, tmp_path / "a", task="mlm"))        # gpt-tiny preset
    with pytest.raises(ConfigError, match="mask_prob=1.5"):
        MLMConfig(mask_prob=1.5)
    with pytest.raises(ConfigError, match="task clm needs a decoder"):
        train(tiny_train_config(wordpiece_data, tmp_path / "b", preset="bert-tiny"))
