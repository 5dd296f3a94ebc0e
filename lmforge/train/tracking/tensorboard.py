"""`--report-to tensorboard`: event files in OUT/tensorboard/ through PyTorch's `SummaryWriter`
(the `tensorboard` package); scalars, the texts (samples as a code block) and the run's settings
in the HParams dashboard. A resumed run writes on in the same directory from its checkpoint's
step: what a killed run logged after that step is dropped (`purge_step`), as in metrics.jsonl.
`tensorboard --logdir runs` compares every model directory under runs/."""

from __future__ import annotations

from typing import Any

from .base import Tracker

TENSORBOARD_DIR = "tensorboard"


def hparam_values(settings: dict[str, Any]) -> dict[str, float | str | bool]:
    """Settings as the HParams plugin takes them: numbers, strings and booleans as they are, the
    rest (None, lists) as text."""
    return {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in settings.items()}


class TensorBoardTracker(Tracker):
    name = "tensorboard"

    def start(self, run_name: str, settings: dict[str, Any], step: int) -> None:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams
        # resumed at the checkpoint of `step`: the events of later steps (a killed run's) are dropped
        self.writer = SummaryWriter(log_dir=str(self.out / TENSORBOARD_DIR), purge_step=step + 1 if step else None)
        # the HParams dashboard lists the settings of each run beside these metrics of its scalars
        for summary in hparams(hparam_values(settings), {"train/loss": 0.0, "eval/val_loss": 0.0}):
            self.writer.file_writer.add_summary(summary)

    def scalars(self, step: int, values: dict[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def text(self, name: str, step: int, text: str) -> None:
        # the text dashboard renders Markdown: a sample keeps its lines in a code block
        self.writer.add_text(name, f"```\n{text}\n```" if name == "samples" else text, step)

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
