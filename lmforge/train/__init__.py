"""Training: one loop for every task (`trainer.py`), optimizer, schedule, checkpoints,
torchrun/DDP support, and `train()` which builds everything from a TrainConfig."""

from .run import train
from .trainer import TrainConfig, Trainer

__all__ = ["TrainConfig", "Trainer", "train"]
