"""Reading and writing GGUF files with the `gguf` package (llama.cpp's own reader and writer).

    lmforge export MODEL_DIR OUT.gguf --format gguf [--outtype q8_0]    export_gguf(model_dir, out)
    lmforge import FILE.gguf OUT_DIR                                    import_gguf(file, out_dir)
    lmforge.load("model.gguf")                                          read_gguf: nothing written

Reading memory-maps the file and dequantizes one tensor at a time into the model built on the
meta device, so a checkpoint is never held twice. Writing goes to a temporary file renamed over
OUT.gguf when complete; the model card's license, tags and languages go in as general.* keys (as
llama.cpp's converter takes them from a Hugging Face README.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from ...card import card_metadata
from ...config import ModelConfig
from ...errors import ConfigError, ModelDirError
from ...model import build_model
from ...model.weights import load_weights_into
from ...modeldir import CONFIG_FILE, WEIGHTS_FILE, atomic_write, check_model_dir, read_weights
from ...tokenizers import Tokenizer
from ..keys import Architecture, fitting_architecture, own_tensors, to_hf, to_lmforge
from .quants import BLOCKS, OUTTYPES, SUPPORTED, dequantize, export_type
from .tables import ARCHITECTURES
from .vocab import tokenizer_from_metadata, tokenizer_metadata

SUFFIX = ".gguf"


def is_gguf_file(path: str | Path) -> bool:
    """Whether `path` names a GGUF file: it ends in .gguf (so a missing one is reported as such),
    or it is a file starting with GGUF's magic bytes."""
    path = Path(path)
    if path.suffix == SUFFIX:
        return True
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(4) == b"GGUF"


# ------------------------------------------------------------------------------ reading
def open_gguf(path: Path):
    from gguf import GGUFReader
    if not path.is_file():
        raise ModelDirError(f"{path} does not exist; give a .gguf file")
    try:
        return GGUFReader(path, "r")                          # memory-mapped: nothing is read yet
    except Exception as e:                                    # gguf raises ValueError / struct errors on bad bytes
        raise ModelDirError(f"{path} is not a readable GGUF file ({e}); download it again") from e


def metadata(reader) -> dict[str, Any]:
    """Every metadata key of the file with its value (strings decoded, arrays as lists)."""
    out = {}
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):                          # the header's own fields
            continue
        value = field.contents()
        out[key] = value.item() if isinstance(value, np.generic) else value
    return out


def supported_architectures() -> str:
    return ", ".join(ARCHITECTURES)


def read_gguf(path: str | Path, progress: bool = False
              ) -> tuple[ModelConfig, dict[str, torch.Tensor], Tokenizer, Architecture]:
    """(config, float32 weights under lmforge's names, tokenizer, architecture) of a GGUF file."""
    path = Path(path)
    reader = open_gguf(path)
    meta = metadata(reader)
    name = meta.get("general.architecture")
    if name not in ARCHITECTURES:
        raise ConfigError(f"{path}: general.architecture={name!r} cannot be imported; lmforge supports "
                          f"{supported_architectures()}")
    arch = ARCHITECTURES[name]
    tensors = {t.name: t for t in reader.tensors}
    bad = sorted({t.tensor_type.name for t in tensors.values()} - set(SUPPORTED))
    if bad:
        raise ConfigError(f"{path} holds tensors of type {', '.join(bad)}, which lmforge cannot dequantize; "
                          f"it reads {', '.join(SUPPORTED)} (re-quantize with llama-quantize, e.g. to Q8_0)")
    tokenizer = tokenizer_from_metadata(meta, str(path))
    if "token_embd.weight" not in tensors:
        raise ModelDirError(f"{path} has no token_embd.weight; it is not a complete {name} model")
    embd, out = tensors["token_embd.weight"], tensors.get("output.weight")
    derived = {"vocab_size": meta.get(f"{name}.vocab_size", len(meta["tokenizer.ggml.tokens"])),
               "has_bias": "blk.0.attn_q.bias" in tensors,
               "tied": out is None or (out.tensor_type == embd.tensor_type and np.array_equal(out.data, embd.data))}
    try:
        config = arch.config_from_hf({**meta, **derived})
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from e
    with torch.device("meta"):
        model = build_model(config)

    def shape_of(tensor_name: str) -> tuple[int, ...]:
        return tuple(int(n) for n in reversed(tensors[tensor_name].shape))   # ggml lists the fastest dim first

    def read(tensor_name: str) -> torch.Tensor:
        t = tensors[tensor_name]
        return dequantize(t.data, t.tensor_type.name, shape_of(tensor_name))

    weights = to_lmforge(arch, config, model, set(tensors), shape_of, read, str(path), progress)
    return config, weights, tokenizer, arch


def import_gguf(file: str | Path, out_dir: str | Path, overwrite: bool = False, progress: bool = False
                ) -> dict[str, Any]:
    """Convert a GGUF file (llama or gpt2 architecture) into an lmforge model directory (built in a
    temporary sibling and renamed into place: the output rule of `lmforge.safety`)."""
    from ...safety import check_output
    from ..hf import write_imported
    inputs = [("the GGUF file", file)]
    check_output(out_dir, inputs=inputs, overwrite=overwrite, out_name="OUT_DIR")
    config, weights, tokenizer, arch = read_gguf(file, progress)
    write_imported(out_dir, inputs, overwrite, config, weights, tokenizer, f"gguf:{arch.model_type}")
    return {"out": str(out_dir), "architecture": arch.name, "dtype": "float32",
            "params": sum(t.numel() for t in weights.values())}


