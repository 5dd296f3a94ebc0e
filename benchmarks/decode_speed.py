"""Batch-1 greedy decoding: lmforge (prefill + KV cache) vs `transformers` generate (SDPA),
same shapes, same random weights, side by side in one process.

    python benchmarks/decode_speed.py                   # CPU shape: 6 x 384, vocab 8192
    python benchmarks/decode_speed.py --gpt2-124m       # GPT-2 124M (GPU)
"""

from __future__ import annotations

import argparse

import torch

from common import add_common_args, alternate, device_and_dtype, hf_gpt2, lmforge_gpt2, report, setup_threads, timed


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
    args = p.parse_args()
    if args.gpt2_124m:
        args.layers, args.width, args.heads, args.context, args.vocab = 12, 768, 12, 1024, 50257
    setup_threads(args)
    device, dtype = device_and_dtype(args)
    torch.manual_seed(0)
    shapes = dict(layers=args.layers, width=args.width, heads=args.heads, vocab=args.vocab, batch=args.batch,
                  prompt=args.prompt, new_tokens=args.new, dtype=str(dtype).replace("torch.", ""), device=device.type)
    theirs = hf_gpt2(args.layers, args.width, args.heads, args.context, args.vocab).to(device, dtype).eval()
    ours = lmforge_gpt2(args.layers, args.width, args.heads, args.context, args.vocab, pad_vocab_multiple=1)
    ours = ours.to(device, dtype).eval()
    prompt = torch.randint(0, args.vocab, (args.batch, args.prompt), device=device)

    from lmforge.generate import GenerationConfig, generate_ids
    gen_cfg = GenerationConfig(max_new_tokens=args.new, greedy=True)

    def run_ours():
        generate_ids(ours, prompt.tolist(), gen_cfg, eos_id=None)

    def run_theirs():
        with torch.inference_mode():
            theirs.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=args.new,
                            min_new_tokens=args.new, do_sample=False, pad_token_id=0)

    for fn in (run_ours, run_theirs):
        fn()                                              # warmup
    tokens = args.batch * args.new
    results = alternate({"lmforge": lambda: tokens / timed(run_ours, device),
                         "transformers": lambda: tokens / timed(run_theirs, device)}, args.rounds)
    report("greedy decoding (prompt prefill + new tokens)", shapes, results, "tokens/s", args)


if __name__ == "__main__":
    main()
