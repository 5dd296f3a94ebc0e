"""The one training loop. Every task (causal LM, masked LM, classification, seq2seq,
SFT) runs through `Trainer.fit`; under torchrun a strategy (DDP or FSDP2, `distributed.py`)
wraps the same loop.

`fit` is the loop and nothing else: set the step's learning rate, `train_step`, then the named
parts at their intervals — the log (`progress.TrainLog`: train rows, tokens/s, MFU, progress
bar, collapse warnings), evaluation and samples (`evaluate_and_sample`), training-time
inspection (`inspect`, with --inspect-interval), checkpoints
(`checkpoint.Checkpointer`, which also redraws loss.png) — inside a `StopRequest` (Ctrl-C:
the first saves at the end of the step, a second stops at once without saving).

Per step: draw the step's micro-batch indices from the data generator (all ranks draw the
same), run this rank's micro-batches with gradient accumulation (DDP syncs only on the last),
clip, optimizer step (Muon for the blocks' matrices and AdamW for the rest, or AdamW alone).
Everything the next step depends on — weights, optimizer, step, data generator, RNG — is in
the checkpoint, so `--resume` continues exactly.

What else wants to see the run — experiment tracking, training-time inspection — is an
observer (`observers.py`), called on rank 0 at each logged row (exactly the rows metrics.jsonl
gets: its writer is an observer too), each evaluation (with the whole model), each checkpoint
and the end (`from lmforge.train import RunObserver, train`):

    class PrintEvals(RunObserver):
        def on_log(self, row):
            if row["kind"] == "eval":
                print(row["step"], row["val_loss"])
    train(cfg, observers=[PrintEvals()])          # or Trainer(..., observers=[PrintEvals()])
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn as nn

from ..config import ModelConfig
from ..errors import ConfigError
from ..loading import resolve_device
from ..modeldir import CONFIG_FILE, WEIGHTS_FILE
from ..tasks import Task
from ..tasks.base import unwrap
from .averaging import make_average
from .checkpoint import Checkpointer, batch_shape
from .config import TrainConfig
from .distributed import DistInfo, Strategy, activation_checkpointing, all_reduce_mean, init_distributed, make_strategy
from .inspection import inspect_at
from .interrupt import StopRequest
from .observers import Observers, RunFiles, RunObserver
from .optim import make_adamw
from .progress import TrainLog
from .selection import BestEvaluation
from .schedule import lr_at


def resolve_dtype_name(device: torch.device, dtype: str) -> str:
    return ("bfloat16" if device.type == "cuda" else "float32") if dtype == "auto" else dtype


def autocast_for(device: torch.device, dtype: str):
    """The autocast context for this device and dtype choice (a no-op for fp32)."""
    dtype = resolve_dtype_name(device, dtype)
    if dtype == "float32":
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)


class Trainer:
    """The loop. `names_to_save(model)` picks the state-dict entries a checkpoint stores as
    `weights_file` (default: the whole model as model.safetensors; a LoRA run stores only its
    adapters); `extra_files(out)` writes anything else the model directory needs at the start;
    `observers` see the run (rank 0 only), after the one that writes metrics.jsonl and loss.png."""

    def __init__(self, cfg: TrainConfig, model: nn.Module, task: Task, model_config: ModelConfig, *,
                 tokenizer=None, sample_fn: Callable[[nn.Module], str] | None = None,
                 extra_files: Callable[[Path], None] | None = None, extra_metadata: dict[str, str] | None = None,
                 names_to_save: Callable[[nn.Module], set[str]] | None = None, weights_file: str = WEIGHTS_FILE,
                 observers: Sequence[RunObserver] = ()):
        self.cfg, self.model, self.task, self.model_config = cfg, model, task, model_config
        self.tokenizer, self.sample_fn, self.extra_files = tokenizer, sample_fn, extra_files
        self.extra_metadata = extra_metadata or {}
        self.names_to_save, self.weights_file = names_to_save, weights_file
        self.out = Path(cfg.out)
        if cfg.strategy == "fsdp" and cfg.optimizer == "muon":
            raise ConfigError("--optimizer muon orthogonalises whole matrices, which --strategy fsdp splits over the "
                              "processes; use --optimizer adamw with fsdp, or --strategy ddp with muon")
        if cfg.strategy == "fsdp" and cfg.ema_decay is not None:
            raise ConfigError("--ema-decay averages whole weights, which --strategy fsdp splits over the processes; "
                              "drop --ema-decay, or use --strategy ddp")
        if cfg.strategy == "fsdp" and cfg.compile:
            raise ConfigError("--compile is not supported with --strategy fsdp yet; drop --compile, or use "
                              "--strategy ddp")
        self.device = resolve_device(cfg.device)
        self.dist: DistInfo = init_distributed(self.device.type, cfg.strategy)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        mixed = resolve_dtype_name(self.device, cfg.dtype) == "bfloat16" and self.device.type == "cuda"
        self.strategy: Strategy = make_strategy(cfg.strategy, self.dist, self.device, mixed_precision=mixed)
        self.autocast = autocast_for(self.device, cfg.dtype)
        per_step = self.dist.world_size * cfg.grad_accum * cfg.batch_size
        self.epoch_order = task.epoch_order(cfg.seed, per_step) if cfg.epochs is not None else None
        self.observers = Observers([RunFiles(self.out), *observers] if self.dist.is_main else [])

    def full_params(self):
        """Every rank holds the whole model inside (enter on every rank): see `Strategy.full_params`."""
        return self.strategy.full_params(self.model)

    # ---- the loop -----------------------------------------------------------------------------
    def fit(self, resume_state: dict[str, Any] | None = None) -> dict[str, Any]:
        """Train from scratch, or on from `resume_state` (`checkpoint.load_checkpoint`), to max_steps
        (or --stop-after steps, or a Ctrl-C); returns the summary: the last losses and metrics, step,
        whether it stopped early, and the task's final report (when it did not)."""
        cfg, W = self.cfg, self.dist.world_size
        self._start_run(resume_state)
        saver = self._prepare()
        step, tokens = saver.resume(resume_state) if resume_state is not None else (0, 0)
        if step >= cfg.max_steps:
            raise ConfigError(f"the run in {self.out} is already at step {step} of max_steps={cfg.max_steps}; "
                              f"pass a larger --max-steps to train further")
        end_step = cfg.max_steps if cfg.stop_after is None else min(cfg.max_steps, step + cfg.stop_after)
        save_every = cfg.save_interval or cfg.eval_interval
        summary: dict[str, Any] = {"out": str(self.out)}
        log = TrainLog(cfg, step, self.dist, self.device, self.model_config, self.task.constant_loss(),
                       self.observers, summary)
        self._report_baseline(step, log, summary)
        self.best = self._best_evaluation(saver, step if resume_state is not None else None)
        last_eval: int | None = None
        early_stop = False
        try:
            with StopRequest(announce=self.dist.is_main) as stop:
                while step < end_step:
                    lr = self.set_lr(step)
                    loss_sum, step_tokens = self.train_step(step)
                    step, tokens = step + 1, tokens + step_tokens * W
                    log.step_done(step_tokens * W)
                    if step % cfg.log_interval == 0 or step == end_step:
                        log.log(step, loss_sum, lr, tokens)
                    metrics = self.evaluate_and_sample(step, log, summary)
                    inspected = self.inspect(step)
                    if step % save_every == 0 or step == end_step:
                        saver.save(step, tokens)
                    if metrics is not None or inspected:
                        last_eval = step if metrics is not None else last_eval
                        log.restart_clock()                  # keep eval and inspection time out of tokens/s
                    if metrics is not None and self._track_best(step, tokens, metrics, saver):
                        early_stop = True                    # --patience ran out
                        break
                    if step < end_step and self._stop_requested(stop):       # Ctrl-C: the step is whole, save it
                        return self._interrupted(step, tokens, saver, log, summary)
        except KeyboardInterrupt:                        # a second Ctrl-C: mid-step, so nothing consistent to save
            log.close()
            if self.dist.is_main:
                print(f"\nstopped during step {step + 1} without saving; the checkpoint of step {saver.saved_at} in "
                      f"{self.out} is intact — continue with --resume")
            raise
        log.close()
        return self._finish(step, last_eval, log, summary, saver, early_stop)

    def set_lr(self, step: int) -> float:
        """Set every optimizer group's rate for `step` (the schedule scales each group's own peak)."""
        cfg = self.cfg
        min_lr = cfg.lr / 10 if cfg.min_lr is None else cfg.min_lr
        lr = lr_at(step, lr=cfg.lr, min_lr=min_lr, warmup=cfg.warmup_steps, total=cfg.max_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = group["peak_lr"] * lr / cfg.lr
        return lr

    def train_step(self, step: int) -> tuple[torch.Tensor, int]:
        """Optimizer step `step` (0-based): this rank's share of the step's micro-batches (every rank
        draws the same indices: at random, or the step's share of --epochs' passes), gradients
        accumulated, clipped, applied. Returns this rank's step loss (the sum of its micro-batches'
        losses / grad_accum, left on the device) and the tokens it processed."""
        cfg, task, dist = self.cfg, self.task, self.dist
        B, A, W = cfg.batch_size, cfg.grad_accum, dist.world_size
        drawn = (self.epoch_order.take(step) if self.epoch_order is not None
                 else task.sample("train", W * A * B, self.data_gen))
        indices = drawn.view(W, A, B)[dist.rank]
        self.average.hide()                              # the raw weights train (--ema-decay)
        loss_sum = torch.zeros((), device=self.device)
        step_tokens = 0
        for a in range(A):
            batch = self._to_device(task.collate("train", indices[a]))
            step_tokens += task.tokens_in(batch)
            with self.strategy.micro_batch(self.train_model, last=a == A - 1):
                with self.autocast():
                    loss = task.loss(self.train_model, batch) / A
                loss.backward()
            loss_sum += loss.detach()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip, foreach=True)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.average.update()
        return loss_sum, step_tokens

    # ---- before and after the loop ----------------------------------------------------------------
    def _start_run(self, resume_state: dict[str, Any] | None) -> None:
        """Rank 0: the model directory's first files, then the observers start (metrics.jsonl is cut
        back to the checkpoint a resumed run starts from)."""
        if not self.dist.is_main:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        if self.extra_files is not None:
            self.extra_files(self.out)              # first: train_config.yaml marks the directory as a run's
        self.model_config.save(self.out / CONFIG_FILE)
        if self.tokenizer is not None:
            self.tokenizer.save(self.out)
        self.observers.on_start(self.cfg, int(resume_state["step"]) if resume_state is not None else 0)

    def _prepare(self) -> Checkpointer:
        """Place the model, wrap it for the strategy (`train_model`: what the loop calls), build the
        optimizer and the data order; returns the checkpointer that saves and resumes them."""
        cfg, model = self.cfg, self.model.to(self.device)
        if cfg.activation_checkpointing:
            activation_checkpointing(model)
        train_model: nn.Module = torch.compile(model) if cfg.compile else model
        self.train_model = self.strategy.wrap(train_model)   # FSDP shards `model` in place: build the optimizer after
        if cfg.optimizer == "muon":
            from .muon import make_muon
            self.optimizer = make_muon(model, cfg.lr, cfg.muon_lr, cfg.weight_decay, (cfg.beta1, cfg.beta2))
        else:
            self.optimizer = make_adamw(model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2), self.device.type)
        for group in self.optimizer.param_groups:
            group.setdefault("peak_lr", group["lr"])
        self.data_gen = torch.Generator().manual_seed(cfg.seed)
        model.train()
        self.average = make_average(model, cfg.ema_decay)      # --ema-decay: `averaging.py`
        shape = batch_shape(self.dist.world_size, cfg.grad_accum, cfg.batch_size)
        return Checkpointer(self.out, self.strategy, model, self.optimizer, self.data_gen, shape,
                            names_to_save=self.names_to_save, extra_metadata=self.extra_metadata,
                            weights_file=self.weights_file, observers=self.observers, average=self.average)

    def _interrupted(self, step: int, tokens: int, saver: Checkpointer, log: TrainLog,
                     summary: dict[str, Any]) -> dict[str, Any]:
        """A Ctrl-C asked to stop: the step is whole, so its checkpoint resumes exactly."""
        log.close()
        if saver.saved_at != step:
            saver.save(step, tokens)
        if self.dist.is_main:
            print(f"\ninterrupted at step {step}; checkpoint saved in {self.out} — continue with --resume")
        summary.update(step=step, stopped=True)
        self.observers.on_end(summary)
        return summary

    def _finish(self, step: int, last_eval: int | None, log: TrainLog, summary: dict[str, Any], saver: Checkpointer,
                early_stop: bool) -> dict[str, Any]:
        """The loop ran to its end step (or stopped early on --patience): the summary, and if the run is
        complete, the best evaluation's weights kept (--keep-best) and the task's final report."""
        cfg = self.cfg
        summary.update(step=step, stopped=step < cfg.max_steps and not early_stop, last_eval=last_eval)
        if log.verdict():
            summary["warning"] = log.verdict()
        if summary["stopped"]:
            if self.dist.is_main:
                print(f"stopped at step {step} of {cfg.max_steps}; continue with the same command plus --resume")
        else:
            self.average.show()                          # the model ends as it was evaluated and saved
            self._keep_best(saver, summary, early_stop)
            with self.full_params():                     # every rank: FSDP gathers the whole model
                if self.dist.is_main:
                    summary.update(self.task.report(self.model, self.out, self.device, self.autocast))
        self.observers.on_end(summary)
        return summary

    # ---- the best evaluation (--keep-best, --patience: `selection.py`) -------------------------
    def _best_evaluation(self, saver: Checkpointer, resume_step: int | None) -> BestEvaluation | None:
        """What tracks the best evaluation (None when neither --keep-best nor --patience asks); a
        resumed run continues from the best it had kept."""
        if not (self.cfg.keeps_best() or self.cfg.patience):
            return None
        best = BestEvaluation(*self.task.selection, patience=self.cfg.patience)
        if resume_step is not None:
            best.load(saver.read_best(), resume_step)
        return best

    def _track_best(self, step: int, tokens: int, metrics: dict[str, float], saver: Checkpointer) -> bool:
        """After an evaluation: a new best is checkpointed (if this step was not) and kept; returns
        whether --patience ran out."""
        if self.best is None:
            return False
        if self.best.update(step, metrics) and self.cfg.keeps_best():
            if saver.saved_at != step:
                saver.save(step, tokens)
            saver.keep_best(step, self.best.state())
        return self.best.out_of_patience()

    def _keep_best(self, saver: Checkpointer, summary: dict[str, Any], early_stop: bool) -> None:
        """At the end of a complete run: the best evaluation's weights become the model directory's."""
        best = self.best
        if best is None or best.step is None:
            return
        if early_stop:
            summary["early_stopped"] = True
            if self.dist.is_main:
                print(best.message())
        if not self.cfg.keeps_best():
            return
        if saver.saved_at != best.step:
            saver.restore_best()
            if self.dist.is_main:
                print(f"kept the best evaluation, step {best.step} ({best.metric} {best.value:.4f}), not the last: "
                      f"the model directory holds its weights")
        if self.dist.is_main:       # the card scores the kept weights; logged at the last step (trackers want order)
            self.observers.on_log({"kind": "best", "step": summary["step"], "best_step": best.step, **best.metrics})
        summary.update(best.metrics, best_step=best.step)

    # ---- evaluation and samples -------------------------------------------------------------
    def _report_baseline(self, step: int, log: TrainLog, summary: dict[str, Any]) -> None:
        """Rank 0, before the first step: the task's classical baseline on the same split, logged
        (a "baseline" row), printed and kept in the summary."""
        result = self.task.baseline() if self.dist.is_main else None
        if result is not None:
            metrics, line = result
            self.observers.on_log({"kind": "baseline", "step": step, **metrics})
            summary.update(metrics)
            log.write(line)

    def evaluate_and_sample(self, step: int, log: TrainLog, summary: dict[str, Any]) -> dict[str, float] | None:
        """At an evaluation step: evaluate, log and print the metrics; at a sample step: sample, log
        and print the text. Returns the evaluation's metrics (None: no evaluation at this step)."""
        cfg = self.cfg
        metrics = None
        if step % cfg.eval_interval == 0 or step == cfg.max_steps:
            metrics = self.evaluate(self.train_model, step)
            self.observers.on_log({"kind": "eval", "step": step, **{k: round(v, 6) for k, v in metrics.items()}})
            summary.update(metrics)
            log.write(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
        sample_every = cfg.eval_interval if cfg.sample_interval is None else cfg.sample_interval
        if self.sample_fn is not None and sample_every and (step % sample_every == 0 or step == cfg.max_steps):
            self.average.show()
            with self.full_params():
                if self.dist.is_main:
                    text = self.sample_fn(self.model)
                    self.observers.on_log({"kind": "sample", "step": step, "text": text})
                    log.write(f"sample at step {step}: {text!r}")
        return metrics

    def inspect(self, step: int) -> bool:
        """Every `inspect_interval` steps, the observers look inside the model (`inspection.py`)."""
        return inspect_at(self, step)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, step: int | None = None) -> dict[str, float]:
        """Validation loss (the same `eval_iters` batches every time, shared by the ranks), perplexity
        where the task reports it, and the task's own metrics. With `step`, the observers then see
        the model, whole and in eval mode (`on_eval`)."""
        was_training = model.training
        model.eval()
        self.average.show()                              # --ema-decay: the average is what is evaluated
        gen = torch.Generator().manual_seed(self.cfg.seed + 1)       # the same val batches every time
        B, iters, W = self.cfg.batch_size, self.cfg.eval_iters, self.dist.world_size
        indices = self.task.sample("val", iters * B, gen).view(iters, B)
        total = torch.zeros(2, device=self.device)                     # (sum of batch losses, batches)
        # ranks share the batches; a forward is a collective (FSDP gathers weights, DDP broadcasts buffers),
        # so every rank runs as many (a rank past the last batch repeats one and does not count it)
        end = math.ceil(iters / W) * W
        for i in range(self.dist.rank, end, W):
            batch = self._to_device(self.task.collate("val", indices[i % iters]))
            with self.autocast():
                loss = self.task.eval_loss(model, batch).float()
            if i < iters:
                total[0] += loss
                total[1] += 1
        total = all_reduce_mean(total, self.dist)
        val_loss = (total[0] / total[1]).item()
        metrics = {"val_loss": val_loss}
        if self.task.reports_perplexity:
            metrics["val_ppl"] = math.exp(min(val_loss, 50.0))
        with self.full_params():
            metrics.update(self.task.evaluate(unwrap(model), self.device, self.autocast))
            if step is not None:
                self.observers.on_eval(step, unwrap(model), dict(metrics))
        model.train(was_training)
        return metrics

    # ---- helpers ------------------------------------------------------------------------------
    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.device.type == "cuda":
            return {k: v.pin_memory().to(self.device, non_blocking=True) for k, v in batch.items()}
        return {k: v.to(self.device) for k, v in batch.items()}

    def _stop_requested(self, stop: StopRequest) -> bool:
        """Whether Ctrl-C / SIGTERM asked to stop; under torchrun, whether any rank was asked."""
        if not self.dist.enabled:
            return stop.requested
        flag = torch.tensor([1.0 if stop.requested else 0.0], device=self.device)
        return bool(all_reduce_mean(flag, self.dist).item() > 0)
