"""Training: one loop for every task (`trainer.py`), its settings (`config.py`), what observes
it (`observers.py`; the experiment trackers of `--report-to` in `tracking/`), optimizer,
schedule, checkpoints, torchrun/DDP/FSDP support, and `train()` which builds everything from a
TrainConfig."""

from .config import TrainConfig
from .observers import RunObserver
from .run import train
from .trainer import Trainer

__all__ = ["RunObserver", "TrainConfig", "Trainer", "train"]
