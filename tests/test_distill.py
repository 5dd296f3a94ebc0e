import json

import pytest
import torch
import torch.nn.functional as F

from lmforge.errors import ConfigError
from lmforge.tasks.distill import distill_loss
from lmforge.train.distill import DistillConfig, distill

from .conftest import tiny_train_config


def test_distill_loss_golden():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    targets = torch.randint(0, 7, (2, 5))
    targets[0, :2] = -100                                          # positions without a target are ignored
    ce = F.cross_entropy(logits[targets != -100], targets[targets != -100])
    # a student equal to its teacher has KL 0: only the hard-label part is left
    torch.testing.assert_close(distill_loss(logits, logits, targets, 2.0, 0.3), 0.7 * ce)
    teacher = torch.randn(2, 5, 7)
    p, log_q = (teacher[targets != -100] / 2).softmax(-1), (logits[targets != -100] / 2).log_softmax(-1)
    kl = (p * (p.log() - log_q)).sum(-1).mean()
    torch.testing.assert_close(distill_loss(logits, teacher, targets, 2.0, 1.0), 4 * kl)


def _train_losses(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r["loss"] for r in rows if r["kind"] == "train"]


def test_a_student_learns_from_its_teacher(tmp_path, char_data, tiny_model_dir):
    out = tmp_path / "student"
    summary = distill(DistillConfig(teacher=str(tiny_model_dir), student_preset="gpt-tiny", temperature=2.0, alpha=0.8),
                      tiny_train_config(char_data, out, n_layer=1, d_model=32, max_steps=25, eval_interval=25))
    losses = _train_losses(out)
    assert len(losses) == 25 and sum(losses[-5:]) / 5 < sum(losses[:5]) / 5 - 0.5
    assert summary["val_ppl"] > 1 and (out / "model.safetensors").is_file()


def test_distill_errors(tmp_path, bpe_data, char_data, tiny_model_dir):
    with pytest.raises(ConfigError, match="another tokenizer than the teacher"):
        distill(DistillConfig(teacher=str(tiny_model_dir), student_preset="gpt-tiny"),
                tiny_train_config(bpe_data, tmp_path / "a"))
    with pytest.raises(ConfigError, match="student's context.*--context-length 32"):
        distill(DistillConfig(teacher=str(tiny_model_dir), student_preset="gpt-tiny"),
                tiny_train_config(char_data, tmp_path / "b", context_length=64))
    with pytest.raises(ConfigError, match="--teacher DIR"):
        distill(DistillConfig(), tiny_train_config(char_data, tmp_path / "c"))
    with pytest.raises(ConfigError, match="alpha"):
        DistillConfig(teacher="x", alpha=1.5)
