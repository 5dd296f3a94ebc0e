"""`lmforge train`: build (or resume, or fine-tune) a model and run the trainer with the chosen
task (`lmforge.tasks`).

clm and mlm read prepared shards (`--data` is a directory from `lmforge prepare`); classify,
seq2seq and sft read a file (a CSV / TSV / JSONL table, or chat JSONL). Every run resolves, in
order:

1. the tokenizer: the data directory's (shards), else the run's own (--resume), the base
   model's (--init-from), or one the task trains on the table (from scratch);
2. the model config: the run's (--resume), the base model's (--init-from, an lmforge or a
   Hugging Face directory), or the preset;
3. the task, which reads the data and may fix config fields (class labels, vocabulary
   sizes: `model_changes`);
4. the model: built from that config, weights from the checkpoint or the base model (a new
   classification head starts from its initialisation).

Two extension points keep every variant in the one loop: `lora=` trains LoRA adapters on the
`init_from` base (plus any new head) and checkpoints only those; `wrap_task=` wraps the
task (knowledge distillation wraps its batches with a teacher). `observers=` see the run
(`observers.py`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from ..config import ModelConfig, fresh_pooling, get_preset
from ..data.shards import load_meta
from ..errors import ConfigError, ModelDirError
from ..adapt.lora import apply_lora
from ..adapt.runs import load_lora_model
from ..loading import build_from_base, read_model_dir, resolve_device
from ..model import build_model, num_params
from ..modeldir import ADAPTER_FILE, CONFIG_FILE, is_adapter_dir
from ..tokenizers import Tokenizer
from ..tokenizers.base import TOKENIZER_FILE
from ..options import cli_fields, flat_settings
from ..runfile import TRAIN_CONFIG_FILE, read_run_file, write_run_file
from ..tasks import SHARD_TASKS, TASK_OPTIONS, TASKS, Task
from . import checkpoint
from .config import TrainConfig
from .epochs import plan_steps
from .observers import CardFile, RunObserver
from .outdir import claim_out
from .tracking import make_trackers
from .memory import check_memory_fits
from .trainer import Trainer


def run_settings(cfg: TrainConfig, lora=None) -> dict[str, Any]:
    """The full resolved settings of a run under their flag names (what `train_config.yaml`
    holds): the TrainConfig, the task's options, and the LoRA settings of a LoRA run."""
    settings = flat_settings(cfg)
    if cfg.task in TASK_OPTIONS:
        settings.update(flat_settings(cfg.options_for(TASK_OPTIONS[cfg.task])))
    if lora is not None and lora.enabled:
        settings.update(flat_settings(lora))
    return settings


def fixed_settings() -> set[str]:
    """Settings a resumed run must keep: the `fixed` fields of TrainConfig and every task option."""
    fixed = {name for name, (f, _) in cli_fields(TrainConfig).items() if f.metadata.get("fixed")}
    for cls in TASK_OPTIONS.values():
        fixed |= set(cli_fields(cls))
    return fixed


def check_resume_settings(cfg: TrainConfig, lora, out: Path) -> None:
    """Refuse a resume whose settings differ from what the checkpoint was trained with (the
    run's train_config.yaml), naming the field, unless `cfg.force`."""
    path = out / TRAIN_CONFIG_FILE
    if not path.is_file() or cfg.force:
        return
    saved, now = read_run_file(path), run_settings(cfg, lora)
    changed = sorted(k for k in fixed_settings() if k in saved and k in now and saved[k] != now[k]
                     and not (k == "max_steps" and cfg.max_steps is None))    # `plan_steps` checks it
    if changed:
        k = changed[0]
        raise ConfigError(f"--resume would change {k} from {saved[k]!r} (what {out} was trained with, in {path.name}) "
                          f"to {now[k]!r}" + (f" (and {', '.join(changed[1:])})" if len(changed) > 1 else "")
                          + "; drop the flag to continue the run as it was, or add --force to change it")


def decoder_sampler(tokenizer: Tokenizer, cfg: TrainConfig) -> Callable[[torch.nn.Module], str]:
    from ..generate import GenerationConfig, generate

    def sample(model: torch.nn.Module) -> str:
        gen = GenerationConfig(max_new_tokens=min(cfg.sample_tokens, model.config.context_length - 8),
                               temperature=0.8, top_k=50, seed=cfg.seed, compile=False)   # a model in training
        return generate(model, tokenizer, cfg.sample_prompt, gen)[0].text
    return sample


