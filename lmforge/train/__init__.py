"""Training: one loop for every objective (`trainer.py`), optimizer, schedule, checkpoints,
torchrun/DDP support, and `train()` which builds everything from a TrainConfig."""

from .objective import Objective
from .run import OBJECTIVES, train
from .trainer import TrainConfig, Trainer

__all__ = ["Objective", "OBJECTIVES", "TrainConfig", "Trainer", "train"]
