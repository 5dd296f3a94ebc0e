"""Batch-1 greedy decoding of one model in fp32, lmforge int8 / int4 and torchao's weight-only int8 / int4,
eager and compiled (`--compile`'s decode step), rounds alternated in one process. The model is the CPU
anchor's shape (benchmarks/gguf_llamacpp.py: Llama kind, 6 x 384, GQA 6/2, SwiGLU 1024, vocab 8192).

    python benchmarks/quantized_decode.py                                   # every variant, 1 thread
    python benchmarks/quantized_decode.py --variants fp32,int8+c --threads 2
    python benchmarks/quantized_decode.py --quick                           # tiny model: checks that it runs

Variants: fp32, int8, int4 (lmforge.quantize), ao-int8, ao-int4 (torchao, when installed); a "+c"
suffix compiles the decode step. Each prints tokens/s, its ratio to fp32 and how many greedy tokens
equal the first variant's.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import time

import torch

from common import lmforge_llama

ALL = "fp32,fp32+c,int8,int8+c,int4,int4+c,ao-int8,ao-int8+c,ao-int4"


def quantized(model, kind: str):
    from lmforge.quantize.model import quantize_model
    model = copy.deepcopy(model)
    if kind in ("int8", "int4"):                  # as `lmforge quantize` writes them
        quantize_model(model, int(kind[3:]), 64)
    elif kind == "ao-int8":
        from torchao.quantization import Int8WeightOnlyConfig, quantize_
        quantize_(model, Int8WeightOnlyConfig(set_inductor_config=False))
    elif kind == "ao-int4":                       # torchao's CPU int4: the tinygemm kernel
        from torchao.prototype.quantization.int4.inference_workflow import PrototypeInt4WeightOnlyConfig
        from torchao.quantization import quantize_
        quantize_(model, PrototypeInt4WeightOnlyConfig(group_size=64, set_inductor_config=False))
    return model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--variants", default=ALL, help=f"comma-separated (default: {ALL})")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--new", type=int, default=128, help="generated tokens")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--quick", action="store_true", help="a 1 x 64 model, 8 tokens, one round")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from lmforge.generate import GenerationConfig, generate_ids
    from lmforge.model import inference_layout
    variants = args.variants.split(",")
    if importlib.util.find_spec("torchao") is None:
        print("torchao is not installed: its variants are skipped (pip install torchao)")
        variants = [v for v in variants if not v.startswith("ao-")]
    shape = (1, 64, 2, 1, 128, 64, 256) if args.quick else (6, 384, 6, 2, 1024, 512, 8192)
    new, rounds = (8, 1) if args.quick else (args.new, args.rounds)
    torch.manual_seed(0)
    base = lmforge_llama(*shape).eval()
    # laid out as `lmforge.load` lays them out (torchao's tensors keep their own layout)
    models = {v: (quantized(base, v.removesuffix("+c")) if v.startswith("ao-") else inference_layout(
                  quantized(base, v.removesuffix("+c")), "cpu"),
                  GenerationConfig(max_new_tokens=new, greedy=True, compile=v.endswith("+c"))) for v in variants}
    prompt = [list(range(1, 17))]
    tokens, speed = {}, {v: [] for v in variants}
    for v, (model, cfg) in models.items():                     # warm-up (and compilation)
        t0 = time.perf_counter()
        tokens[v] = generate_ids(model, prompt, cfg, eos_id=None)[0][0]
        print(f"{v}: first run {time.perf_counter() - t0:.1f} s", flush=True)
    for _ in range(rounds):
        for v, (model, cfg) in models.items():
            t0 = time.perf_counter()
            generate_ids(model, prompt, cfg, eos_id=None)
            speed[v].append(new / (time.perf_counter() - t0))
    first = variants[0]
    print(f"\nbatch-1 greedy decoding, {new} tokens, {args.threads} thread(s), best of {rounds} alternated rounds")
    for v in variants:
        same = next((i for i, (a, b) in enumerate(zip(tokens[first], tokens[v])) if a != b), new)
        print(f"  {v:<10} {max(speed[v]):8.1f} tokens/s  {max(speed[v]) / max(speed[first]):5.2f}x {first}  "
              f"greedy tokens equal to {first}'s: {same} of {new}   (rounds: "
              f"{', '.join(f'{s:.0f}' for s in speed[v])})")


if __name__ == "__main__":
    main()