def trainable_names(model: torch.nn.Module) -> set[str]:
    """What a LoRA checkpoint stores: the parameters that train (adapters + any new head)."""
    return {n for n, p in model.named_parameters() if p.requires_grad}


def same_tokenizer(a: Tokenizer, b: Tokenizer) -> bool:
    return a.hf.to_str() == b.hf.to_str()


def tokenizer_sha256(tokenizer: Tokenizer) -> str:
    """Hash of the tokenizer's content (its tokenizer.json as lmforge writes it)."""
    return hashlib.sha256(tokenizer.hf.to_str().encode()).hexdigest()


def freeze(model: torch.nn.Module, prefixes: tuple[str, ...]) -> list[str]:
    """Stop gradients for parameters under `prefixes` that nothing else shares (a tied output
    matrix stays trainable through its embedding). Returns the frozen names."""
    if not prefixes:
        return []
    shared = {id(p) for n, p in model.named_parameters(remove_duplicate=False) if not n.startswith(prefixes)}
    frozen = []
    for name, p in model.named_parameters():
        if name.startswith(prefixes) and id(p) not in shared:
            p.requires_grad_(False)
            frozen.append(name)
    return frozen


@dataclass
class TrainingSetup:
    """What a run trains, as `build_for_training` resolves it from the run's inputs."""
    model: torch.nn.Module
    config: ModelConfig                      # the model's config, with the task's changes
    tokenizer: Tokenizer
    task: Task
    resume_state: dict[str, Any] | None      # the train state of the checkpoint resumed from (None: a new run)
    lora: Any                                # the LoRA settings in effect (None: every weight trains)


@dataclass
class _Start:
    """Where a run starts, before the task has read the data: the config and weights to build from."""
    config: ModelConfig
    tokenizer: Tokenizer | None
    weights: dict[str, torch.Tensor] | None = None    # None: a fresh initialisation
    base_config: ModelConfig | None = None            # the config `weights` were trained with
    source: str = ""                                  # where `weights` come from (named in errors)
    resume_state: dict[str, Any] | None = None


def build_for_training(cfg: TrainConfig, lora=None) -> TrainingSetup:
    """The model to train — resumed from --out, started from --init-from, or fresh from the preset —
    with its config, tokenizer, task, the train state when resuming, and the LoRA settings in
    effect (`lora` adapts an --init-from base; a resumed LoRA run keeps its own)."""
    lora = lora if lora is not None and lora.enabled else None
    tokenizer: Tokenizer | None = None
    if cfg.task in SHARD_TASKS:
        load_meta(cfg.data)
        tokenizer = Tokenizer.load(cfg.data)
    out = Path(cfg.out)
    if cfg.resume:
        tokenizer = _check_resume(cfg, lora, tokenizer)
        if is_adapter_dir(out):
            return _resume_lora(cfg, lora, tokenizer)
        start = _resume_start(cfg, tokenizer)
    elif cfg.init_from:
        start = _init_from_start(cfg, tokenizer)
    else:
        start = _fresh_start(cfg, lora, tokenizer)
    task = TASKS[cfg.task](cfg, start.config, start.tokenizer)
    changes = {k: v for k, v in task.model_changes().items() if getattr(start.config, k) != v}
    if changes and cfg.resume:
        raise ConfigError(f"the data given to resume {out} changes the model's {', '.join(sorted(changes))}; resume "
                          f"with the same --data and task options as the run started with")
    config = dataclasses.replace(start.config, **changes)
    torch.manual_seed(cfg.seed)
    model = build_model(config) if start.weights is None else _build_from_weights(cfg, start, config, lora)
    return TrainingSetup(model, config, task.tokenizer or start.tokenizer, task, start.resume_state, lora)


