"""The verbs that turn one model directory into another: import (from Hugging Face or GGUF),
export (to them), quantize and merge-lora; card, the model card that export carries along; and
presets, the sizes to start a model from."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..card import CardConfig
from ..errors import LmforgeError
from ..options import from_args, option, validate
from ..quantize import QuantizeConfig
from .core import options_of, verb


@dataclass
class MergeLoraCommandConfig:
    adapter_dir: str = option(None, "model directory of a LoRA run (holds adapter.safetensors)", positional=True)
    out_dir: str = option(None, "where to write the base model with the adapters merged in", positional=True)
    base: str | None = option(None, "the base model directory, if it moved since training")
    overwrite: bool = option(False, "replace a model already in OUT_DIR (never the adapter or base directory)")

    def __post_init__(self) -> None:
        validate(self)


@verb("merge-lora", "merge a LoRA run's adapters into its base model: a plain model directory for export")
@options_of(MergeLoraCommandConfig)
def _merge_lora(ns):
    from ..adapt.runs import merge_adapter
    args = from_args(MergeLoraCommandConfig, ns)
    print(f"wrote {merge_adapter(args.adapter_dir, args.out_dir, args.base, overwrite=args.overwrite)}")
    return 0


@verb("quantize", "int8 / int4 weight quantization of a model directory (with an optional size, speed and "
                  "perplexity report)")
@options_of(QuantizeConfig)
def _quantize(ns):
    from ..quantize import format_report, quantize
    result = quantize(from_args(QuantizeConfig, ns))
    q = result["quantization"]
    print(f"wrote {result['out']}: {len(q['modules'])} Linear layers in int{q['bits']}"
          + (f" (groups of {q['group_size']})" if q["group_size"] else ""))
    if result["report"]:
        print(format_report(result["report"]))
    return 0


@verb("card", "write or refresh a model directory's model card (README.md in Hugging Face's layout: details, data, "
              "training, evaluation, audits); your own text outside lmforge's markers is kept")
@options_of(CardConfig)
def _card(ns):
    from ..card import card
    print(f"wrote {card(from_args(CardConfig, ns))}")
    return 0


@verb("presets", "list the model presets with their sizes")
def _presets(ns):
    from ..config import PRESETS
    from ..model import num_params
    print(f"{'preset':<14}{'family':<9}{'params':>10}  layers x width, heads/kv, context, positions, mlp")
    for name, c in sorted(PRESETS.items()):
        print(f"{name:<14}{c.family:<9}{num_params(c) / 1e6:>9.1f}M  {c.n_layer} x {c.d_model}, "
              f"{c.n_head}/{c.kv_heads}, {c.context_length}, {c.position}, {c.mlp}")
    return 0


@dataclass
class ImportCommandConfig:
    hf_dir: str = option(None, "Hugging Face model directory (config.json, model.safetensors or its sharded index, "
                               "tokenizer.json), or a .gguf file (llama or gpt2; F32 / F16 / BF16 / Q8_0 / Q4_0 / "
                               "Q4_K tensors are dequantized to float32)", positional=True)
    out_dir: str = option(None, "lmforge model directory to write", positional=True)
    overwrite: bool = option(False, "replace what OUT_DIR holds, as a whole (never an input directory)")
    progress: bool = option(True, "show a progress bar")

    def __post_init__(self) -> None:
        validate(self)


@dataclass
class ExportCommandConfig:
    model_dir: str = option(None, "lmforge model directory", positional=True)
    out_dir: str = option(None, "directory to write (hf), or the .gguf file to write (gguf)", positional=True)
    format: str = option("hf", "hf: a directory transformers loads with from_pretrained; gguf: one file that "
                               "llama.cpp, Ollama and LM Studio run", choices=["hf", "gguf"])
    outtype: str = option("auto", "gguf tensor type of the matrices: auto (as stored), f32, f16, bf16, q8_0; norms and "
                                  "biases stay f32", choices=["auto", "f32", "f16", "bf16", "q8_0"])
    overwrite: bool = option(False, "replace what OUT_DIR holds, as a whole (never an input directory)")
    progress: bool = option(True, "show a progress bar")

    def __post_init__(self) -> None:
        validate(self)


@verb("import", "convert a Hugging Face GPT-2, Llama or BERT checkpoint, or a Llama / GPT-2 GGUF file, into an "
                "lmforge model directory")
@options_of(ImportCommandConfig)
def _import(ns):
    from ..interop import import_gguf, import_hf, is_gguf_file
    args = from_args(ImportCommandConfig, ns)
    convert = import_gguf if is_gguf_file(args.hf_dir) else import_hf
    done = convert(args.hf_dir, args.out_dir, overwrite=args.overwrite, progress=args.progress)
    print(f"imported {args.hf_dir} ({done['architecture']}, {done['params'] / 1e6:.2f}M parameters, "
          f"{done['dtype']}) into {done['out']}")
    return 0


@verb("export", "write an lmforge model directory in Hugging Face format (GPT-2, Llama or BERT) or as a GGUF file "
                "(Llama or GPT-2 kind)")
@options_of(ExportCommandConfig)
def _export(ns):
    from ..interop import export_gguf, export_hf
    args = from_args(ExportCommandConfig, ns)
    if args.format == "gguf":
        done = export_gguf(args.model_dir, args.out_dir, args.outtype, overwrite=args.overwrite,
                           progress=args.progress)
        print(f"exported {args.model_dir} as {done['architecture']} ({done['params'] / 1e6:.2f}M parameters, "
              f"{done['outtype']}, {done['bytes'] / 1e6:.1f} MB) into {done['out']}; run it with "
              f"`llama-cli -m {done['out']}` or an Ollama Modelfile `FROM ./{os.path.basename(done['out'])}`")
        return 0
    if args.outtype != "auto":
        raise LmforgeError("--outtype is for --format gguf; the hf format keeps the stored dtype")
    done = export_hf(args.model_dir, args.out_dir, overwrite=args.overwrite, progress=args.progress)
    print(f"exported {args.model_dir} as {done['architecture']} ({done['params'] / 1e6:.2f}M parameters, "
          f"{done['dtype']}) into {done['out']}; load it with transformers' from_pretrained")
    return 0
