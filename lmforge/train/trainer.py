"""The one training loop. Every task (causal LM, masked LM, classification, seq2seq,
SFT) runs through `Trainer.fit`; under torchrun a strategy (DDP or FSDP2, `distributed.py`)
wraps the same loop.

Per step: draw the step's micro-batch indices from the data generator (all ranks draw the
same), run this rank's micro-batches with gradient accumulation (DDP syncs only on the last),
clip, optimizer step (Muon for the blocks' matrices and AdamW for the rest, or AdamW alone).
Logged losses are averaged over micro-batches and ranks; a loss that shows the run learns
nothing is reported (`collapse.py`). Everything the next step depends on — weights, optimizer, step, data generator, RNG — is in the
checkpoint, so `--resume` continues exactly.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..config import ModelConfig, ModelOverrides
from ..errors import ConfigError, LmforgeError
from ..loading import resolve_device  # noqa: F401  (re-exported: `train.trainer.resolve_device`)
from ..model import flops_per_token, num_params
from ..modeldir import CONFIG_FILE, WEIGHTS_FILE, atomic_write_text
from ..options import above, at_least, between, device_name, nested, option, validate
from ..viz.plots import plot_loss
from . import checkpoint
from .collapse import MIN_STEPS_TO_JUDGE, LossWatch
from .distributed import (STRATEGIES, DistInfo, Strategy, activation_checkpointing, all_reduce_mean, init_distributed,
                          make_strategy)
from .interrupt import StopRequest
from ..tasks import DEFAULTS, TASK_DEFAULTS, Task, task_defaults
from .optim import make_adamw
from .schedule import lr_at

METRICS_FILE, LOSS_PLOT = "metrics.jsonl", "loss.png"
PEAK_FLOPS = {"H100": 989e12, "H200": 989e12, "H800": 989e12, "A100": 312e12, "A10": 125e12, "L4": 121e12,
              "4090": 165e12, "3090": 71e12}


def defaults_text(name: str) -> str:
    """The help's account of a task-dependent default: "the task's: 0.001, seq2seq 0.002"."""
    own = ", ".join(f"{task} {d[name]:g}" for task, d in TASK_DEFAULTS.items() if name in d)
    return f"the task's: {DEFAULTS[name]:g}" + (f", {own}" if own else "")


