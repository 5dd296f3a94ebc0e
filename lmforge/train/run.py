"""`lmforge train`: build (or resume, or fine-tune) a model from a prepared data directory
and run the trainer with the chosen objective.

Two extension points keep every variant in the one loop: `lora=` trains LoRA adapters on the
`init_from` base and checkpoints only them; `wrap_objective=` wraps the task's objective
(knowledge distillation wraps the causal-LM batches with a teacher)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from ..config import ModelConfig, get_preset
from ..data.shards import META_FILE, load_meta
from ..errors import ConfigError, ModelDirError
from ..model import build_model
from ..modeldir import CONFIG_FILE, WEIGHTS_FILE, load_weights_into
from ..tokenizers import Tokenizer
from . import checkpoint
from .objective import Objective
from .trainer import TrainConfig, Trainer, check_memory_fits, resolve_device


def _clm(cfg: TrainConfig, config: ModelConfig, tokenizer: Tokenizer) -> Objective:
    from ..data.pretrain import CausalLMObjective
    if config.family != "decoder":
        raise ConfigError(f"objective clm needs a decoder model, but preset {cfg.preset!r} is a {config.family}; "
                          f"pick a decoder preset (gpt-*, llama-*)")
    return CausalLMObjective(cfg.data, config.context_length)


def _sft(cfg: TrainConfig, config: ModelConfig, tokenizer: Tokenizer) -> Objective:
    from ..data.chat import SFTObjective
    if config.family != "decoder":
        raise ConfigError(f"task sft needs a decoder model, but {cfg.init_from or cfg.preset} is a {config.family}")
    return SFTObjective(cfg.data, config.context_length, tokenizer)


# objective name -> builder(train config, model config, tokenizer)
OBJECTIVES: dict[str, Callable[[TrainConfig, ModelConfig, Tokenizer], Objective]] = {"clm": _clm, "sft": _sft}


def decoder_sampler(tokenizer: Tokenizer, cfg: TrainConfig) -> Callable[[torch.nn.Module], str]:
    from ..generate import GenerationConfig, generate

    def sample(model: torch.nn.Module) -> str:
        gen = GenerationConfig(max_new_tokens=min(cfg.sample_tokens, model.config.context_length - 8),
                               temperature=0.8, top_k=50, seed=cfg.seed)
        return generate(model, tokenizer, cfg.sample_prompt, gen)[0].text
    return sample


def same_tokenizer(a: Tokenizer, b: Tokenizer) -> bool:
    return a.hf.to_str() == b.hf.to_str()


def _is_prepared(data: str) -> bool:
    return (Path(data) / META_FILE).is_file()


def build_for_training(cfg: TrainConfig, lora=None) -> tuple[torch.nn.Module, ModelConfig, Tokenizer, dict | None,
                                                              Any]:
    """(model, config, tokenizer, resume state, LoRA settings): resumed from --out, started from
    --init-from (with LoRA adapters when `lora` is enabled), or fresh from the preset."""
    from ..adapt.lora import ADAPTER_FILE, apply_lora, is_adapter_dir, load_lora_model
    out = Path(cfg.out)
    lora = lora if lora is not None and lora.enabled else None
    if cfg.resume:
        if not (out / CONFIG_FILE).is_file():
            raise ModelDirError(f"cannot resume: {out} holds no run (no config.json); drop --resume to start one")
        tokenizer = Tokenizer.load(out)
        if is_adapter_dir(out):
            weights, resume_state, step = checkpoint.load_checkpoint(out, ADAPTER_FILE)
            model, config, _, recorded = load_lora_model(out, weights=weights)
            if lora is not None and lora != recorded:
                raise ConfigError(f"{out} was trained with {recorded}; resume with the same LoRA flags or none")
            lora = recorded
        else:
            config = ModelConfig.load(out / CONFIG_FILE)
            weights, resume_state, step = checkpoint.load_checkpoint(out)
            model = build_model(config)
            load_weights_into(model, weights, str(out))
        print(f"resuming {out} at step {step}")
        return model, config, tokenizer, resume_state, lora
    for weights_file in (WEIGHTS_FILE, ADAPTER_FILE):
        if (step := checkpoint.checkpoint_step(out, weights_file)) is not None:
            raise ConfigError(f"{out} already holds a trained model (step {step}); "
                              f"pass --resume to continue it, or a new --out")
    if cfg.init_from:
        from ..api import load_model
        overrides = cfg.model_overrides()
        dropout = overrides.pop("dropout", None)
        model, config, tokenizer = load_model(cfg.init_from, **({"dropout": dropout} if dropout is not None else {}))
        if _is_prepared(cfg.data) and not same_tokenizer(tokenizer, Tokenizer.load(cfg.data)):
            raise ConfigError(f"the tokenizer of {cfg.data} differs from the one of {cfg.init_from}; prepare the data "
                              f"with `lmforge prepare ... --tokenizer {cfg.init_from}`")
        bad = {k: v for k, v in overrides.items() if getattr(config, k) != v}
        if bad:
            raise ConfigError(f"--init-from {cfg.init_from} fixes the architecture; {bad} does not match its "
                              f"config.json — drop those flags")
        if lora is not None:
            torch.manual_seed(cfg.seed)                      # the adapters' random init
            apply_lora(model, lora)
        elif config.quantization:
            raise ConfigError(f"{cfg.init_from} is quantized (int{config.quantization['bits']}); fine-tune the "
                              f"original model and quantize the result")
        return model, config, tokenizer, None, lora
    if lora is not None:
        raise ConfigError("LoRA adapts an existing model: pass the base model directory (`lmforge finetune MODEL_DIR "
                          "--lora-rank R` or --init-from)")
    load_meta(cfg.data)
    tokenizer = Tokenizer.load(cfg.data)
    config = get_preset(cfg.preset, vocab_size=tokenizer.vocab_size, **cfg.model_overrides())
    torch.manual_seed(cfg.seed)
    return build_model(config), config, tokenizer, None, None


def train(cfg: TrainConfig, *, lora=None,
          wrap_objective: Callable[[Objective, ModelConfig, Tokenizer], Objective] | None = None) -> dict[str, Any]:
    """Train according to `cfg`; returns a summary (final losses, perplexity, step, out).

    lora: a `LoRAConfig`; when enabled, train adapters on `cfg.init_from` and save only them.
    wrap_objective(objective, model config, tokenizer): replaces the task's objective (distillation)."""
    if cfg.objective not in OBJECTIVES:
        raise ConfigError(f"unknown objective {cfg.objective!r}; use one of {', '.join(OBJECTIVES)}")
    model, config, tokenizer, resume_state, lora = build_for_training(cfg, lora)
    if config.vocab_size < tokenizer.vocab_size:
        raise ConfigError(f"the model's vocab_size {config.vocab_size} is smaller than the tokenizer's "
                          f"{tokenizer.vocab_size}; the data was prepared with another tokenizer")
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    check_memory_fits(config, cfg.batch_size, resolve_device(cfg.device),
                      trainable_fraction=n_trainable / max(1, sum(p.numel() for p in model.parameters())))
    objective = OBJECTIVES[cfg.objective](cfg, config, tokenizer)
    if wrap_objective is not None:
        objective = wrap_objective(objective, config, tokenizer)
    sample_fn = decoder_sampler(tokenizer, cfg) if config.family == "decoder" else None
    hooks: dict[str, Any] = {}
    if lora is not None:
        from ..adapt.lora import ADAPTER_FILE, trainable_state_dict, write_adapter_config
        print(f"LoRA rank {lora.lora_rank}: training {n_trainable:,} of {config.num_params():,} parameters")
        hooks = dict(tensors_to_save=trainable_state_dict, weights_file=ADAPTER_FILE)
        if not cfg.resume:
            hooks["extra_files"] = lambda out: write_adapter_config(out, lora, cfg.init_from)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*max_new_tokens.*")
        trainer = Trainer(cfg, model, objective, config, tokenizer=tokenizer, sample_fn=sample_fn, **hooks)
        return trainer.fit(resume_state)
