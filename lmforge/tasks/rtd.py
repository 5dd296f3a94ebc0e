"""Replaced-token detection (task `rtd`; ELECTRA, Clark et al. 2020): encoder pretraining that
learns from every position, not only the 15% a masked LM predicts.

A small generator (a masked LM `--generator-ratio` as wide as the model; 1/4 for small models, as
in the paper) fills in masked positions by sampling from its own predictions; the model being
pretrained — the discriminator — reads the corrupted text and says, at every position, whether
the token is the original or a replacement. A sample that equals the original counts as original.
The loss is the generator's masked-LM loss + 50 x the discriminator's (the paper's lambda).
Generator and discriminator share the token (and segment, position) embeddings: the generator
reads them through a projection to its width, and predicts tokens through the same matrix.

The discriminator is the run's model: model.safetensors is a plain encoder that `lmforge
finetune --task classify` takes. The generator and the discriminator's per-token head are
attached to it as `rtd.` while training and saved beside it, in rtd_heads.safetensors (a
resumed run reads them back).

Masking follows the paper's code: 15% of the tokens are selected; 85% of those become <mask>, the
rest stay (none become a random token: the generator provides the replacements).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ModelConfig
from ..data.mlm import mask_tokens
from ..errors import ConfigError
from ..model.blocks import Block, init_weights, make_norm
from ..model.heads import ACTIVATIONS
from ..model.positions import Rotary
from ..options import between, option
from .base import unwrap
from .mlm import MaskedLMTask, MLMConfig

DISC_WEIGHT = 50.0                    # the paper's lambda: the discriminator's loss is ~50x smaller per token
HEADS_FILE = "rtd_heads.safetensors"  # the generator and the discriminator's head, beside the plain encoder


@dataclass
class RTDConfig(MLMConfig):
    generator_ratio: float = option(0.25, "replaced-token detection: width of the generator relative to the model "
                                          "(the paper: 1/4-1/2 work best; 1/4 for its small model)",
                                    check=between(0, 1, low_open=True))


def generator_config(config: ModelConfig, ratio: float) -> ModelConfig:
    """The generator's shape: the model's, `ratio` as wide (hidden size, heads, feed-forward), as deep."""
    heads = max(1, round(config.n_head * ratio))
    d_model = max(heads, round(config.d_model * ratio / heads) * heads)
    d_ff = max(1, round(config.d_ff * ratio)) if config.d_ff else None
    return dataclasses.replace(config, d_model=d_model, n_head=heads, d_ff=d_ff, n_kv_head=None, labels=[])


class Generator(nn.Module):
    """ELECTRA's generator: reads the discriminator's embeddings (projected to its width), runs its
    own narrower blocks, and predicts tokens through the shared embedding matrix."""

    def __init__(self, config: ModelConfig, ratio: float):
        super().__init__()
        g = self.config = generator_config(config, ratio)
        self.project_in = nn.Linear(config.d_model, g.d_model)
        self.rotary = Rotary(g.head_dim, g.context_length, g.rope_theta) if g.position == "rope" else None
        self.blocks = nn.ModuleList(Block(g) for _ in range(g.n_layer))
        self.norm = make_norm(g) if g.norm_position == "pre" else nn.Identity()
        self.act = ACTIVATIONS[g.mlp]
        self.dense, self.head_norm = nn.Linear(g.d_model, g.d_model), make_norm(g)
        self.project_out = nn.Linear(g.d_model, config.d_model)
        self.bias = nn.Parameter(torch.zeros(config.padded_vocab_size))
        init_weights(self, g)

    def forward(self, emb: torch.Tensor, select: torch.Tensor, tok_emb: torch.Tensor) -> torch.Tensor:
        """emb (B, T, d): the discriminator's input embeddings of the masked text; select (B, T):
        the masked positions -> logits (N, padded vocab) there."""
        h = self.project_in(emb)                                            # (B, T, d_gen)
        rope = self.rotary(torch.arange(emb.shape[1], device=emb.device)) if self.rotary is not None else None
        for block in self.blocks:
            h = block(h, rope=rope)
        h = self.norm(h)[select]                                            # (N, d_gen)
        h = self.project_out(self.head_norm(self.act(self.dense(h))))      # (N, d)
        return h @ tok_emb.t() + self.bias


class RTDHeads(nn.Module):
    """What RTD trains beside the encoder: the generator, and the discriminator's per-token head
    (dense -> activation -> one logit: replaced or not)."""

    def __init__(self, config: ModelConfig, ratio: float):
        super().__init__()
        self.generator = Generator(config, ratio)
        self.act = ACTIVATIONS[config.mlp]
        self.dense, self.out = nn.Linear(config.d_model, config.d_model), nn.Linear(config.d_model, 1)
        init_weights(self.dense, config)
        init_weights(self.out, config)

    def discriminate(self, h: torch.Tensor) -> torch.Tensor:
        """Hidden states (B, T, d) -> replaced-token logits (B, T)."""
        return self.out(self.act(self.dense(h))).squeeze(-1)


def corrupt(ids: torch.Tensor, selected: torch.Tensor, samples: torch.Tensor) -> torch.Tensor:
    """The discriminator's input: `ids` (B, T) with the generator's `samples` (N,) at the `selected` positions."""
    out = ids.clone()
    out[selected] = samples
    return out


def replaced_labels(ids: torch.Tensor, corrupted: torch.Tensor) -> torch.Tensor:
    """1.0 where the token was replaced, 0.0 where it is the original — also where the generator
    sampled the original token back (the paper: such a token is not "replaced")."""
    return (corrupted != ids).float()


def rtd_loss(gen_logits: torch.Tensor, targets: torch.Tensor, disc_logits: torch.Tensor,
             replaced: torch.Tensor, weight: float = DISC_WEIGHT) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(total, generator, discriminator) losses: the generator's cross-entropy over the masked
    positions (N, V) vs targets (N,), plus `weight` x the discriminator's binary cross-entropy
    averaged over every position (B, T)."""
    gen = F.cross_entropy(gen_logits.float(), targets)
    disc = F.binary_cross_entropy_with_logits(disc_logits.float(), replaced)
    return gen + weight * disc, gen, disc


