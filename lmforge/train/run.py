"""`lmforge train`: build (or resume, or fine-tune) a model and run the trainer with the chosen
objective.

clm and mlm read prepared shards (`--data` is a directory from `lmforge prepare`); classify and
seq2seq read a table (`--data` is a CSV / TSV / JSONL file). Every run resolves, in order:

1. the tokenizer: the data directory's (shards), else the run's own (--resume), the base
   model's (--init-from), or one the objective trains on the table (from scratch);
2. the model config: the run's (--resume), the base model's (--init-from), or the preset;
3. the objective, which reads the data and may fix config fields (class labels, vocabulary
   sizes: `model_changes`);
4. the model: built from that config, weights from the checkpoint or the base model (a new
   classification head starts from its initialisation).
"""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from ..config import ModelConfig, get_preset
from ..data.shards import load_meta
from ..errors import ConfigError, ModelDirError
from ..model import build_model
from ..modeldir import CONFIG_FILE, WEIGHTS_FILE, check_model_dir, load_weights_into, read_weights
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


def _mlm(cfg: TrainConfig, config: ModelConfig, tokenizer: Tokenizer) -> Objective:
    from ..data.mlm import MaskedLMObjective, MLMOptions
    if config.family != "encoder":
        raise ConfigError(f"objective mlm needs an encoder model, but this one is a {config.family}; pick an "
                          f"encoder preset (bert-tiny, bert-mini, bert-base)")
    return MaskedLMObjective(cfg.data, config.context_length, tokenizer, _options(cfg, MLMOptions))


def _classify(cfg: TrainConfig, config: ModelConfig, tokenizer: Tokenizer | None) -> Objective:
    from ..data.classify import ClassificationObjective, ClassifyOptions
    return ClassificationObjective(cfg.data, config, tokenizer, _options(cfg, ClassifyOptions))


def _seq2seq(cfg: TrainConfig, config: ModelConfig, tokenizer: Tokenizer | None) -> Objective:
    from ..data.pairs import Seq2SeqObjective, Seq2SeqOptions
    tokenizer_dir = cfg.out if cfg.resume else cfg.init_from
    return Seq2SeqObjective(cfg.data, config, tokenizer, _options(cfg, Seq2SeqOptions), tokenizer_dir)


# objective name -> builder(train config, model config, tokenizer); table objectives get tokenizer=None
# when training from scratch and train their own
OBJECTIVES: dict[str, Callable[[TrainConfig, ModelConfig, Tokenizer], Objective]] = {
    "clm": _clm, "mlm": _mlm, "classify": _classify, "seq2seq": _seq2seq}
TABLE_OBJECTIVES = ("classify", "seq2seq")     # --data is a CSV / TSV / JSONL file, not prepared shards


def task_options() -> dict[str, type]:
    """Objective name -> the dataclass of its own options (their fields are CLI flags too)."""
    from ..data.classify import ClassifyOptions
    from ..data.mlm import MLMOptions
    from ..data.pairs import Seq2SeqOptions
    return {"mlm": MLMOptions, "classify": ClassifyOptions, "seq2seq": Seq2SeqOptions}


def _options(cfg: TrainConfig, cls: type) -> Any:
    if cfg.task_options is None:
        return cls()
    if not isinstance(cfg.task_options, cls):
        raise ConfigError(f"objective {cfg.objective} takes {cls.__name__} as task_options, not "
                          f"{type(cfg.task_options).__name__}")
    return cfg.task_options


def decoder_sampler(tokenizer: Tokenizer, cfg: TrainConfig) -> Callable[[torch.nn.Module], str]:
    from ..generate import GenerationConfig, generate

    def sample(model: torch.nn.Module) -> str:
        gen = GenerationConfig(max_new_tokens=min(cfg.sample_tokens, model.config.context_length - 8),
                               temperature=0.8, top_k=50, seed=cfg.seed)
        return generate(model, tokenizer, cfg.sample_prompt, gen)[0].text
    return sample


def same_tokenizer(a: Tokenizer, b: Tokenizer) -> bool:
    return a.hf.to_str() == b.hf.to_str()


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


