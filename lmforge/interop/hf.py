"""Hugging Face model directories <-> lmforge model directories (GPT-2, Llama, BERT).

    lmforge import HF_DIR OUT_DIR                    import_hf(hf_dir, out_dir)
    lmforge export MODEL_DIR OUT_DIR --format hf     export_hf(model_dir, out_dir)
    lmforge.load(HF_DIR)                             read_hf: converted in memory, nothing written

An HF directory is config.json (its "model_type" picks the `Architecture`), model.safetensors
or the shards listed in model.safetensors.index.json, and tokenizer.json (+ tokenizer_config.json);
an exported one also carries the model card, README.md (`lmforge.card`).
Weights are read one tensor at a time into a model built on the meta device, so a checkpoint
is never held twice in memory. A new architecture is one more module like `gpt2.py` and one
more entry in `ARCHITECTURES`.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch

from ..card import CARD_FILE, current_card
from ..config import ModelConfig
from ..errors import ConfigError, ModelDirError
from ..model import build_model
from ..model.weights import load_weights_into
from ..modeldir import (CONFIG_FILE, WEIGHTS_FILE, check_model_dir, read_weights, save_tensors,
                        write_json)
from ..safety import check_output, confined, staged_output
from ..tokenizers import Tokenizer
from ..tokenizers.base import TOKENIZER_CONFIG_FILE, TOKENIZER_FILE
from .bert import BERT
from .gpt2 import GPT2
from .keys import Architecture, fitting_architecture, own_tensors, to_hf, to_lmforge
from .llama import LLAMA

ARCHITECTURES: dict[str, Architecture] = {arch.model_type: arch for arch in (GPT2, LLAMA, BERT)}
INDEX_FILE = "model.safetensors.index.json"


def supported() -> str:
    return ", ".join(f"{a.model_type} ({' / '.join(a.hf_classes)})" for a in ARCHITECTURES.values())


# ------------------------------------------------------------------------------ reading
def read_hf_config(path: Path) -> dict[str, Any] | None:
    """config.json of `path` when it is a Hugging Face directory (has "model_type"), else None."""
    try:
        cfg = json.loads((Path(path) / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return None
    return cfg if isinstance(cfg, dict) and "model_type" in cfg and "family" not in cfg else None


def is_hf_dir(path: str | Path) -> bool:
    return read_hf_config(Path(path)) is not None


def architecture_of(hf: dict[str, Any], source: Path) -> Architecture:
    model_type = hf.get("model_type")
    if model_type not in ARCHITECTURES:
        raise ConfigError(f"{source}: model_type={model_type!r} cannot be imported; lmforge supports {supported()}")
    arch = ARCHITECTURES[model_type]
    other = [c for c in hf.get("architectures") or [] if c not in arch.hf_classes]
    if other:
        raise ConfigError(f"{source}: architectures={other} cannot be imported (its head has no lmforge "
                          f"counterpart); lmforge supports {supported()}")
    return arch


class Checkpoint:
    """The tensors of an HF directory — model.safetensors, or the shards named by
    model.safetensors.index.json — opened lazily and read one tensor at a time."""

    def __init__(self, directory: Path, base_prefix: str):
        self._handles: dict[Path, Any] = {}
        index = directory / INDEX_FILE
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]            # name -> shard file name
            except (ValueError, KeyError, TypeError) as e:
                raise ModelDirError(f"{index} is not a valid safetensors index ({e}); download it again") from e
            if not isinstance(weight_map, dict):
                raise ModelDirError(f"{index} is not a valid safetensors index (weight_map is not an object); "
                                    f"download it again")
            stored = {name: confined(directory, shard, "the shard") for name, shard in weight_map.items()}
        elif (directory / WEIGHTS_FILE).is_file():
            stored = {name: directory / WEIGHTS_FILE for name in self._open(directory / WEIGHTS_FILE).keys()}
        else:
            pickled = [p.name for p in directory.glob("*.bin")] + [p.name for p in directory.glob("*.pt")]
            hint = (f"it has {pickled[0]}, a pickle, which lmforge never loads; convert it once with transformers: "
                    f"`AutoModelForCausalLM.from_pretrained('{directory}').save_pretrained('{directory}')` "
                    f"writes safetensors" if pickled else "download the weights into it")
            raise ModelDirError(f"{directory} has neither {WEIGHTS_FILE} nor {INDEX_FILE}; {hint}")
        missing = sorted({p.name for p in stored.values() if not p.is_file()})
        if missing:
            raise ModelDirError(f"{index} lists shards that are not in {directory}: {missing}; download them")
        # a checkpoint of the bare model (e.g. GPT2Model) stores names without HF's base-model prefix
        bare = not any(name.startswith(base_prefix) for name in stored)
        self.files = {(base_prefix + name if bare else name): (file, name) for name, file in stored.items()}
        self.names = set(self.files)

    def _open(self, file: Path):
        from safetensors import safe_open
        if file not in self._handles:
            try:
                self._handles[file] = safe_open(str(file), framework="pt")
            except Exception as e:  # safetensors raises its own error types
                raise ModelDirError(f"{file} is not a valid safetensors file ({e}); download it again") from e
        return self._handles[file]

    def shape(self, name: str) -> tuple[int, ...]:
        file, stored = self.files[name]
        return tuple(self._open(file).get_slice(stored).get_shape())

    def read(self, name: str) -> torch.Tensor:
        file, stored = self.files[name]
        return self._open(file).get_tensor(stored)


# lmforge role -> the HF tokenizer fields that name its token, in order of preference: an encoder's
# [CLS] is lmforge's bos and its [SEP] the eos (lmforge adds them itself: HF's post-processor never runs)
ROLE_FIELDS = {"bos": ("bos_token", "cls_token"), "eos": ("eos_token", "sep_token"), "pad": ("pad_token",),
               "unk": ("unk_token",), "mask": ("mask_token",)}


def read_hf_tokenizer(path: Path, hf: dict[str, Any], decoder: bool = True) -> Tokenizer:
    """The tokenizer of an HF directory. Roles come from tokenizer_config.json (or the older
    special_tokens_map.json), [CLS] / [SEP] standing in for bos / eos, then from config.json's
    *_token_id fields. Fixed padding and truncation saved in tokenizer.json are switched off:
    lmforge pads its batches itself and never cuts a text silently. A decoder's prompts start
    with bos when they did in `transformers` (`add_bos_token`, else the post-processor's template)."""
    if not (path / TOKENIZER_FILE).is_file():
        found = [n for n in ("vocab.json", "merges.txt", "tokenizer.model", "vocab.txt") if (path / n).is_file()]
        raise ModelDirError(f"{path} has no {TOKENIZER_FILE}{f' (only {found})' if found else ''}; lmforge reads the "
                            f"fast-tokenizer file — write it with transformers: "
                            f"`AutoTokenizer.from_pretrained('{path}').save_pretrained('{path}')`")
    tokenizer = Tokenizer.load(path)
    tokenizer.hf.no_padding()
    tokenizer.hf.no_truncation()
    named = {**read_json(path / "special_tokens_map.json", {}), **read_json(path / TOKENIZER_CONFIG_FILE, {})}
    for role, fields in ROLE_FIELDS.items():
        for field in fields:
            token = named.get(field)
            token = token.get("content") if isinstance(token, dict) else token      # an AddedToken dict
            if tokenizer.special.get(role) is None and isinstance(token, str) and tokenizer.token_to_id(token) is not None:
                tokenizer.special[role] = token
    for role in ("bos", "eos", "pad", "unk"):
        token_id = hf.get(f"{role}_token_id")
        if isinstance(token_id, list):                 # several end tokens: the first is the one to write
            token_id = token_id[0] if token_id else None
        if tokenizer.special.get(role) is None and isinstance(token_id, int):
            tokenizer.special[role] = tokenizer.id_to_token(token_id)
    explicit = named.get("add_bos_token")
    if decoder and (explicit if isinstance(explicit, bool) else prepends_bos(tokenizer)):
        tokenizer.extra["add_bos_token"] = True
    template = path / "chat_template.jinja"               # where transformers 5 writes the chat template
    if template.is_file() and "chat_template" not in tokenizer.extra:
        tokenizer.extra["chat_template"] = template.read_text(encoding="utf-8")
    return tokenizer


def prepends_bos(tokenizer: Tokenizer) -> bool:
    """Whether the tokenizer.json post-processor starts every text with the bos token."""
    bos = tokenizer.bos_id
    return bos is not None and tokenizer.hf.encode("a", add_special_tokens=True).ids[:1] == [bos] \
        and tokenizer.hf.encode("a", add_special_tokens=False).ids[:1] != [bos]


def read_json(path: Path, default: Any) -> Any:
    """A JSON file's content when it is there, parses, and has the type of `default`; else `default`."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default
    return value if isinstance(value, type(default)) else default


# sentence-transformers' pooling modes (its Pooling module's config) -> lmforge `pooling`. Its "cls"
# mode is left out: it takes the raw [CLS] state, where lmforge's goes through BERT's pooler.
SENTENCE_POOLING = {"pooling_mode_mean_tokens": "mean", "pooling_mode_lasttoken": "last"}


def sentence_pooling(path: Path) -> str | None:
    """The pooling a sentence-transformers directory declares (modules.json -> its Pooling
    module's config.json), when lmforge has it; else None."""
    for module in read_json(path / "modules.json", []):
        if isinstance(module, dict) and str(module.get("type", "")).endswith(".Pooling"):
            modes = read_json(confined(path, str(module.get("path", "")) or ".", "the module path in modules.json")
                              / CONFIG_FILE, {})
            chosen = [mode for mode, on in modes.items() if mode.startswith("pooling_mode_") and on is True]
            if len(chosen) == 1 and chosen[0] in SENTENCE_POOLING:
                return SENTENCE_POOLING[chosen[0]]
    return None


def read_hf(path: str | Path, progress: bool = False
            ) -> tuple[ModelConfig, dict[str, torch.Tensor], Tokenizer, Architecture]:
    """(config, weights under lmforge's names, tokenizer, architecture) of an HF directory."""
    path = Path(path)
    hf = read_hf_config(path)
    if hf is None:
        raise ModelDirError(f"{path} is not a Hugging Face model directory (no {CONFIG_FILE} with a model_type)")
    arch = architecture_of(hf, path / CONFIG_FILE)
    checkpoint = Checkpoint(path, arch.base_prefix)
    try:
        config = arch.config_from_hf(hf)
        if arch.heads is not None:
            config = arch.heads(config, hf, checkpoint.names)
    except ConfigError as e:
        raise ConfigError(f"{path / CONFIG_FILE}: {e}") from e
    pooling = sentence_pooling(path)
    if pooling:
        config = dataclasses.replace(config, pooling=pooling)
    tokenizer = read_hf_tokenizer(path, hf, decoder=config.family == "decoder")
    with torch.device("meta"):
        model = build_model(config)
    weights = to_lmforge(arch, config, model, checkpoint.names, checkpoint.shape, checkpoint.read, str(path),
                         progress)
    return config, weights, tokenizer, arch


# ------------------------------------------------------------------------------ writing
def architecture_for(config: ModelConfig) -> tuple[Architecture, dict[str, Any]]:
    """The HF architecture that can hold `config`, with its HF config fields."""
    return fitting_architecture(ARCHITECTURES, config, "Hugging Face")


def write_hf(config: ModelConfig, weights: dict[str, torch.Tensor], tokenizer: Tokenizer, out: str | Path,
             overwrite: bool = False, source: str = "the model", progress: bool = False,
             inputs: list[tuple[str, str | Path | None]] = (), card: str | None = None) -> dict[str, Any]:
    """Write lmforge `weights` (consumed) as an HF directory that `transformers` loads, with `card`
    as its README.md when given. `out` follows the output rule of `lmforge.safety` (never one of
    `inputs`; replaced only with `overwrite`)."""
    check_output(out, inputs=inputs, overwrite=overwrite, out_name="OUT_DIR")
    arch, hf_fields = architecture_for(config)
    with torch.device("meta"):
        model = build_model(config)
    own = own_tensors(model)
    load_weights_into(model, weights, source)           # names any missing or mis-shaped tensor
    del model
    dtype = str(next(iter(weights.values())).dtype).removeprefix("torch.")
    hf_weights = to_hf(arch, config, own, weights, progress)
    hf_config = {"architectures": [arch.hf_classes[0]], "model_type": arch.model_type, **hf_fields,
                 "bos_token_id": tokenizer.bos_id, "eos_token_id": tokenizer.eos_id,
                 "pad_token_id": tokenizer.pad_id, "dtype": dtype, "use_cache": True}
    with staged_output(out, inputs=inputs, overwrite=overwrite, out_name="OUT_DIR") as tmp:
        _write_hf_files(tmp, config, hf_config, hf_weights, tokenizer)
        if card is not None:
            (tmp / CARD_FILE).write_text(card, encoding="utf-8")
    return {"out": str(out), "architecture": hf_config["architectures"][0], "dtype": dtype,
            "params": sum(t.numel() for t in hf_weights.values())}


def _write_hf_files(out: Path, config: ModelConfig, hf_config: dict[str, Any], hf_weights: dict[str, torch.Tensor],
                    tokenizer: Tokenizer) -> None:
    save_tensors(hf_weights, out / WEIGHTS_FILE)
    write_json(out / CONFIG_FILE, hf_config)
    encoder = config.family == "encoder"
    (with_cls_sep(tokenizer) if encoder else tokenizer).save(out)
    cfg_path = out / TOKENIZER_CONFIG_FILE
    tok_cfg = json.loads(cfg_path.read_text())
    tok_cfg.update({"model_max_length": config.context_length, "clean_up_tokenization_spaces": False,
                    # lmforge never turns a literal "<eos>" in text into the special token; nor will transformers
                    "split_special_tokens": True})
    if encoder:                                           # BERT's tokenizer also returns the segment ids
        tok_cfg.update({f"{field}_token": tokenizer.special[role] for field, role in (("cls", "bos"), ("sep", "eos"))
                        if tokenizer.special.get(role)})
        tok_cfg["model_input_names"] = ["input_ids", "token_type_ids", "attention_mask"]
    write_json(cfg_path, tok_cfg)


def with_cls_sep(tokenizer: Tokenizer) -> Tokenizer:
    """A copy of an encoder's tokenizer whose post-processor wraps text as lmforge's encoder
    pipelines do — bos text eos ([CLS] text [SEP]), and bos a eos b eos with segment 1 for a pair —
    so `transformers`' tokenizer(text) gives the ids lmforge feeds the model."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers.processors import TemplateProcessing
    copy = Tokenizer(HFTokenizer.from_str(tokenizer.hf.to_str()), tokenizer.kind, tokenizer.special, tokenizer.extra)
    cls, sep = tokenizer.special.get("bos"), tokenizer.special.get("eos")
    if tokenizer.bos_id is not None and tokenizer.eos_id is not None:
        copy.hf.post_processor = TemplateProcessing(single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B:1 {sep}:1",
                                                    special_tokens=[(cls, tokenizer.bos_id), (sep, tokenizer.eos_id)])
    return copy


# ------------------------------------------------------------------------------ the verbs
def write_imported(out_dir: str | Path, inputs: list, overwrite: bool, config: ModelConfig,
                   weights: dict[str, torch.Tensor], tokenizer: Tokenizer, source: str) -> None:
    """Write a converted checkpoint as an lmforge model directory, built in a temporary sibling and
    renamed into place (the output rule of `lmforge.safety`)."""
    with staged_output(out_dir, inputs=inputs, overwrite=overwrite, out_name="OUT_DIR") as out:
        config.save(out / CONFIG_FILE)
        save_tensors(weights, out / WEIGHTS_FILE, {"source": source})
        tokenizer.save(out)


def import_hf(hf_dir: str | Path, out_dir: str | Path, overwrite: bool = False, progress: bool = False
              ) -> dict[str, Any]:
    """Convert an HF directory (GPT-2, Llama, BERT) into an lmforge model directory; returns a summary."""
    hf_dir = Path(hf_dir)
    if not hf_dir.is_dir():
        raise ModelDirError(f"{hf_dir} is not a directory; give the Hugging Face model directory "
                            f"(config.json, model.safetensors, tokenizer.json)")
    inputs = [("the Hugging Face directory", hf_dir)]
    check_output(out_dir, inputs=inputs, overwrite=overwrite, out_name="OUT_DIR")
    config, weights, tokenizer, arch = read_hf(hf_dir, progress)
    write_imported(out_dir, inputs, overwrite, config, weights, tokenizer, f"hf:{arch.model_type}")
    dtype = str(next(iter(weights.values())).dtype).removeprefix("torch.")
    return {"out": str(out_dir), "architecture": arch.name, "dtype": dtype,
            "params": sum(t.numel() for t in weights.values())}


def export_hf(model_dir: str | Path, out_dir: str | Path, overwrite: bool = False, progress: bool = False
              ) -> dict[str, Any]:
    """Write an lmforge model directory as an HF directory (`AutoModelForCausalLM.from_pretrained`
    and `AutoTokenizer.from_pretrained` load it) with its model card; returns a summary."""
    path = Path(model_dir)
    if is_hf_dir(path):
        raise ModelDirError(f"{path} is already a Hugging Face model directory; `lmforge import` converts the "
                            f"other way")
    path = check_model_dir(path)
    inputs = [("the model directory", path)]
    check_output(out_dir, inputs=inputs, overwrite=overwrite, out_name="OUT_DIR")
    weights, _ = read_weights(path / WEIGHTS_FILE)
    config, tokenizer = ModelConfig.load(path / CONFIG_FILE), Tokenizer.load(path)
    return write_hf(config, weights, tokenizer, out_dir, overwrite, source=str(path / WEIGHTS_FILE), progress=progress,
                    inputs=inputs, card=current_card(path, config, tokenizer, library_name="transformers"))
