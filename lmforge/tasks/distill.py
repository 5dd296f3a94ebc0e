"""Knowledge distillation (Hinton et al., 2015), the task that wraps another: a smaller student learns from a teacher's
softened predictions, through the one trainer. `DistillTask` wraps the student's task
(the same batches) and mixes the two losses over the positions that have a target:

    loss = alpha · T² · KL(softmax(teacher / T) ‖ softmax(student / T)) + (1 - alpha) · CE(student, labels)

T² keeps the soft-target gradients on the scale of the hard-label ones. The validation loss
is the student's plain cross-entropy, so `val_ppl` compares directly with a model trained
without a teacher. Any task that implements `logits_and_targets` can be distilled.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .base import Task, lm_loss


def distill_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor,
                 temperature: float, alpha: float) -> torch.Tensor:
    """logits (..., V), targets (...) with -100 where nothing is predicted -> scalar loss."""
    has_target = targets != -100
    s, t = student_logits[has_target].float(), teacher_logits[has_target].float()     # (N, V)
    kl = F.kl_div(F.log_softmax(s / temperature, -1), F.log_softmax(t / temperature, -1), log_target=True,
                  reduction="batchmean")
    return alpha * temperature ** 2 * kl + (1 - alpha) * F.cross_entropy(s, targets[has_target])


class DistillTask(Task):
    def __init__(self, inner: Task, teacher: torch.nn.Module, temperature: float = 2.0, alpha: float = 0.5):
        self.inner, self.teacher, self.temperature, self.alpha = inner, teacher, temperature, alpha
        self.name = f"distill-{inner.name}"
        self.reports_perplexity, self.tokenizer = inner.reports_perplexity, inner.tokenizer

    def sample(self, split, n, generator):
        return self.inner.sample(split, n, generator)

    def collate(self, split, indices):
        return self.inner.collate(split, indices)

    def train_examples(self):
        return self.inner.train_examples()

    def epoch_order(self, seed, per_step):
        return self.inner.epoch_order(seed, per_step)

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

    # the task's own hooks are the inner task's
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