def _check_resume(cfg: TrainConfig, lora, tokenizer: Tokenizer | None) -> Tokenizer:
    """Refuse a resume of no run, with changed settings or with data of another tokenizer; the
    run's tokenizer."""
    out = Path(cfg.out)
    if not (out / CONFIG_FILE).is_file():
        raise ModelDirError(f"cannot resume: {out} holds no run (no config.json); drop --resume to start one")
    check_resume_settings(cfg, lora, out)
    if tokenizer is not None and (out / TOKENIZER_FILE).is_file():
        ours, theirs = tokenizer_sha256(Tokenizer.load(out)), tokenizer_sha256(tokenizer)
        if ours != theirs:
            raise ConfigError(f"--data {cfg.data} was prepared with another tokenizer than the run in {out} "
                              f"(tokenizer sha256 {theirs[:12]} vs the run's {ours[:12]}); resume with the "
                              f"data the run was trained on, or prepare this text with `lmforge prepare FILES "
                              f"--out DATA_DIR --tokenizer {out}`")
    return tokenizer or Tokenizer.load(out)


def _resume_lora(cfg: TrainConfig, lora, tokenizer: Tokenizer) -> TrainingSetup:
    """A LoRA run resumed: its base with the checkpoint's adapters, under the LoRA settings it recorded."""
    out = Path(cfg.out)
    weights, resume_state, step = checkpoint.load_checkpoint(out, ADAPTER_FILE)
    model, config, _, recorded = load_lora_model(out, weights=weights)
    if lora is not None and lora != recorded:
        raise ConfigError(f"{out} was trained with {recorded}; resume with the same LoRA flags or none")
    task = TASKS[cfg.task](cfg, config, tokenizer)
    print(f"resuming {out} at step {step}")
    return TrainingSetup(model, config, task.tokenizer or tokenizer, task, resume_state, recorded)


def _resume_start(cfg: TrainConfig, tokenizer: Tokenizer) -> _Start:
    out = Path(cfg.out)
    config = ModelConfig.load(out / CONFIG_FILE)
    weights, resume_state, step = checkpoint.load_checkpoint(out)
    print(f"resuming {out} at step {step}")
    return _Start(config, tokenizer, weights, config, str(out), resume_state)


CHANGEABLE_AT_INIT = ("dropout", "attention_dropout", "pooling")  # --init-from may change: weights mean the same


def _init_from_start(cfg: TrainConfig, tokenizer: Tokenizer | None) -> _Start:
    """The --init-from model's config, weights and tokenizer (only the dropout rates and --pooling may change)."""
    base_config, weights, base_tok, source = read_model_dir(cfg.init_from)
    if base_config.quantization:
        raise ConfigError(f"{cfg.init_from} is quantized (int{base_config.quantization['bits']}); fine-tune "
                          f"the original model and quantize the result")
    overrides = cfg.model.given()
    config = dataclasses.replace(base_config, **{k: overrides.pop(k) for k in CHANGEABLE_AT_INIT if k in overrides})
    if tokenizer is not None and not same_tokenizer(base_tok, tokenizer):
        raise ConfigError(f"the tokenizer of {cfg.data} differs from the one of {cfg.init_from}; prepare the "
                          f"data with `lmforge prepare ... --tokenizer {cfg.init_from}`")
    bad = {k: v for k, v in overrides.items() if getattr(config, k) != v}
    if bad:
        raise ConfigError(f"--init-from {cfg.init_from} fixes the architecture; {bad} does not match its "
                          f"config.json — drop those flags")
    return _Start(config, base_tok, weights, base_config, source)


def _fresh_start(cfg: TrainConfig, lora, tokenizer: Tokenizer | None) -> _Start:
    """The preset, with the model flags and the data's vocabulary (`fresh_pooling`: an encoder pools by mean)."""
    if lora is not None:
        raise ConfigError("LoRA adapts an existing model: pass the base model directory (`lmforge finetune "
                          "MODEL_DIR --lora-rank R` or --init-from)")
    vocab = {"vocab_size": tokenizer.vocab_size} if tokenizer is not None else {}
    return _Start(fresh_pooling(get_preset(cfg.preset, **vocab, **cfg.model.given())), tokenizer)


def _build_from_weights(cfg: TrainConfig, start: _Start, config: ModelConfig, lora) -> torch.nn.Module:
    """The model of `config` holding the start's weights (a new classification head starts from its
    initialisation), with LoRA adapters when `lora` is set."""
    base_config, source = start.base_config, start.source
    weights, start.weights = start.weights, None         # the one reference: freed once the model holds them
    model, new_head = build_from_base(config, base_config, weights, source)
    del weights
    if lora is not None:
        torch.manual_seed(cfg.seed)                      # the adapters' random init
        apply_lora(model, lora, train_also=new_head)     # a new head trains (and is saved) with the adapters
    return model


