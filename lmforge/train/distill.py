"""Knowledge distillation (Hinton et al., 2015): a smaller student learns from a teacher's
softened predictions, through the one trainer. `DistillObjective` wraps the task's objective
(the same batches) and mixes the two losses over the positions that have a target:

    loss = alpha · T² · KL(softmax(teacher / T) ‖ softmax(student / T)) + (1 - alpha) · CE(student, labels)

T² keeps the soft-target gradients on the scale of the hard-label ones. The validation loss
is the student's plain cross-entropy, so `val_ppl` compares directly with a model trained
without a teacher. Any objective that implements `logits_and_targets` can be distilled.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from ..config import ModelConfig
from ..data.pretrain import lm_loss
from ..errors import ConfigError
from ..options import option, validate
from ..tokenizers import Tokenizer
from .objective import Objective
from .trainer import TrainConfig


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                 temperature: float, alpha: float) -> torch.Tensor:
    """logits (..., V), targets (...) with -100 where nothing is predicted -> scalar loss."""
    has_target = targets != -100
    s, t = student_logits[has_target].float(), teacher_logits[has_target].float()     # (N, V)
    kl = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1), log_target=True,
                  reduction="batchmean")
    return alpha * temperature ** 2 * kl + (1 - alpha) * F.cross_entropy(s, targets[has_target])


class DistillObjective(Objective):
    def __init__(self, inner: Objective, teacher: torch.nn.Module, temperature: float = 2.0, alpha: float = 0.5):
        self.inner, self.teacher, self.temperature, self.alpha = inner, teacher, temperature, alpha
        self.name = f"distill-{inner.name}"
        self.reports_perplexity, self.tokenizer = inner.reports_perplexity, inner.tokenizer

    def sample(self, split, n, generator):
        return self.inner.sample(split, n, generator)

    def collate(self, split, indices):
        return self.inner.collate(split, indices)

    def tokens_in(self, batch):
        return self.inner.tokens_in(batch)

    def loss(self, model, batch):
        student_logits, targets = self.inner.logits_and_targets(model, batch)
        with torch.no_grad():
            teacher_logits, _ = self.inner.logits_and_targets(self.teacher, batch)
        return distill_loss(student_logits, teacher_logits, targets, self.temperature, self.alpha)

    def eval_loss(self, model, batch):
        return lm_loss(*self.inner.logits_and_targets(model, batch))

    def evaluate(self, model, device, autocast):
        return self.inner.evaluate(model, device, autocast)

    # the task's own hooks are the inner objective's
    def model_changes(self):
        return self.inner.model_changes()

    def frozen(self, config):
        return self.inner.frozen(config)

    def sampler(self):
        return self.inner.sampler()

    def extra_files(self, out_dir):
        self.inner.extra_files(out_dir)

    def report(self, model, out_dir, device, autocast):
        return self.inner.report(model, out_dir, device, autocast)


@dataclass
class DistillArgs:
    teacher: str | None = option(None, "teacher model directory (the student learns its predictions)")
    student_preset: str = option("gpt-mini", "the student's preset (resize it with --n-layer, --d-model, ...)")
    temperature: float = option(2.0, "softmax temperature of the teacher's soft targets")
    alpha: float = option(0.5, "weight of the soft-target loss; 1 - alpha weighs the true next tokens")

    def __post_init__(self) -> None:
        validate(self)
        if self.temperature <= 0:
            raise ConfigError(f"temperature={self.temperature} must be positive")
        if not 0.0 <= self.alpha <= 1.0:
            raise ConfigError(f"alpha={self.alpha} must be in [0, 1]")


def distill(args: DistillArgs, cfg: TrainConfig | None = None) -> dict[str, Any]:
    """Train a `student_preset` model on `cfg.data` from `args.teacher`'s soft targets."""
    from ..api import load_model
    from .run import same_tokenizer, train
    from .trainer import resolve_device
    if not args.teacher:
        raise ConfigError("give the teacher model directory with --teacher DIR")
    cfg = dataclasses.replace(cfg or TrainConfig(), preset=args.student_preset, init_from=None)
    teacher, teacher_config, teacher_tokenizer = load_model(args.teacher, device=resolve_device(cfg.device))
    teacher.requires_grad_(False)

    def wrap(inner: Objective, config: ModelConfig, tokenizer: Tokenizer) -> Objective:
        if not same_tokenizer(tokenizer, teacher_tokenizer):
            raise ConfigError(f"the data in {cfg.data} uses another tokenizer than the teacher {args.teacher}; "
                              f"prepare it with `lmforge prepare ... --tokenizer {args.teacher}`")
        if config.context_length > teacher_config.context_length:
            raise ConfigError(f"the student's context ({config.context_length}) is longer than the teacher's "
                              f"({teacher_config.context_length}); pass --context-length "
                              f"{teacher_config.context_length} or less")
        return DistillObjective(inner, teacher, args.temperature, args.alpha)

    return train(cfg, wrap_objective=wrap, inputs=[("--teacher", args.teacher)])