@dataclass
class TrainConfig:
    data: str = option("data/corpus", "prepared data directory (from `lmforge prepare`) for clm / mlm; a CSV / TSV / "
                                      "JSONL table for classify / seq2seq")
    out: str = option("runs/model", "model directory to write: config, weights, tokenizer, metrics", short="-o")
    preset: str = option("gpt-mini", "model preset (`lmforge presets` lists them)", fixed=True)
    task: str = option("clm", "what to train for: clm (next-token prediction), mlm (masked LM, encoders), classify "
                              "(labelled table), seq2seq (pairs table, encoder-decoders), sft (chat JSONL)",
                       aliases=("--objective",), fixed=True)
    model: ModelOverrides = nested(ModelOverrides)
    init_from: str | None = option(None, "start from the weights of this model directory (fine-tuning)")
    batch_size: int | None = option(None, "sequences per micro-batch (per process)", fixed=True, check=at_least(1),
                                    unset=defaults_text("batch_size"))
    grad_accum: int = option(1, "micro-batches accumulated per optimizer step (a resume on another number of "
                                "processes changes it to keep processes x grad-accum x batch-size; the checkpoint "
                                "checks that product)", check=at_least(1))
    max_steps: int = option(1000, "optimizer steps in the whole run (the schedule's length)", fixed=True,
                            check=at_least(1))
    lr: float | None = option(None, "peak learning rate (of every weight under adamw; of the embeddings, head, norms "
                                    "and biases under muon)", fixed=True, check=above(0),
                              unset=defaults_text("lr"))
    min_lr: float | None = option(None, "final learning rate of the cosine decay (default lr/10; at most --lr)",
                                  fixed=True, check=at_least(0))
    warmup_steps: int | None = option(None, "linear warmup steps", fixed=True, check=at_least(0),
                                      unset=defaults_text("warmup_steps"))
    weight_decay: float = option(0.1, "AdamW weight decay (matrices only)", fixed=True, check=at_least(0))
    optimizer: str | None = option(None, "muon (Muon for the blocks' weight matrices, AdamW for the rest; measured "
                                         "best per CPU-minute for every task, README 'Defaults') or adamw",
                                   choices=("adamw", "muon"), fixed=True,
                                   unset="muon; adamw with --strategy fsdp, which Muon does not support")
    muon_lr: float | None = option(None, "peak learning rate of the Muon matrices (with --optimizer muon)",
                                   fixed=True, check=above(0), unset=defaults_text("muon_lr"))
    beta1: float = option(0.9, "AdamW beta1", fixed=True, check=between(0, 1, high_open=True))
    beta2: float = option(0.95, "AdamW beta2", fixed=True, check=between(0, 1, high_open=True))
    grad_clip: float = option(1.0, "clip the gradient norm to this (0 disables)", fixed=True, check=at_least(0))
    eval_interval: int = option(200, "evaluate every this many steps", check=at_least(1))
    eval_iters: int = option(20, "validation batches per evaluation", check=at_least(1))
    log_interval: int = option(10, "log the training loss every this many steps", check=at_least(1))
    save_interval: int | None = option(None, "checkpoint every this many steps (default: eval_interval)",
                                       check=at_least(1))
    sample_interval: int | None = option(None, "print a sample every this many steps (default: eval_interval; "
                                               "0 disables)", check=at_least(0))
    sample_tokens: int = option(64, "tokens per training sample", check=at_least(1))
    sample_prompt: str = option("", "prompt for training samples")
    seed: int = option(1337, "random seed (data order, init, dropout)", fixed=True)
    device: str = option("auto", "auto, cpu, cuda, cuda:N or mps", check=device_name)
    dtype: str = option("auto", "auto (bf16 autocast on GPU, fp32 on CPU), float32 or bfloat16",
                        choices=("auto", "float32", "bfloat16"))
    compile: bool = option(False, "torch.compile the model")
    strategy: str = option("auto", "with torchrun: ddp (every process holds the whole model), fsdp (parameters, "
                                   "gradients and optimizer state sharded over the processes; sharded checkpoints); "
                                   "auto: ddp under torchrun, nothing for one process", choices=STRATEGIES, saved=False)
    activation_checkpointing: bool = option(False, "recompute each block's activations in the backward pass "
                                                   "instead of keeping them: less memory, ~1/3 more compute")
    resume: bool = option(False, "continue the run in --out exactly where it stopped (its train_config.yaml gives "
                                 "the settings; flags typed again may not change how it was trained)", saved=False)
    force: bool = option(False, "with --resume: accept flags that change what the checkpoint was trained with "
                                "(batch size, schedule, model shape, task options)", saved=False)
    overwrite: bool = option(False, "start a new run in an --out that holds another model or other files, "
                                    "replacing them (never one of the run's inputs)", saved=False)
    stop_after: int | None = option(None, "stop (with a checkpoint) after this many steps of this run; "
                                          "continue later with --resume", saved=False, check=at_least(1))
    progress: bool = option(True, "show a progress bar")
    task_options: Any = option(None, "the task's own options (MLMOptions, ClassifyOptions, Seq2SeqOptions); "
                                     "None: their defaults. The CLI fills it from the task's flags", cli=False)

    def __post_init__(self) -> None:
        if self.optimizer is None and self.strategy == "fsdp":
            self.optimizer = "adamw"
        for name, value in task_defaults(self.task).items():      # None: the task's default (one source)
            if getattr(self, name) is None:
                setattr(self, name, value)
        validate(self)
        if self.min_lr is not None and self.min_lr > self.lr:
            raise ConfigError(f"min_lr={self.min_lr} is above lr={self.lr}: the cosine decay would raise the "
                              f"learning rate; give --min-lr at most --lr")
        if self.resume and self.overwrite:
            raise ConfigError("--resume continues the run in --out and --overwrite replaces it; give one of them")

    def options_for(self, cls: type) -> Any:
        """The task's options: `task_options` when set (checked to be a `cls`), else `cls()`."""
        if self.task_options is None:
            return cls()
        if not isinstance(self.task_options, cls):
            raise ConfigError(f"task {self.task} takes {cls.__name__} as task_options, not "
                              f"{type(self.task_options).__name__}")
        return self.task_options


