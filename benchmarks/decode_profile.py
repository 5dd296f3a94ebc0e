"""Where the time of a batch-1 decode step goes (torch.profiler): matrix-vector products, attention,
the rest of the model's ops, the decode loop around the model (sampling, bookkeeping), and what no
op accounts for (Python and dispatch). The model is the CPU anchor's shape (benchmarks/gguf_llamacpp.py:
Llama kind, 6 x 384, GQA 6/2, SwiGLU 1024, vocab 8192, random weights).

    python benchmarks/decode_profile.py                    # fp32, eager, 1 thread
    python benchmarks/decode_profile.py --compile          # the compiled decode step
    python benchmarks/decode_profile.py --bits 8           # int8 weight-only (lmforge.quantize)
    python benchmarks/decode_profile.py --table            # also the per-op table
"""

from __future__ import annotations

import argparse
import time

import torch

from common import lmforge_llama

GEMV = ("aten::mm", "aten::addmm", "aten::bmm", "aten::_int_mm", "aten::_weight_int8pack_mm", "aten::_weight_int4pack_mm_for_cpu",
        "lmforge::int4_product", "lmforge::int8_product")
COMPILED = ("Torch-Compiled Region", "CompiledFunction", "## Call CompiledFxGraph")


def category(event, inside_model: bool) -> str:
    name = event.name
    if "scaled_dot_product" in name or "flash_attention" in name:
        return "attention"
    if name in GEMV:
        return "GEMV"
    if name.startswith("graph_") or name.startswith("cpp_fused") or "kernel" in name:
        return "compiled kernels"
    return "other model ops" if inside_model else "decode loop (sampling, bookkeeping)"


def in_model(event) -> bool:
    while event is not None:
        if event.name == "model step":
            return True
        event = event.cpu_parent
    return False


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--new", type=int, default=128, help="generated tokens")
    p.add_argument("--bits", type=int, default=None, choices=(8, 4), help="quantize the weights first")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--table", action="store_true", help="print the per-op table too")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from lmforge.generate import GenerationConfig, generate_ids
    from lmforge.model import inference_layout
    from lmforge.quantize.model import quantize_model
    torch.manual_seed(0)
    model = lmforge_llama(6, 384, 6, 2, 1024, 512, 8192).eval()
    if args.bits:
        quantize_model(model, args.bits)
    model = inference_layout(model, "cpu")
    forward = model.forward

    def labelled(*a, **kw):
        with torch.profiler.record_function("model step"):
            return forward(*a, **kw)
    model.forward = labelled
    cfg = GenerationConfig(max_new_tokens=args.new, greedy=True, compile=args.compile)
    prompt = [list(range(1, 17))]
    run = lambda: generate_ids(model, prompt, cfg, eos_id=None)   # noqa: E731
    run(), run()                                                  # warm-up (and compilation)
    best = min(timed(run) for _ in range(5))
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        run()
        profiled = time.perf_counter() - t0
    totals: dict[str, float] = {}
    for e in prof.events():
        if e.name in ("model step", *COMPILED) or e.name.startswith("## ") or e.name.startswith("Torch-Compiled"):
            continue
        key = category(e, in_model(e))
        if args.compile and key.startswith(("other model", "decode loop")):   # no "model step" label inside a graph
            key = "other ops (model and loop)"
        totals[key] = totals.get(key, 0.0) + e.self_cpu_time_total / 1e3
    rest = "inductor's fused kernels, Python and dispatch (no op)" if args.compile else "Python and dispatch (no op)"
    totals[rest] = max(0.0, profiled * 1e3 - sum(totals.values()))   # a compiled graph's own kernels are no op
    print(f"decode, batch 1, {args.new} new tokens, {args.threads} thread(s), "
          f"{'int%d' % args.bits if args.bits else 'fp32'}{', compiled' if args.compile else ''}: "
          f"{args.new / best:.1f} tokens/s ({1e3 * best / args.new:.2f} ms/token unprofiled)")
    print(f"profiled run {1e3 * profiled / args.new:.2f} ms/token; shares of it:")
    for key, ms in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"  {key:<40} {ms / args.new:6.3f} ms/token  {100 * ms / (profiled * 1e3):5.1f}%")
    if args.table:
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    main()
