"""`lmforge distill`: a smaller student learns from a teacher's softened predictions (the loss is
`lmforge.tasks.distill`), through the one trainer."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from ..config import ModelConfig
from ..errors import ConfigError
from ..options import option, validate
from ..tasks import Task
from ..tasks.distill import DistillTask
from ..tokenizers import Tokenizer
from .config import TrainConfig
from .observers import RunObserver


@dataclass
class DistillConfig:
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


def distill(args: DistillConfig, cfg: TrainConfig | None = None, *, observers: list[RunObserver] = ()) -> dict[str, Any]:
    """Train a `student_preset` model on `cfg.data` from `args.teacher`'s soft targets."""
    from ..adapt.runs import load_model
    from ..loading import resolve_device
    from .run import same_tokenizer, train
    if not args.teacher:
        raise ConfigError("give the teacher model directory with --teacher DIR")
    cfg = dataclasses.replace(cfg or TrainConfig(), preset=args.student_preset, init_from=None)
    teacher, teacher_config, teacher_tokenizer = load_model(args.teacher, device=resolve_device(cfg.device))
    teacher.requires_grad_(False)

    def wrap(inner: Task, config: ModelConfig, tokenizer: Tokenizer) -> Task:
        if not same_tokenizer(tokenizer, teacher_tokenizer):
            raise ConfigError(f"the data in {cfg.data} uses another tokenizer than the teacher {args.teacher}; "
                              f"prepare it with `lmforge prepare ... --tokenizer {args.teacher}`")
        if config.context_length > teacher_config.context_length:
            raise ConfigError(f"the student's context ({config.context_length}) is longer than the teacher's "
                              f"({teacher_config.context_length}); pass --context-length "
                              f"{teacher_config.context_length} or less")
        return DistillTask(inner, teacher, args.temperature, args.alpha)

    return train(cfg, wrap_task=wrap, inputs=[("--teacher", args.teacher)], observers=observers)
