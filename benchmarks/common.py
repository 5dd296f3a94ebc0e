"""Shared helpers for the side-by-side benchmarks: the same shapes built in lmforge and in
`transformers` (GPT2LMHeadModel, SDPA attention), timing with warmup and alternating rounds."""

from __future__ import annotations

import argparse
import atexit
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

import torch

RESULTS = Path(__file__).parent / "results"


def scratch_dir(prefix: str) -> Path:
    """A temporary folder for a benchmark's models and data, removed when the script exits."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, work, True)
    return work


def device_and_dtype(args) -> tuple[torch.device, torch.dtype]:
    device = torch.device(args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = {"auto": torch.bfloat16 if device.type == "cuda" else torch.float32, "float32": torch.float32,
             "bfloat16": torch.bfloat16}[args.dtype]
    return device, dtype


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16"))
    p.add_argument("--rounds", type=int, default=3, help="alternating measurement rounds per framework")
    p.add_argument("--threads", type=int, default=0, help="torch threads on CPU (0: all cores)")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")


def setup_threads(args) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def hf_gpt2(n_layer: int, d: int, n_head: int, ctx: int, vocab: int, dropout: float = 0.0):
    """`dropout` on the embeddings and residual branches; the attention weights' own is always 0."""
    from transformers import GPT2Config, GPT2LMHeadModel
    cfg = GPT2Config(n_layer=n_layer, n_embd=d, n_head=n_head, n_positions=ctx, vocab_size=vocab,
                     resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=0.0, use_cache=True,
                     bos_token_id=None, eos_token_id=None)
    return GPT2LMHeadModel(cfg, attn_implementation="sdpa") if _accepts_attn_impl() else \
        GPT2LMHeadModel._from_config(cfg, attn_implementation="sdpa")


def hf_llama(n_layer: int, d: int, n_head: int, n_kv_head: int, ffn: int, ctx: int, vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM
    cfg = LlamaConfig(num_hidden_layers=n_layer, hidden_size=d, num_attention_heads=n_head,
                      num_key_value_heads=n_kv_head, intermediate_size=ffn, max_position_embeddings=ctx,
                      vocab_size=vocab, tie_word_embeddings=False, bos_token_id=None, eos_token_id=None)
    return LlamaForCausalLM._from_config(cfg, attn_implementation="sdpa")


def lmforge_llama(n_layer: int, d: int, n_head: int, n_kv_head: int, ffn: int, ctx: int, vocab: int):
    from lmforge.config import get_preset
    from lmforge.model import build_model
    return build_model(get_preset("llama-1b", n_layer=n_layer, d_model=d, n_head=n_head, n_kv_head=n_kv_head,
                                  d_ff=ffn, context_length=ctx, vocab_size=vocab, pad_vocab_multiple=1))


def hf_bert(n_layer: int, d: int, n_head: int, ctx: int, vocab: int):
    """BertForMaskedLM (SDPA attention), no dropout, as lmforge's `bert-*` presets."""
    from transformers import BertConfig, BertForMaskedLM
    cfg = BertConfig(num_hidden_layers=n_layer, hidden_size=d, num_attention_heads=n_head, intermediate_size=4 * d,
                     max_position_embeddings=ctx, vocab_size=vocab, hidden_dropout_prob=0.0,
                     attention_probs_dropout_prob=0.0, layer_norm_eps=1e-12)
    return BertForMaskedLM._from_config(cfg, attn_implementation="sdpa")


def lmforge_bert(n_layer: int, d: int, n_head: int, ctx: int, vocab: int):
    from lmforge.config import get_preset
    from lmforge.model import build_model
    return build_model(get_preset("bert-mini", n_layer=n_layer, d_model=d, n_head=n_head, context_length=ctx,
                                  vocab_size=vocab))


def _accepts_attn_impl() -> bool:
    import inspect

    from transformers import GPT2LMHeadModel
    return "attn_implementation" in inspect.signature(GPT2LMHeadModel.__init__).parameters


def lmforge_gpt2(n_layer: int, d: int, n_head: int, ctx: int, vocab: int, dropout: float = 0.0, **overrides):
    """`dropout` as `hf_gpt2`'s: embeddings and residual branches, none on the attention weights."""
    from lmforge.config import get_preset
    from lmforge.model import build_model
    cfg = get_preset("gpt2-124m", n_layer=n_layer, d_model=d, n_head=n_head, context_length=ctx, vocab_size=vocab,
                     dropout=dropout, attention_dropout=0.0, **overrides)
    return build_model(cfg)


def alternate(measures: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Run each measurement `rounds` times, alternating frameworks so drift hits both alike."""
    out: dict[str, list[float]] = {k: [] for k in measures}
    for _ in range(rounds):
        for name, fn in measures.items():
            out[name].append(fn())
    return out


def report(title: str, shapes: dict, results: dict[str, list[float]], unit: str, args, extra: dict | None = None):
    best = {k: max(v) for k, v in results.items()}
    names = list(best)
    print(f"\n{title}")
    print("  shapes: " + ", ".join(f"{k}={v}" for k, v in shapes.items()))
    print(f"  machine: {machine()}")
    for k in names:
        runs = ", ".join(f"{x:,.0f}" for x in results[k])
        print(f"  {k:<14} {best[k]:>12,.0f} {unit}   (rounds: {runs})")
    if len(names) >= 2:
        print(f"  ratio {names[0]} / {names[1]}: {best[names[0]] / best[names[1]]:.2f}x")
    row = {"title": title, "shapes": shapes, "unit": unit, "best": best, "rounds": results, "machine": machine(),
           **(extra or {})}
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        with open(args.json, "a") as f:
            f.write(json.dumps(row) + "\n")
    return row


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {os.cpu_count()} cores"


def warm_up_default(model, run: Callable[[], object], batch: int = 1) -> str:
    """Call `run` (a decode with `generate`'s default) until the default has spent its eager
    budget, then once more (the call that compiles, where it does); says what it did."""
    from lmforge.generate import auto_compile
    times = auto_compile.step_times(model, (batch, False))
    calls = 0
    while not times.compiled and times.eager_s < auto_compile.AUTO_COMPILE_AFTER_S:
        run()
        calls += 1
    spent = times.eager_s
    t0 = time.perf_counter()
    run()
    if times.compiled and not getattr(model, "_eager_only", False):
        return (f"eager for {calls} more calls ({spent:.1f} s of decoding), then compiled (that call "
                f"{time.perf_counter() - t0:.1f} s, compiling included)")
    return "eager (no compiling here: not a CPU, no compiler, a long context, or measured slower)"


def timed(fn: Callable[[], None], device: torch.device) -> float:
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def quickstart_data(work: Path) -> str:
    """The quickstart corpus (Python's reference text) prepared into work/data (BPE, 1,024 tokens),
    as `lmforge quickstart` prepares it; returns the data directory."""
    from lmforge.data.shards import PrepareConfig, prepare
    from lmforge.quickstart import pydoc_corpus
    src = work / "pydoc.txt"
    src.write_text(pydoc_corpus())
    prepare(PrepareConfig(inputs=[str(src)], out=str(work / "data"), tokenizer="bpe", vocab_size=1024,
                          progress=False))
    return str(work / "data")
