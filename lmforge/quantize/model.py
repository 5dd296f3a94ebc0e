"""Quantizing a model by swapping its Linear layers (the model code stays untouched).

`quantize_model` replaces every Linear whose weight is not shared (a tied output head keeps
the embedding's float weights) and returns the record that goes into config.json as
`quantization`; loading reads that record back (`model.quantized.swap_in_quantized`) so a quantized
directory loads, generates and evaluates with the usual verbs.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch.nn as nn

from ..errors import ConfigError, LmforgeError
from ..model import replace_module, shared_parameters
from ..model.quantized import QUANTIZED
from ..options import at_least, device_name, option, validate
REPORT_FILE = "quantize_report.json"


def quantizable_linears(model: nn.Module) -> list[str]:
    """Names of the Linear layers whose weight no other module shares."""
    shared = shared_parameters(model)
    return [n for n, m in model.named_modules() if isinstance(m, nn.Linear) and id(m.weight) not in shared]


def check_group_size_value(group_size: int) -> None:
    if group_size < 2 or group_size % 2:
        raise ConfigError(f"--group-size {group_size} must be an even number >= 2 (32, 64, 128 are usual)")


def check_group_size(model: nn.Module, names: list[str], group_size: int) -> None:
    check_group_size_value(group_size)
    for name in names:
        n_in = model.get_submodule(name).in_features
        if n_in % group_size:
            raise ConfigError(f"--group-size {group_size} does not divide the {n_in} inputs of {name}; pick a "
                              f"group size that divides every layer's input width (e.g. 32)")


def quantize_model(model: nn.Module, bits: int, group_size: int = 64) -> dict:
    """Swap the model's Linear layers for int8 / int4 ones, in place. Returns the config record."""
    if bits not in QUANTIZED:
        raise ConfigError(f"bits={bits} is not supported; use 8 (per channel) or 4 (grouped)")
    names = quantizable_linears(model)
    if not names:
        raise LmforgeError("the model has no Linear layers to quantize (it may be quantized already)")
    if bits == 4:
        check_group_size(model, names, group_size)
    for name in names:
        replace_module(model, name, QUANTIZED[bits].from_linear(model.get_submodule(name), group_size=group_size))
    return {"bits": bits, "group_size": group_size if bits == 4 else None, "modules": names}


# ------------------------------------------------------------------------------ the verb
@dataclass
class QuantizeConfig:
    model_dir: str = option(None, "model directory to quantize", positional=True)
    out_dir: str = option(None, "where to write the quantized model directory", positional=True)
    bits: int = option(8, "8: int8 per output channel; 4: int4 in groups along the input", choices=(8, 4))
    group_size: int = option(64, "int4: input columns sharing one scale and offset", check=at_least(2))
    report: bool = option(False, "compare size on disk, decode speed and perplexity with the original "
                                 "(also saved as quantize_report.json)")
    text: str | None = option(None, "text file for the report's perplexity")
    report_tokens: int = option(128, "tokens to decode when measuring speed for the report", check=at_least(1))
    device: str = option("cpu", "device for the report's measurements: cpu, cuda, auto", check=device_name)
    overwrite: bool = option(False, "replace a model already in OUT_DIR (never MODEL_DIR itself)")

    def __post_init__(self) -> None:
        validate(self)
        if self.bits == 4:
            check_group_size_value(self.group_size)


def quantize(args: QuantizeConfig) -> dict:
    """Write the quantized copy of `args.model_dir` to `args.out_dir`; with `report`, measure both.
    Returns {"out": path, "quantization": record, "report": rows or None}."""
    from ..adapt.runs import adapter_base, load_model
    from ..loading import write_model_dir
    from ..evaluate.perplexity import read_text_file
    if args.report and not args.text:
        raise LmforgeError("--report measures perplexity on a text: give it with --text FILE")
    from ..modeldir import is_adapter_dir
    from ..safety import check_output
    inputs = [("MODEL_DIR", args.model_dir), ("the report's text", args.text)]
    if is_adapter_dir(args.model_dir):
        inputs.append(("the adapters' base model", adapter_base(Path(args.model_dir))))
    check_output(args.out_dir, inputs=inputs, overwrite=args.overwrite, out_name="OUT_DIR")
    text = read_text_file(args.text) if args.report else None
    model, config, tokenizer = load_model(args.model_dir)
    if config.quantization:
        raise ConfigError(f"{args.model_dir} is already quantized (int{config.quantization['bits']}); quantize the "
                          f"original model instead")
    record = quantize_model(model, args.bits, args.group_size)
    write_model_dir(args.out_dir, model, dataclasses.replace(config, quantization=record), tokenizer,
                    overwrite=args.overwrite, inputs=inputs)
    rows = None
    if args.report:
        rows = quantization_report(args.model_dir, [args.out_dir], text, args.report_tokens, args.device)
        (Path(args.out_dir) / REPORT_FILE).write_text(json.dumps(rows, indent=2) + "\n")
    return {"out": args.out_dir, "quantization": record, "report": rows}