def resolve_dtype_name(device: torch.device, dtype: str) -> str:
    return ("bfloat16" if device.type == "cuda" else "float32") if dtype == "auto" else dtype


def autocast_for(device: torch.device, dtype: str):
    """The autocast context for this device and dtype choice (a no-op for fp32)."""
    dtype = resolve_dtype_name(device, dtype)
    if dtype == "float32":
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_FLOPS.items() if k in name), None)


def check_memory_fits(config: ModelConfig, batch_size: int, device: torch.device, trainable_fraction: float = 1.0):
    """Refuse a configuration that cannot fit: weights + AdamW state + activations of one
    micro-batch (a rough, deliberately generous estimate) against the free memory."""
    n = num_params(config)
    T, d, L, V = config.context_length, config.d_model, config.n_layer, config.padded_vocab_size
    act_bytes = 4 if device.type == "cpu" else 2
    attn = config.n_head * T * T * 4 * batch_size * L if device.type == "cpu" else 0  # math attention keeps scores
    need = n * 4 + n * trainable_fraction * 12 + batch_size * T * (16 * d * L * act_bytes + 3 * V * 4) + attn
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return
    if need > free:
        raise ConfigError(f"batch_size={batch_size} x context {T} with {n / 1e6:.1f}M parameters needs about "
                          f"{need / 2**30:.1f} GiB but only {free / 2**30:.1f} GiB is free on {device}; lower "
                          f"--batch-size (raise --grad-accum to keep tokens per step) or --context-length")