def build_for_training(cfg: TrainConfig) -> tuple[torch.nn.Module, ModelConfig, Tokenizer, dict | None, Objective]:
    """The model to train (resumed from --out, started from --init-from, or fresh from the
    preset), its config and tokenizer, the train state when resuming, and the objective."""
    table = cfg.objective in TABLE_OBJECTIVES
    tokenizer: Tokenizer | None = None
    if not table:
        load_meta(cfg.data)
        tokenizer = Tokenizer.load(cfg.data)
    out = Path(cfg.out)
    weights, resume_state, source = None, None, ""
    if cfg.resume:
        if not (out / CONFIG_FILE).is_file():
            raise ModelDirError(f"cannot resume: {out} holds no run (no config.json); drop --resume to start one")
        config = ModelConfig.load(out / CONFIG_FILE)
        weights, resume_state, step = checkpoint.load_checkpoint(out)
        tokenizer = tokenizer or Tokenizer.load(out)
        source = str(out)
        print(f"resuming {out} at step {step}")
    elif checkpoint.checkpoint_step(out) is not None:
        raise ConfigError(f"{out} already holds a trained model (step {checkpoint.checkpoint_step(out)}); "
                          f"pass --resume to continue it, or a new --out")
    elif cfg.init_from:
        base = check_model_dir(Path(cfg.init_from), (CONFIG_FILE, WEIGHTS_FILE))
        config = ModelConfig.load(base / CONFIG_FILE)
        overrides = cfg.model_overrides()
        if "dropout" in overrides:
            config = dataclasses.replace(config, dropout=overrides.pop("dropout"))
        base_tok = Tokenizer.load(base)
        if tokenizer is not None and not same_tokenizer(base_tok, tokenizer):
            raise ConfigError(f"the tokenizer of {cfg.data} differs from the one of {cfg.init_from}; prepare the data "
                              f"with `lmforge prepare ... --tokenizer {cfg.init_from}`")
        tokenizer = base_tok
        bad = {k: v for k, v in overrides.items() if getattr(config, k) != v}
        if bad:
            raise ConfigError(f"--init-from {cfg.init_from} fixes the architecture; {bad} does not match its "
                              f"config.json — drop those flags")
        weights, _ = read_weights(base / WEIGHTS_FILE)
        source = str(base / WEIGHTS_FILE)
    else:
        vocab = {"vocab_size": tokenizer.vocab_size} if tokenizer is not None else {}
        config = get_preset(cfg.preset, **vocab, **cfg.model_overrides())
    objective = OBJECTIVES[cfg.objective](cfg, config, tokenizer)
    tokenizer = objective.tokenizer or tokenizer
    changes = {k: v for k, v in objective.model_changes().items() if getattr(config, k) != v}
    if changes and cfg.resume:
        raise ConfigError(f"the data given to resume {out} changes the model's {', '.join(sorted(changes))}; resume "
                          f"with the same --data and task options as the run started with")
    config = dataclasses.replace(config, **changes)
    torch.manual_seed(cfg.seed)
    model = build_model(config)
    if weights is not None:
        new_head = ("classifier.",) if "labels" in changes else ()
        weights = {k: v for k, v in weights.items() if not (new_head and k.startswith(new_head))}
        load_weights_into(model, weights, source, optional=new_head)
    return model, config, tokenizer, resume_state, objective


def train(cfg: TrainConfig) -> dict[str, Any]:
    """Train according to `cfg`; returns a summary (final losses, perplexity or task metrics,
    step, out), plus the objective's final test report."""
    if cfg.objective not in OBJECTIVES:
        raise ConfigError(f"unknown objective {cfg.objective!r}; use one of {', '.join(OBJECTIVES)}")
    model, config, tokenizer, resume_state, objective = build_for_training(cfg)
    if config.vocab_size < tokenizer.vocab_size:
        raise ConfigError(f"the model's vocab_size {config.vocab_size} is smaller than the tokenizer's "
                          f"{tokenizer.vocab_size}; the data was prepared with another tokenizer")
    check_memory_fits(config, cfg.batch_size, resolve_device(cfg.device))
    freeze(model, objective.frozen(config))
    sample_fn = objective.sampler()
    if sample_fn is None and config.family == "decoder" and not config.labels:
        sample_fn = decoder_sampler(tokenizer, cfg)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*max_new_tokens.*")
        trainer = Trainer(cfg, model, objective, config, tokenizer=tokenizer, sample_fn=sample_fn,
                          extra_files=objective.extra_files)
        summary = trainer.fit(resume_state)
        if not summary.get("stopped") and trainer.dist.is_main:
            summary.update(objective.report(trainer.model, Path(cfg.out), trainer.device, trainer.autocast))
    return summary