# ---------------------------------------------------------------------------- the report
def weights_bytes(model_dir: str | Path) -> int:
    """Bytes of weights a model directory needs (a LoRA directory: its base's plus its adapters)."""
    from ..adapt.runs import adapter_base
    from ..modeldir import ADAPTER_FILE, WEIGHTS_FILE, is_adapter_dir
    d = Path(model_dir)
    if is_adapter_dir(d):
        return weights_bytes(adapter_base(d)) + (d / ADAPTER_FILE).stat().st_size
    return (d / WEIGHTS_FILE).stat().st_size


def describe(record: dict | None) -> str:
    if not record:
        return "original"
    return f"int{record['bits']}" + (f" g{record['group_size']}" if record["group_size"] else "")


def decode_tokens_per_s(model, n_tokens: int) -> float:
    """Tokens/s of one greedy decode of `n_tokens` (batch 1, after the prompt's prefill)."""
    from ..generate import GenerationConfig, generate_ids
    cfg = GenerationConfig(max_new_tokens=max(2, min(n_tokens, model.config.context_length - 1)), greedy=True,
                           ignore_eos=True, compile=False)      # the eager step: one call, no compile time
    return generate_ids(model, [[0]], cfg)[2]["tokens_per_s"]


def quantization_report(original: str | Path, quantized: list[str | Path], text: str, n_tokens: int = 128,
                        device: str = "cpu", repeats: int = 5) -> list[dict]:
    """Size on disk, decode tokens/s and perplexity on `text` of the original directory and its
    quantized copies, each loaded from disk as a user would; ratios are against the original.
    Speed is the best of `repeats` greedy batch-1 decodes, taken in turns (original, copies,
    original, ...) so a busy machine slows them alike."""
    from ..evaluate.perplexity import perplexity
    from ..adapt.runs import load_for_inference
    paths = [original, *quantized]
    models = [load_for_inference(path, device=device, dtype="float32") for path in paths]
    rows = [{"model": describe(config.quantization), "dir": str(path), "bytes": weights_bytes(path),
             "ppl": perplexity(module, tokenizer, text, stride=config.context_length // 2)["ppl"],
             "decode_tokens_per_s": 0.0} for path, (module, config, tokenizer) in zip(paths, models)]
    for module, _, _ in models:
        decode_tokens_per_s(module, 4)                                   # warm-up
    for _ in range(repeats):
        for row, (module, _, _) in zip(rows, models):
            row["decode_tokens_per_s"] = max(row["decode_tokens_per_s"], decode_tokens_per_s(module, n_tokens))
    base = rows[0]
    for row in rows:
        row["size_ratio"] = row["bytes"] / base["bytes"]
        row["speed_ratio"] = row["decode_tokens_per_s"] / base["decode_tokens_per_s"]
        row["ppl_delta_pct"] = 100 * (row["ppl"] / base["ppl"] - 1)
    return rows


def format_report(rows: list[dict]) -> str:
    lines = [f"{'model':<12}{'size MB':>10}{'size':>8}{'decode tok/s':>14}{'speed':>8}{'perplexity':>12}{'Δ ppl':>9}"]
    for r in rows:
        lines.append(f"{r['model']:<12}{r['bytes'] / 1e6:>10.2f}{r['size_ratio']:>7.2f}x"
                     f"{r['decode_tokens_per_s']:>14.1f}{r['speed_ratio']:>7.2f}x{r['ppl']:>12.3f}"
                     f"{r['ppl_delta_pct']:>+8.2f}%")
    return "\n".join(lines)
