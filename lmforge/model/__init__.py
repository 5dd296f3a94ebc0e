"""Model families assembled from the shared blocks in `blocks.py`.

`build_model(config)` picks the family's class from `FAMILIES`: decoder (GPT, Llama),
encoder (BERT) and seq2seq (the original Transformer), each a `FamilyModel` (`family.py`)
assembled from the `Transformer` body (`transformer.py`, built of `blocks.py`'s blocks) plus
the shared heads in `heads.py`.
"""

from __future__ import annotations

import os
from typing import Callable

import torch
import torch.nn as nn

from ..config import ModelConfig
from ..errors import ConfigError
from .decoder import DecoderLM
from .encoder import EncoderModel
from .seq2seq import Seq2SeqLM
from .linear import Linear, packable, splits
from .quantized import Int4Linear, Int8Linear
from .huge_pages import weights_on_huge_pages
from .vnni import kernels_work
from .weights import load_weights_into, replace_module, shared_parameters

FAMILIES: dict[str, Callable[[ModelConfig], nn.Module]] = {"decoder": DecoderLM, "encoder": EncoderModel,
                                                           "seq2seq": Seq2SeqLM}


def build_model(config: ModelConfig) -> nn.Module:
    """The family's module (float Linear layers; `lmforge.loading.build` adds a quantized config's int8 /
    int4 layers)."""
    if config.family not in FAMILIES:
        raise ConfigError(f"no model is registered for family {config.family!r}; "
                          f"known: {', '.join(sorted(FAMILIES))}")
    return FAMILIES[config.family](config)


def num_params(config: ModelConfig, embeddings: bool = True) -> int:
    """Parameter count of the model `config` describes (built on the meta device: no memory)."""
    with torch.device("meta"):
        return build_model(config).num_params(embeddings=embeddings)


def flops_per_token(config: ModelConfig) -> float:
    """Training FLOPs per token: 6N + 12·L·d·T (the PaLM / nanoGPT MFU convention)."""
    return 6 * num_params(config, embeddings=False) + 12 * config.n_layer * config.d_model * config.context_length


def new_head_prefixes(base: ModelConfig, config: ModelConfig) -> tuple[str, ...]:
    """Modules of `config` that weights of a model with config `base` cannot fill: a
    classification head for labels the base was not trained on."""
    return ("classifier.",) if config.labels and config.labels != base.labels else ()


def inference_layout(model: nn.Module, device: torch.device | str, split: bool | None = None) -> nn.Module:
    """Lay weights out in memory for fast inference on `device`; values, shapes, names and the
    state dict stay the same.

    On a CPU every float32 and bf16 `Linear` is marked to run its eager products without gradient
    on a copy of its weight packed for oneDNN (`linear.packed_product`: 1.3-2.6x MKL's `F.linear`
    at 1-16 rows through a model's weights, on one thread or two), when the copies fit: their bytes at
    most `PACK_SHARE` of the machine's memory (they double the memory of those weights). One row on
    two threads or more is split over the threads instead (`linear.split_gemv`, as fast, no copy),
    so float32 weights stay row-major there (`split`: whether few-row products will be split,
    default whether there are two threads or more). Otherwise Linear weights (out, in) get
    column-major storage, so `F.linear` multiplies by a contiguous (in, out) matrix: MKL's batch-1
    GEMV then streams weights from DRAM about 1.5-2x faster (26.6 vs 12.2 GB/s on a 75 MB matrix,
    2-core EPYC); a tied head and embedding share the one transposed storage (the embedding lookup
    reads a strided row). Training keeps row-major weights and `F.linear`.
    Packed int4 weights (and their scales and offsets) get column-major storage whatever the
    threads: there `vnni.int4_product` reads them, on a CPU with AVX-512 VNNI (`integer_products`);
    elsewhere the compiled decode step's fused product (`linear.fused_gemv`) runs along the
    outputs, ~6x faster than along the packed rows. An `Int8Linear` keeps its row-major weight and
    is marked (`kernel`) where `vnni.int8_product` runs, for its products of a few rows.
    The compiled fp32 decode step wants the rows instead (`linear.row_major_layout`).
    Last, the weights move into one block of memory on 2 MiB pages (`huge_pages`; Linux), which a
    decode step streams 1.2x faster.
    """
    if torch.device(device).type != "cpu":
        return model
    split = torch.get_num_threads() >= 2 if split is None else split     # few-row products split over the threads
    linears = [m for m in model.modules() if isinstance(m, Linear) and packable(m.weight)]
    packs = sum(m.weight.nbytes for m in linears) <= PACK_SHARE * _memory_bytes()
    for module in linears:
        module.packs = packs
    for module in model.modules():
        keep_rows = split and isinstance(module, Linear) and splits(module.weight)
        if isinstance(module, (nn.Linear, Int4Linear)) and not keep_rows:
            for w in (module.weight, *((module.scales, module.offsets) if isinstance(module, Int4Linear) else ())):
                if w.dim() == 2 and w.stride() != (1, w.shape[0]):
                    w.data = w.data.t().contiguous().t()
        if isinstance(module, Int4Linear):
            module.integer_products = module.kernel_layout() and kernels_work()
        if isinstance(module, Int8Linear):
            module.kernel = module.kernel_layout() and kernels_work()
    return weights_on_huge_pages(model)


PACK_SHARE = 0.125      # most share of the machine's memory that packed copies of weights may take


def _memory_bytes() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):     # not a POSIX system: assume 8 GiB
        return 8 << 30


__all__ = ["build_model", "num_params", "flops_per_token", "load_weights_into", "shared_parameters", "inference_layout", "new_head_prefixes", "replace_module", "DecoderLM", "EncoderModel", "Seq2SeqLM", "FAMILIES"]