class MetricsLog:
    """Appends one JSON object per line to metrics.jsonl (rank 0 only). Each step is logged once:
    a fresh run starts a fresh file, a resumed one first drops what was logged after its
    checkpoint (`start`)."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def start(self, resume_step: int | None) -> None:
        """Fresh run (None): remove the old file. Resumed at `resume_step`: keep the rows up to that
        step; rows after it (logged by a run killed later) and a torn last line are dropped."""
        if not self.enabled:
            return
        if resume_step is None or not self.path.is_file():
            self.path.unlink(missing_ok=True)
            return
        kept, torn = [], 0
        for line in self.path.read_bytes().decode("utf-8", "replace").splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                torn += 1
                continue
            if not (isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] > resume_step):
                kept.append(line)
        if torn:
            warnings.warn(f"dropped {torn} torn line(s) from {self.path} (written when a run was killed)")
        atomic_write_text(self.path, "".join(line + "\n" for line in kept))

    def write(self, **row: Any) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(row) + "\n")


def saved_names(model: nn.Module, names: Any) -> list[str]:
    """`names` (state dict keys, in order) without the second name of a tied parameter
    (safetensors stores shared tensors once; loading ties them again)."""
    params = dict(model.named_parameters(remove_duplicate=False))
    seen: set[int] = set()
    out = []
    for name in names:
        if name in params:
            if id(params[name]) in seen:
                continue
            seen.add(id(params[name]))
        out.append(name)
    return out


class Trainer:
    """The loop. `names_to_save(model)` picks the state-dict entries a checkpoint stores as
    `weights_file` (default: the whole model as model.safetensors; a LoRA run stores only its
    adapters); `extra_files(out)` writes anything else the model directory needs at the start."""

    def __init__(self, cfg: TrainConfig, model: nn.Module, objective: Task, model_config: ModelConfig, *,
                 tokenizer=None, sample_fn: Callable[[nn.Module], str] | None = None,
                 extra_files: Callable[[Path], None] | None = None, extra_metadata: dict[str, str] | None = None,
                 names_to_save: Callable[[nn.Module], set[str]] | None = None, weights_file: str = WEIGHTS_FILE):
        self.cfg, self.model, self.objective, self.model_config = cfg, model, objective, model_config
        self.tokenizer, self.sample_fn, self.extra_files = tokenizer, sample_fn, extra_files
        self.extra_metadata = extra_metadata or {}
        self.names_to_save, self.weights_file = names_to_save, weights_file
        self.out = Path(cfg.out)
        if cfg.strategy == "fsdp" and cfg.optimizer == "muon":
            raise ConfigError("--optimizer muon orthogonalises whole matrices, which --strategy fsdp splits over the "
                              "processes; use --optimizer adamw with fsdp, or --strategy ddp with muon")
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
        self.log = MetricsLog(self.out / METRICS_FILE, self.dist.is_main)

    def full_params(self):
        """Every rank holds the whole model inside (enter on every rank): see `Strategy.full_params`."""
        return self.strategy.full_params(self.model)

    # ---- evaluation -------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model: nn.Module) -> dict[str, float]:
        was_training = model.training
        model.eval()
        gen = torch.Generator().manual_seed(self.cfg.seed + 1)       # the same val batches every time
        B, iters, W = self.cfg.batch_size, self.cfg.eval_iters, self.dist.world_size
        indices = self.objective.sample("val", iters * B, gen).view(iters, B)
        total = torch.zeros(2, device=self.device)                     # (sum of batch losses, batches)
        # ranks share the batches; under FSDP every forward is a collective, so every rank runs as many
        # (a rank past the last batch repeats one and does not count it)
        end = math.ceil(iters / W) * W if self.strategy.sharded else iters
        for i in range(self.dist.rank, end, W):
            batch = self._to_device(self.objective.collate("val", indices[i % iters]))
            with self.autocast():
                loss = self.objective.eval_loss(model, batch).float()
            if i < iters:
                total[0] += loss
                total[1] += 1
        total = all_reduce_mean(total, self.dist)
        val_loss = (total[0] / total[1]).item()
        metrics = {"val_loss": val_loss}
        if self.objective.reports_perplexity:
            metrics["val_ppl"] = math.exp(min(val_loss, 50.0))
        with self.full_params():
            metrics.update(self.objective.evaluate(self._raw(model), self.device, self.autocast))
        model.train(was_training)
        return metrics

    # ---- helpers ------------------------------------------------------------------------------
    def _to_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.device.type == "cuda":
            return {k: v.pin_memory().to(self.device, non_blocking=True) for k, v in batch.items()}
        return {k: v.to(self.device) for k, v in batch.items()}

    @staticmethod
    def _raw(model: nn.Module) -> nn.Module:
        model = getattr(model, "module", model)          # DDP
        return getattr(model, "_orig_mod", model)        # torch.compile

    def _weights(self) -> dict[str, torch.Tensor]:
        """What `weights_file` stores: contiguous CPU tensors on rank 0 (gathered under FSDP), {} elsewhere."""
        full = self.strategy.full_state_dict(self.model)
        if not self.dist.is_main:
            return {}
        names = saved_names(self.model, full)
        if self.names_to_save is not None:
            keep = self.names_to_save(self.model)
            names = [n for n in names if n in keep]
        return {n: full[n].detach().to("cpu").contiguous() for n in names}

    def _batch_shape(self) -> torch.Tensor:
        return checkpoint.batch_shape(self.dist.world_size, self.cfg.grad_accum, self.cfg.batch_size)

    def _save(self, step: int, optimizer, data_gen: torch.Generator, tokens: int) -> None:
        checkpoint.save_train_state(self.out, self.strategy, self.model, optimizer, data_gen, step, tokens,
                                    self._batch_shape(), self._weights, self.extra_metadata, self.weights_file)

    def _stop_requested(self, stop: StopRequest) -> bool:
        """Whether Ctrl-C / SIGTERM asked to stop; under torchrun, whether any rank was asked."""
        if not self.dist.enabled:
            return stop.requested
        flag = torch.tensor([1.0 if stop.requested else 0.0], device=self.device)
        return bool(all_reduce_mean(flag, self.dist).item() > 0)

    # ---- the loop -----------------------------------------------------------------------------
    def fit(self, resume_state: dict[str, Any] | None = None) -> dict[str, Any]:
        cfg, dist, device = self.cfg, self.dist, self.device
        main = dist.is_main
        if main:
            self.out.mkdir(parents=True, exist_ok=True)
            if self.extra_files is not None:
                self.extra_files(self.out)              # first: train_config.yaml marks the directory as a run's
            self.model_config.save(self.out / CONFIG_FILE)
            if self.tokenizer is not None:
                self.tokenizer.save(self.out)
            self.log.start(int(resume_state["step"]) if resume_state is not None else None)
        model = self.model.to(device)
        if cfg.activation_checkpointing:
            activation_checkpointing(model)
        train_model: nn.Module = torch.compile(model) if cfg.compile else model
        train_model = self.strategy.wrap(train_model)     # FSDP shards `model` in place: build the optimizer after
        if cfg.optimizer == "muon":
            from .muon import make_muon
            optimizer = make_muon(model, cfg.lr, cfg.muon_lr, cfg.weight_decay, (cfg.beta1, cfg.beta2))
        else:
            optimizer = make_adamw(model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2), device.type)
        for group in optimizer.param_groups:
            group.setdefault("peak_lr", group["lr"])         # the schedule scales every group's own peak
        data_gen = torch.Generator().manual_seed(cfg.seed)
        step, tokens = 0, 0
        if resume_state is not None:
            step, tokens = checkpoint.resume_train_state(resume_state, self.strategy, self.model, optimizer, data_gen,
                                                         self._batch_shape(), self.out)
        if step >= cfg.max_steps:
            raise ConfigError(f"the run in {self.out} is already at step {step} of max_steps={cfg.max_steps}; "
                              f"pass a larger --max-steps to train further")
        model.train()
        min_lr = cfg.lr / 10 if cfg.min_lr is None else cfg.min_lr
        save_every = cfg.save_interval or cfg.eval_interval
        sample_every = cfg.eval_interval if cfg.sample_interval is None else cfg.sample_interval
        peak = peak_flops(device)
        tokens_flops = flops_per_token(self.model_config) if peak else 0      # for MFU, where the GPU's peak is known
        end_step = cfg.max_steps if cfg.stop_after is None else min(cfg.max_steps, step + cfg.stop_after)
        bar = tqdm(total=cfg.max_steps, initial=step, desc="training", disable=not (main and cfg.progress),
                   dynamic_ncols=True)
        summary: dict[str, Any] = {"out": str(self.out)}
        B, A, W = cfg.batch_size, cfg.grad_accum, dist.world_size
        t_last, tokens_since = time.perf_counter(), 0
        last_eval: int | None = None
        saved_at = step
        watch = LossWatch(self.objective.constant_loss(),
                          check_from=max(MIN_STEPS_TO_JUDGE, cfg.warmup_steps, cfg.max_steps // 4))
        stop = StopRequest(announce=main)
        try:
            stop.__enter__()
            while step < end_step:
                lr = lr_at(step, lr=cfg.lr, min_lr=min_lr, warmup=cfg.warmup_steps, total=cfg.max_steps)
                for group in optimizer.param_groups:
                    group["lr"] = group["peak_lr"] * lr / cfg.lr
                indices = self.objective.sample("train", W * A * B, data_gen).view(W, A, B)[dist.rank]
                loss_sum = torch.zeros((), device=device)
                step_tokens = 0
                for a in range(A):
                    batch = self._to_device(self.objective.collate("train", indices[a]))
                    step_tokens += self.objective.tokens_in(batch)
                    with self.strategy.micro_batch(train_model, last=a == A - 1):
                        with self.autocast():
                            loss = self.objective.loss(train_model, batch) / A
                        loss.backward()
                    loss_sum += loss.detach()
                if cfg.grad_clip > 0:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip, foreach=True)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                tokens += step_tokens * W
                tokens_since += step_tokens * W
                bar.update(1)
                if step % cfg.log_interval == 0 or step == end_step:
                    loss_val = all_reduce_mean(loss_sum, dist).item()          # the only host sync per log
                    if not math.isfinite(loss_val):
                        raise LmforgeError(f"the loss became {loss_val} at step {step}; lower --lr or raise "
                                           f"--warmup-steps (and check the data)")
                    now = time.perf_counter()
                    tps = tokens_since / max(now - t_last, 1e-9)
                    row = {"kind": "train", "step": step, "loss": round(loss_val, 6), "lr": lr, "tokens": tokens,
                           "tokens_per_s": round(tps, 1)}
                    if peak and tokens_flops:
                        row["mfu"] = round(tokens_flops * tps / (peak * W), 4)
                    self.log.write(**row)
                    post = {"loss": f"{loss_val:.4f}", "tok/s": f"{tps:,.0f}"}
                    if "mfu" in row:
                        post["mfu"] = f"{100 * row['mfu']:.1f}%"
                    bar.set_postfix(post)
                    summary.update(train_loss=loss_val, tokens_per_s=tps)
                    t_last, tokens_since = now, 0
                    alarm = watch.update(step, loss_val)
                    if alarm:
                        self.log.write(kind="warning", step=step, message=alarm)
                        if main:
                            bar.write(alarm)
                evaluate_now = step % cfg.eval_interval == 0 or step == cfg.max_steps
                if evaluate_now:
                    metrics = self.evaluate(train_model)
                    last_eval = step
                    self.log.write(kind="eval", step=step, **{k: round(v, 6) for k, v in metrics.items()})
                    summary.update(metrics)
                    if main:
                        bar.write(f"step {step}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))
                if self.sample_fn is not None and sample_every and (step % sample_every == 0 or step == cfg.max_steps):
                    with self.full_params():
                        if main:
                            text = self.sample_fn(model)
                            self.log.write(kind="sample", step=step, text=text)
                            bar.write(f"sample at step {step}: {text!r}")
                if step % save_every == 0 or step == end_step:
                    self._save(step, optimizer, data_gen, tokens)
                    saved_at = step
                    if main:
                        plot_loss(self.out / METRICS_FILE, self.out / LOSS_PLOT)
                if evaluate_now:
                    t_last, tokens_since = time.perf_counter(), 0      # keep eval time out of tokens/s
                if step < end_step and self._stop_requested(stop):       # Ctrl-C: the step is whole, save it
                    bar.close()
                    if saved_at != step:
                        self._save(step, optimizer, data_gen, tokens)
                        if main:
                            plot_loss(self.out / METRICS_FILE, self.out / LOSS_PLOT)
                    if main:
                        print(f"\ninterrupted at step {step}; checkpoint saved in {self.out} — continue with "
                              f"--resume")
                    summary.update(step=step, stopped=True)
                    return summary
        except KeyboardInterrupt:                        # a second Ctrl-C: mid-step, so nothing consistent to save
            bar.close()
            if main:
                print(f"\nstopped during step {step + 1} without saving; the checkpoint of step {saved_at} in "
                      f"{self.out} is intact — continue with --resume")
            raise
        finally:
            stop.__exit__(None, None, None)
        bar.close()
        summary.update(step=step, stopped=step < cfg.max_steps, last_eval=last_eval)
        if watch.verdict():
            summary["warning"] = watch.verdict()
        if main and step < cfg.max_steps:
            print(f"stopped at step {step} of {cfg.max_steps}; continue with the same command plus --resume")
        return summary
