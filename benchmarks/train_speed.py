"""Training throughput: lmforge vs `transformers` GPT2LMHeadModel (SDPA), same shapes, same
batch, same dtype, AdamW, measured side by side in one process.

    python benchmarks/train_speed.py                    # CPU shape: 4 x 128, context 64, batch 12
    python benchmarks/train_speed.py --gpt2-124m        # GPT-2 124M, batch 12 x 1024 (GPU)
"""

from __future__ import annotations

import argparse
import contextlib

import torch
import torch.nn.functional as F

from common import add_common_args, alternate, device_and_dtype, hf_gpt2, lmforge_gpt2, report, setup_threads, timed


def make_step(model, forward, opt, x, y, autocast):
    def step():
        with autocast():
            logits = forward(model, x)
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(p)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--context", type=int, default=64)
    p.add_argument("--vocab", type=int, default=65, help="65 = nanoGPT's shakespeare_char")
    p.add_argument("--batch", type=int, default=12)
    p.add_argument("--steps", type=int, default=20, help="timed steps per round")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--compile", action="store_true", help="torch.compile both models")
    p.add_argument("--gpt2-124m", action="store_true", help="GPT-2 124M shapes, batch 12 x 1024")
    args = p.parse_args()
    if args.gpt2_124m:
        args.layers, args.width, args.heads, args.context, args.vocab = 12, 768, 12, 1024, 50257
    setup_threads(args)
    device, dtype = device_and_dtype(args)
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype != torch.float32 else contextlib.nullcontext
    torch.manual_seed(0)
    shapes = dict(layers=args.layers, width=args.width, heads=args.heads, context=args.context, vocab=args.vocab,
                  batch=args.batch, dtype=str(dtype).replace("torch.", ""), device=device.type, compile=args.compile)
    x = torch.randint(0, args.vocab, (args.batch, args.context), device=device)
    y = torch.randint(0, args.vocab, (args.batch, args.context), device=device)
    fused = True                                          # both frameworks get the fused AdamW kernel

    from lmforge.train.optim import make_adamw
    ours = lmforge_gpt2(args.layers, args.width, args.heads, args.context, args.vocab).to(device)
    ours_opt = make_adamw(ours, 3e-4, 0.1, (0.9, 0.95), device.type)
    theirs = hf_gpt2(args.layers, args.width, args.heads, args.context, args.vocab).to(device)
    theirs_opt = torch.optim.AdamW(theirs.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1,
                                   fused=fused or None, foreach=None if fused else True)
    ours_fwd, theirs_fwd = ours, theirs
    if args.compile:
        ours_fwd, theirs_fwd = torch.compile(ours), torch.compile(theirs)
    steps = {
        "lmforge": make_step(ours, lambda m, x: ours_fwd(x), ours_opt, x, y, autocast),
        "transformers": make_step(theirs, lambda m, x: theirs_fwd(input_ids=x).logits, theirs_opt, x, y, autocast),
    }
    for step in steps.values():
        for _ in range(args.warmup):
            step()
    tokens = args.batch * args.context * args.steps

    def measure(step):
        return lambda: tokens / timed(lambda: [step() for _ in range(args.steps)], device)
    results = alternate({k: measure(s) for k, s in steps.items()}, args.rounds)
    extra = {}
    if device.type == "cuda":
        from lmforge.train.progress import peak_flops
        peak = peak_flops(device)
        if peak:
            from lmforge.model import flops_per_token
            fpt = flops_per_token(ours.config)
            extra["mfu"] = {k: max(v) * fpt / peak for k, v in results.items()}
    row = report("training throughput (forward + backward + AdamW)", shapes, results, "tokens/s", args, extra)
    if "mfu" in row:
        print("  MFU: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in row["mfu"].items()))


if __name__ == "__main__":
    main()
