"""Greedy decoding: lmforge (prefill + preallocated KV cache) vs `transformers` generate (SDPA),
same shapes, same batch, same dtype, side by side in one process.

    python benchmarks/decode_speed.py                           # CPU shape: GPT 6 x 384, vocab 8192, generate's default
    python benchmarks/decode_speed.py --no-compile              # the eager step throughout
    python benchmarks/decode_speed.py --gpt2-124m --compile     # GPU: GPT-2 124M, compiled step + CUDA graphs
    python benchmarks/decode_speed.py --llama-1b --compile      # GPU: Llama 1.1B shapes (d 2048, 16 layers, GQA 32/8)
"""

from __future__ import annotations

import argparse

import torch

from common import (add_common_args, alternate, device_and_dtype, hf_gpt2, hf_llama, lmforge_gpt2, lmforge_llama,
                    report, setup_threads, timed, warm_up_default)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(p)
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--width", type=int, default=384)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--prompt", type=int, default=16, help="prompt tokens")
    p.add_argument("--new", type=int, default=128, help="generated tokens")
    p.add_argument("--gpt2-124m", action="store_true", help="GPT-2 124M shapes")
    p.add_argument("--llama-1b", action="store_true", help="Llama 1.1B shapes: d 2048, 16 layers, 32/8 heads, "
                                                           "ffn 8192, vocab 32000")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="lmforge: compiled decode step (CUDA graphs on GPU); transformers: static cache "
                        "(which it compiles automatically on GPU). --no-compile: lmforge's eager step. "
                        "Default: what `lmforge generate` does by default (on a CPU: eager, compiled once "
                        "the model has decoded for AUTO_COMPILE_AFTER_S; the warm-up runs until then)")
    p.add_argument("--auto-after", type=float, default=None,
                   help="seconds of eager decoding before the default compiles (default: lmforge's, 5)")
    args = p.parse_args()
    if args.gpt2_124m:
        args.layers, args.width, args.heads, args.context, args.vocab = 12, 768, 12, 1024, 50257
    setup_threads(args)
    device, dtype = device_and_dtype(args)
    torch.manual_seed(0)
    if args.llama_1b:
        shape = (16, 2048, 32, 8, 8192, 2048, 32000)
        theirs, ours = hf_llama(*shape), lmforge_llama(*shape)
        name = "llama-1.1b"
    else:
        shape = (args.layers, args.width, args.heads, args.context, args.vocab)
        theirs, ours = hf_gpt2(*shape), lmforge_gpt2(*shape, pad_vocab_multiple=1)
        name = f"gpt {args.layers}x{args.width}"
    from lmforge.model import inference_layout
    theirs = theirs.to(device, dtype).eval()
    ours = inference_layout(ours.to(device, dtype).eval(), device)     # what lmforge.load gives a user
    vocab = ours.config.vocab_size
    weights_gb = sum(p.numel() * p.element_size() for p in ours.parameters()) / 1e9
    shapes = dict(model=name, params=f"{sum(p.numel() for p in ours.parameters()) / 1e6:.0f}M", batch=args.batch,
                  prompt=args.prompt, new_tokens=args.new, dtype=str(dtype).replace("torch.", ""),
                  device=device.type, compile="default" if args.compile is None else args.compile)
    prompt = torch.randint(0, vocab, (args.batch, args.prompt), device=device)

    from lmforge.generate import GenerationConfig, generate_ids
    gen_cfg = GenerationConfig(max_new_tokens=args.new, greedy=True, compile=args.compile)
    hf_kwargs = dict(max_new_tokens=args.new, min_new_tokens=args.new, do_sample=False, pad_token_id=0)
    if args.compile:
        hf_kwargs["cache_implementation"] = "static"

    def run_ours():
        generate_ids(ours, prompt.tolist(), gen_cfg, eos_id=None)

    def run_theirs():
        with torch.no_grad():
            theirs.generate(prompt, attention_mask=torch.ones_like(prompt), **hf_kwargs)

    for fn in (run_ours, run_theirs, run_ours, run_theirs):        # warmup (and compilation)
        fn()
    if args.compile is None:
        if args.auto_after is not None:
            from lmforge.generate import auto_compile
            auto_compile.AUTO_COMPILE_AFTER_S = args.auto_after
        print(f"  lmforge's default: {warm_up_default(ours, run_ours, args.batch)}")
    tokens = args.batch * args.new
    results = alternate({"lmforge": lambda: tokens / timed(run_ours, device),
                         "transformers": lambda: tokens / timed(run_theirs, device)}, args.rounds)
    row = report("greedy decoding (prompt prefill + new tokens)", shapes, results, "tokens/s", args,
                 {"weights_gb": weights_gb})
    if device.type == "cuda" and args.batch == 1:
        bw = {"H100": 3.35e12, "H200": 4.8e12, "A100": 2.0e12}
        peak = next((v for k, v in bw.items() if k in torch.cuda.get_device_name()), None)
        if peak:
            limit = peak / (weights_gb * 1e9)
            print(f"  bandwidth limit ~{limit:,.0f} tokens/s ({weights_gb:.2f} GB of weights per token); "
                  f"lmforge at {100 * row['best']['lmforge'] / limit:.0f}% of it")


if __name__ == "__main__":
    main()
