"""`lmforge train`: build (or resume, or fine-tune) a model from a prepared data directory
and run the trainer with the chosen objective."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from ..config import ModelConfig, get_preset
from ..data.shards import load_meta
from ..errors import ConfigError, ModelDirError
from ..model import build_model
from ..modeldir import CONFIG_FILE, load_weights_into
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


# objective name -> builder(train config, model config, tokenizer)
OBJECTIVES: dict[str, Callable[[TrainConfig, ModelConfig, Tokenizer], Objective]] = {"clm": _clm}


def decoder_sampler(tokenizer: Tokenizer, cfg: TrainConfig) -> Callable[[torch.nn.Module], str]:
    from ..generate import GenerationConfig, generate

    def sample(model: torch.nn.Module) -> str:
        gen = GenerationConfig(max_new_tokens=min(cfg.sample_tokens, model.config.context_length - 8),
                               temperature=0.8, top_k=50, seed=cfg.seed)
        return generate(model, tokenizer, cfg.sample_prompt, gen)[0].text
    return sample


def same_tokenizer(a: Tokenizer, b: Tokenizer) -> bool:
    return a.hf.to_str() == b.hf.to_str()


def build_for_training(cfg: TrainConfig) -> tuple[torch.nn.Module, ModelConfig, Tokenizer, dict | None]:
    """The model to train: resumed from --out, started from --init-from, or fresh from the preset."""
    load_meta(cfg.data)
    tokenizer = Tokenizer.load(cfg.data)
    out = Path(cfg.out)
    resume_state = None
    if cfg.resume:
        if not (out / CONFIG_FILE).is_file():
            raise ModelDirError(f"cannot resume: {out} holds no run (no config.json); drop --resume to start one")
        config = ModelConfig.load(out / CONFIG_FILE)
        weights, resume_state, step = checkpoint.load_checkpoint(out)
        model = build_model(config)
        load_weights_into(model, weights, str(out))
        print(f"resuming {out} at step {step}")
        return model, config, tokenizer, resume_state
    if checkpoint.checkpoint_step(out) is not None:
        raise ConfigError(f"{out} already holds a trained model (step {checkpoint.checkpoint_step(out)}); "
                          f"pass --resume to continue it, or a new --out")
    if cfg.init_from:
        from ..api import load_model
        overrides = cfg.model_overrides()
        dropout = overrides.pop("dropout", None)
        model, config, base_tok = load_model(cfg.init_from, **({"dropout": dropout} if dropout is not None else {}))
        if not same_tokenizer(base_tok, tokenizer):
            raise ConfigError(f"the tokenizer of {cfg.data} differs from the one of {cfg.init_from}; prepare the data "
                              f"with `lmforge prepare ... --tokenizer {cfg.init_from}`")
        bad = {k: v for k, v in overrides.items() if getattr(config, k) != v}
        if bad:
            raise ConfigError(f"--init-from {cfg.init_from} fixes the architecture; {bad} does not match its "
                              f"config.json — drop those flags")
        return model, config, tokenizer, None
    config = get_preset(cfg.preset, vocab_size=tokenizer.vocab_size, **cfg.model_overrides())
    torch.manual_seed(cfg.seed)
    return build_model(config), config, tokenizer, None


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train according to `cfg`; returns a summary (final losses, perplexity, step, out)."""
    if cfg.objective not in OBJECTIVES:
        raise ConfigError(f"unknown objective {cfg.objective!r}; use one of {', '.join(OBJECTIVES)}")
    model, config, tokenizer, resume_state = build_for_training(cfg)
    if config.vocab_size < tokenizer.vocab_size:
        raise ConfigError(f"the model's vocab_size {config.vocab_size} is smaller than the tokenizer's "
                          f"{tokenizer.vocab_size}; the data was prepared with another tokenizer")
    check_memory_fits(config, cfg.batch_size, resolve_device(cfg.device))
    objective = OBJECTIVES[cfg.objective](cfg, config, tokenizer)
    sample_fn = decoder_sampler(tokenizer, cfg) if config.family == "decoder" else None
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*max_new_tokens.*")
        trainer = Trainer(cfg, model, objective, config, tokenizer=tokenizer, sample_fn=sample_fn)
        return trainer.fit(resume_state)
