"""What a run reports while it trains: every `log_interval` steps a train row — the loss
(averaged over micro-batches and processes: the only host sync of a logged step), learning rate,
tokens, tokens/s, and the model FLOPs utilisation where the GPU's peak is known — to the
observers (metrics.jsonl first) and the progress bar; and a warning row, printed too, the first
time the loss shows that the run learns nothing (`collapse.py`).
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from tqdm.auto import tqdm

from ..config import ModelConfig
from ..errors import LmforgeError
from ..model import flops_per_token
from .collapse import MIN_STEPS_TO_JUDGE, LossWatch
from .config import TrainConfig
from .distributed import DistInfo, all_reduce_mean
from .observers import RunObserver

# dense bf16 peak FLOP/s by GPU name (a substring of `torch.cuda.get_device_name`)
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "H800": 989e12, "A100": 312e12, "A10": 125e12, "L4": 121e12,
              "4090": 165e12, "3090": 71e12}


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


class TrainLog:
    """The logging part of the loop, from the run's first step (`step`, after a resume) on. It
    keeps the latest training loss and tokens/s in `summary`."""

    def __init__(self, cfg: TrainConfig, step: int, dist: DistInfo, device: torch.device, model_config: ModelConfig,
                 constant_loss: float | None, observers: RunObserver, summary: dict[str, Any]):
        self.dist, self.observers, self.summary = dist, observers, summary
        self.peak = peak_flops(device)
        self.flops_per_token = flops_per_token(model_config) if self.peak else 0   # MFU only where the peak is known
        self.bar = tqdm(total=cfg.max_steps, initial=step, desc="training",
                        disable=not (dist.is_main and cfg.progress), dynamic_ncols=True)
        self.watch = LossWatch(constant_loss, check_from=max(MIN_STEPS_TO_JUDGE, cfg.warmup_steps, cfg.max_steps // 4))
        self.restart_clock()

    def restart_clock(self) -> None:
        """Measure tokens/s from now (after an evaluation: its time is not training time)."""
        self.t_last, self.tokens_since = time.perf_counter(), 0

    def step_done(self, tokens: int) -> None:
        """A step is done that processed `tokens` (over all processes)."""
        self.tokens_since += tokens
        self.bar.update(1)

    def log(self, step: int, loss_sum: torch.Tensor, lr: float, tokens: int) -> None:
        """The train row of `step`; `loss_sum`: this process's step loss (its micro-batches' losses / A)."""
        loss = all_reduce_mean(loss_sum, self.dist).item()
        if not math.isfinite(loss):
            raise LmforgeError(f"the loss became {loss} at step {step}; lower --lr or raise --warmup-steps (and check "
                               f"the data)")
        now = time.perf_counter()
        tps = self.tokens_since / max(now - self.t_last, 1e-9)
        row = {"kind": "train", "step": step, "loss": round(loss, 6), "lr": lr, "tokens": tokens,
               "tokens_per_s": round(tps, 1)}
        if self.peak and self.flops_per_token:
            row["mfu"] = round(self.flops_per_token * tps / (self.peak * self.dist.world_size), 4)
        self.observers.on_log(row)
        post = {"loss": f"{loss:.4f}", "tok/s": f"{tps:,.0f}"}
        if "mfu" in row:
            post["mfu"] = f"{100 * row['mfu']:.1f}%"
        self.bar.set_postfix(post)
        self.summary.update(train_loss=loss, tokens_per_s=tps)
        self.t_last, self.tokens_since = now, 0
        alarm = self.watch.update(step, loss)
        if alarm:
            self.observers.on_log({"kind": "warning", "step": step, "message": alarm})
            self.write(alarm)

    def write(self, line: str) -> None:
        """Print a line above the progress bar (rank 0 only)."""
        if self.dist.is_main:
            self.bar.write(line)

    def verdict(self) -> str | None:
        """Whether the run still looks collapsed or stuck at its last log (the message), else None."""
        return self.watch.verdict()

    def close(self) -> None:
        self.bar.close()