# ------------------------------------------------------------------------------ writing
def architecture_for(config: ModelConfig) -> tuple[Architecture, dict[str, Any]]:
    """The GGUF architecture that can hold `config`, with its metadata fields."""
    return fitting_architecture(ARCHITECTURES, config, "GGUF")


FILE_TYPES = {"F32": 0, "F16": 1, "Q8_0": 7, "BF16": 32}     # general.file_type: llama.cpp's LlamaFileType


def write_gguf(config: ModelConfig, weights: dict[str, torch.Tensor], tokenizer: Tokenizer, out: str | Path,
               outtype: str = "auto", overwrite: bool = False, name: str = "lmforge model",
               source: str = "the model", progress: bool = False, card: dict[str, Any] | None = None
               ) -> dict[str, Any]:
    """Write lmforge `weights` (consumed) and `tokenizer` as one GGUF file llama.cpp runs; `card`: the
    model card's front matter, whose license, tags and languages become general.* keys."""
    import gguf
    out = Path(out)
    if outtype not in OUTTYPES:
        raise ConfigError(f"outtype={outtype!r} is unknown; use one of {', '.join(OUTTYPES)}")
    if out.suffix != SUFFIX:
        raise ConfigError(f"{out} should end in {SUFFIX}: `--format gguf` writes one file, e.g. {out}{SUFFIX}")
    if out.exists() and not overwrite:
        raise ModelDirError(f"{out} already exists; pass --overwrite or another OUT.gguf")
    if config.quantization:
        raise ConfigError(f"{source} is quantized by lmforge (quantization={config.quantization}); export the "
                          f"model from before `lmforge quantize` and pick --outtype q8_0 instead")
    arch, arch_meta = architecture_for(config)
    with torch.device("meta"):
        model = build_model(config)
    own = own_tensors(model)
    load_weights_into(model, weights, source)
    del model
    if outtype == "auto":
        stored = next(iter(weights.values())).dtype
        outtype = {torch.float16: "f16", torch.bfloat16: "bf16"}.get(stored, "f32")
    tied_head = arch.name == "gpt2" and "lm_head.weight" not in own
    tensors = to_hf(arch, config, own, weights, progress)
    if tied_head:                                  # llama.cpp's GPT-2 reads its head from output.weight
        tensors["output.weight"] = tensors["token_embd.weight"]
    meta = {**arch_meta, **tokenizer_metadata(tokenizer, config.vocab_size), **card_keys(card or {})}

    def write(tmp: str) -> None:
        writer = gguf.GGUFWriter(tmp, arch.model_type)
        writer.add_name(name)
        writer.add_file_type(FILE_TYPES[outtype.upper()])
        if outtype == "q8_0":
            writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        for key, value in meta.items():
            add_value(writer, key, value)
        for tensor_name, t in tensors.items():
            kind = export_type(outtype, tensor_name, tuple(t.shape))
            data = t.detach().float().numpy()
            if kind == "F32":
                writer.add_tensor(tensor_name, data)
            elif kind == "F16":
                writer.add_tensor(tensor_name, data.astype(np.float16))
            else:
                qtype = gguf.GGMLQuantizationType[kind]
                writer.add_tensor(tensor_name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file(progress=progress)
        writer.close()

    atomic_write(out, write)
    return {"out": str(out), "architecture": arch.name, "outtype": outtype,
            "params": sum(t.numel() for n, t in tensors.items() if not (tied_head and n == "output.weight")),
            "bytes": out.stat().st_size}


def card_keys(front: dict[str, Any]) -> dict[str, Any]:
    """The GGUF general.* keys that llama.cpp's converter fills from a model card's front matter."""
    def strings(value: Any) -> list[str]:
        return [value] if isinstance(value, str) else [v for v in value if isinstance(v, str)] \
            if isinstance(value, list) else []
    keys = {"general.license": front.get("license") if isinstance(front.get("license"), str) else None,
            "general.tags": strings(front.get("tags")), "general.languages": strings(front.get("language"))}
    return {k: v for k, v in keys.items() if v}


def add_value(writer, key: str, value: Any) -> None:
    """One metadata key, typed as llama.cpp reads it (ints uint32, floats float32)."""
    from gguf import GGUFValueType as V
    if isinstance(value, bool):
        writer.add_bool(key, value)
    elif isinstance(value, int):
        writer.add_uint32(key, value)
    elif isinstance(value, float):
        writer.add_float32(key, value)
    elif isinstance(value, str):
        writer.add_string(key, value)
    else:
        assert isinstance(value, list) and value, key
        sub = V.INT32 if isinstance(value[0], int) else V.FLOAT32 if isinstance(value[0], float) else V.STRING
        writer.add_key_value(key, value, V.ARRAY, sub_type=sub)


def export_gguf(model_dir: str | Path, out: str | Path, outtype: str = "auto", overwrite: bool = False,
                progress: bool = False) -> dict[str, Any]:
    """Write an lmforge model directory as one GGUF file (llama.cpp, Ollama, LM Studio)."""
    path = check_model_dir(Path(model_dir))
    weights, _ = read_weights(path / WEIGHTS_FILE)
    config, tokenizer = ModelConfig.load(path / CONFIG_FILE), Tokenizer.load(path)
    return write_gguf(config, weights, tokenizer, out, outtype, overwrite, name=path.resolve().name,
                      source=str(path / WEIGHTS_FILE), progress=progress, card=card_metadata(path, config, tokenizer))


assert set(FILE_TYPES) >= {t.upper() for t in OUTTYPES if t != "auto"} and set(BLOCKS) >= set(FILE_TYPES)