class ReplacedTokenTask(MaskedLMTask):
    name = "rtd"
    reports_perplexity = False          # the loss is generator + 50 x discriminator, not one cross-entropy

    def __init__(self, data_dir, config: ModelConfig, tokenizer, options: RTDConfig, resume_from: Path | None):
        super().__init__(data_dir, config.context_length, tokenizer, options)
        self.config, self.resume_from = config, resume_from

    def frozen(self, config) -> tuple[str, ...]:
        return ("pooler.", "classifier.", "mlm_head.")    # the discriminator's MLM head is not used (its decoder,
        #                                                  tied to the embedding, trains through it)

    def attach(self, model: nn.Module) -> None:
        """Put the generator and the discriminator's head on the model (as `rtd`), from the resumed
        run's rtd_heads.safetensors when there is one."""
        model.rtd = RTDHeads(model.config, self.options.generator_ratio)
        if self.resume_from is not None and (self.resume_from / HEADS_FILE).is_file():
            from ..modeldir import read_weights
            tensors, _ = read_weights(self.resume_from / HEADS_FILE)
            model.rtd.load_state_dict({k.removeprefix("rtd."): v for k, v in tensors.items()})

    def saved_names(self, names: set[str]) -> set[str]:
        """What model.safetensors keeps: the plain encoder (the `rtd.` modules go to HEADS_FILE)."""
        return {n for n in names if not n.startswith("rtd.")}

    def save_extras(self, model, out_dir: Path) -> None:
        from ..modeldir import save_tensors
        tensors = {f"rtd.{k}": v.detach().to("cpu").contiguous() for k, v in unwrap(model).rtd.state_dict().items()}
        save_tensors(tensors, Path(out_dir) / HEADS_FILE, {})

    def mask(self, rows: torch.Tensor, gen: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        return mask_tokens(rows, mask_id=self.mask_id, vocab_size=self.vocab_size, special_ids=self.special,
                           mask_prob=self.options.mask_prob, generator=gen, mask_share=0.85, random_share=0.0)

    def loss(self, model, batch, gen: torch.Generator | None = None):
        x, labels = batch["x"], batch["labels"]
        selected = labels != -100
        ids = torch.where(selected, labels, x)                                 # the original text
        disc, heads = unwrap(model), model.rtd
        emb, _ = disc.transformer.embed(x, torch.arange(x.shape[1], device=x.device))
        gen_logits = heads.generator(emb, selected, disc.transformer.tok_emb.weight)[:, : self.vocab_size]
        with torch.no_grad():                                                  # sampling is not differentiated
            probs = gen_logits.float().softmax(-1)
            samples = torch.multinomial(probs, 1, generator=gen).squeeze(1)
        corrupted = corrupt(ids, selected, samples)
        disc_logits = heads.discriminate(model(corrupted, head="hidden"))
        total, _, _ = rtd_loss(gen_logits, labels[selected], disc_logits, replaced_labels(ids, corrupted))
        return total

    def eval_loss(self, model, batch):
        seed = int(batch["x"].sum()) * 7919 + batch["x"].shape[0]             # the same samples at every evaluation
        return self.loss(model, batch, torch.Generator(batch["x"].device).manual_seed(seed))

    def constant_loss(self) -> float:
        # a generator at the token frequencies; a discriminator that says "original" with the replaced share's odds
        p = self.options.mask_prob * 0.85
        return super().constant_loss() + DISC_WEIGHT * -(p * math.log(p) + (1 - p) * math.log(1 - p))


def build(cfg, config: ModelConfig, tokenizer) -> ReplacedTokenTask:
    if config.family != "encoder":
        raise ConfigError(f"task rtd pretrains an encoder, but this model is a {config.family}; pick an encoder "
                          f"preset (bert-tiny, bert-mini, bert-base)")
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise ConfigError("task rtd runs in one process for now (its generator is called outside the model's "
                          "forward, which DDP does not see); run it without torchrun")
    return ReplacedTokenTask(cfg.data, config, tokenizer, cfg.options_for(RTDConfig),
                             Path(cfg.out) if cfg.resume else None)