class TaskFiles(RunObserver):
    """At each checkpoint, the task's own files beside the weights (`Task.save_extras`)."""

    def __init__(self, task: Task, model: torch.nn.Module):
        self.task, self.model = task, model

    def on_save(self, step: int, out: Path) -> None:
        self.task.save_extras(self.model, out)


def train(cfg: TrainConfig, *, lora=None,
          wrap_task: Callable[[Task, ModelConfig, Tokenizer], Task] | None = None,
          inputs: list[tuple[str, str | None]] = (), observers: list[RunObserver] = ()) -> dict[str, Any]:
    """Train according to `cfg`; returns a summary (final losses, perplexity or task metrics,
    step, out), plus the task's final test report.

    lora: a `LoRAConfig`; when enabled, train adapters on `cfg.init_from` and save only them.
    wrap_task(task, model config, tokenizer): replaces the task (distillation).
    inputs: other directories the run reads ((description, path)), which --out must not be.
    observers: `RunObserver`s that see the run (rows, evaluations, checkpoints, the end) on rank 0,
    after the trackers of `cfg.report_to` (`tracking`) and before the model card's refresh (`CardFile`).
    While it runs, the run holds the lock of --out: a second writer is refused."""
    if cfg.task not in TASKS:
        raise ConfigError(f"unknown task {cfg.task!r}; use one of {', '.join(TASKS)}")
    trackers = make_trackers(cfg.report_to, cfg.out)     # a missing library fails before --out is touched
    lock = claim_out(cfg, list(inputs))
    try:
        return _train_locked(cfg, lora, wrap_task, [*trackers, *observers, CardFile(Path(cfg.out))])
    finally:
        if lock is not None:
            lock.release()


def _train_locked(cfg: TrainConfig, lora, wrap_task, observers) -> dict[str, Any]:
    setup = build_for_training(cfg, lora)
    model, config, tokenizer, task, lora = setup.model, setup.config, setup.tokenizer, setup.task, setup.lora
    if config.vocab_size < tokenizer.vocab_size:
        raise ConfigError(f"the model's vocab_size {config.vocab_size} is smaller than the tokenizer's "
                          f"{tokenizer.vocab_size}; the data was prepared with another tokenizer")
    cfg = plan_steps(cfg, task)                      # max_steps: given, or what --epochs take
    freeze(model, task.frozen(config))
    n_trainable = check_memory_fits(config, cfg.batch_size, resolve_device(cfg.device), model)
    task.attach(model)                               # what the task trains beside the model (rtd: its generator)
    if wrap_task is not None:
        task = wrap_task(task, config, tokenizer)
    sample_fn = task.sampler()
    if sample_fn is None and config.family == "decoder" and not config.labels:
        sample_fn = decoder_sampler(tokenizer, cfg)
    if cfg.inspect_interval:
        from .inspection import TrainingInspection, lens_batch
        observers = [*observers, TrainingInspection(tokenizer, getattr(task, "target_tokenizer", None),
                                                    lens_batch(task, cfg.seed))]
    hooks: dict[str, Any] = {}
    if lora is not None:
        from ..adapt.runs import write_adapter_config
        print(f"LoRA rank {lora.lora_rank}: training {n_trainable:,} of {num_params(config):,} parameters")
        hooks.update(names_to_save=trainable_names, weights_file=ADAPTER_FILE)
    else:
        hooks["names_to_save"] = lambda m: task.saved_names(set(m.state_dict()))
        observers = [*observers, TaskFiles(task, model)]
    settings = run_settings(cfg, lora)

    def extra_files(out: Path) -> None:
        task.extra_files(out)
        if lora is not None and not cfg.resume:
            write_adapter_config(out, lora, cfg.init_from)
        write_run_file(out / TRAIN_CONFIG_FILE, settings)
    hooks["extra_files"] = extra_files
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*max_new_tokens.*")
        trainer = Trainer(cfg, model, task, config, tokenizer=tokenizer, sample_fn=sample_fn, observers=observers,
                          **hooks)
        return trainer.fit(setup.resume_state)
