"""Training throughput: lmforge vs `transformers` GPT2LMHeadModel (SDPA), same shapes, same
batch, same dtype, AdamW, measured side by side in one process; with --bert-mini, masked-LM
pretraining of an encoder against BertForMaskedLM.

    python benchmarks/train_speed.py                    # CPU shape: 4 x 128, context 64, batch 12
    python benchmarks/train_speed.py --gpt2-124m        # GPT-2 124M, batch 12 x 1024 (GPU)
    python benchmarks/train_speed.py --bert-mini        # masked LM: bert-mini 4 x 256, context 128, batch 32
    python benchmarks/train_speed.py --bert-mini --profile   # + where lmforge's step spends its time
    python benchmarks/train_speed.py --context 128 --batch 32 --vocab 1024 --dropout 0.2   # the quickstart's regime

Masked LM: both models see the same inputs (15% of the tokens selected, BERT's 80/10/10 rule,
`lmforge.data.mlm.mask_tokens`) and the loss of the selected tokens; lmforge runs its output head on
the selected positions only (what `--task mlm` does), BertForMaskedLM on every position (what it
does when given labels).
"""

from __future__ import annotations

import argparse
import contextlib

import torch
import torch.nn.functional as F

from common import (add_common_args, alternate, device_and_dtype, hf_bert, hf_gpt2, lmforge_bert, lmforge_gpt2,
                    report, setup_threads, timed)


def make_step(model, loss_fn, opt, autocast):
    def step():
        with autocast():
            loss = loss_fn()
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
    p.add_argument("--mlm", action="store_true", help="masked-LM pretraining of an encoder (BERT) instead")
    p.add_argument("--bert-mini", action="store_true", help="--mlm with bert-mini shapes: 4 x 256, context 128, "
                                                            "batch 32, vocab 8192 (lmforge prepare's default)")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout on the embeddings and residual branches of "
                                                             "both GPT-2 models (none on the attention weights)")
    p.add_argument("--profile", action="store_true", help="print where lmforge's training step spends its time")
    args = p.parse_args()
    if args.gpt2_124m:
        args.layers, args.width, args.heads, args.context, args.vocab = 12, 768, 12, 1024, 50257
    if args.bert_mini:
        args.layers, args.width, args.heads, args.context, args.vocab, args.batch = 4, 256, 4, 128, 8192, 32
        args.mlm = True
    if args.mlm and args.dropout:
        p.error("--dropout is for the GPT-2 models; the masked-LM models train without dropout")
    setup_threads(args)
    device, dtype = device_and_dtype(args)
    autocast = (lambda: torch.autocast(device.type, dtype=dtype)) if dtype != torch.float32 else contextlib.nullcontext
    torch.manual_seed(0)
    shapes = dict(task="mlm" if args.mlm else "clm", layers=args.layers, width=args.width, heads=args.heads,
                  context=args.context, vocab=args.vocab, batch=args.batch, dtype=str(dtype).replace("torch.", ""),
                  device=device.type, compile=args.compile, dropout=args.dropout)
    ours, theirs, losses = (mlm_models if args.mlm else clm_models)(args, device)
    from lmforge.train.optim import make_adamw
    ours_opt = make_adamw(ours, 3e-4, 0.1, (0.9, 0.95), device.type)
    theirs_opt = torch.optim.AdamW(theirs.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1,
                                   fused=True)            # both frameworks get the fused AdamW kernel
    steps = {"lmforge": make_step(ours, losses["lmforge"], ours_opt, autocast),
             "transformers": make_step(theirs, losses["transformers"], theirs_opt, autocast)}
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
    title = "masked-LM training throughput" if args.mlm else "training throughput"
    row = report(f"{title} (forward + backward + AdamW)", shapes, results, "tokens/s", args, extra)
    if "mfu" in row:
        print("  MFU: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in row["mfu"].items()))
    if args.profile:
        profile_step(steps["lmforge"], args.steps)


def clm_models(args, device):
    """GPT-2 shapes: next-token loss on random tokens."""
    x = torch.randint(0, args.vocab, (args.batch, args.context), device=device)
    y = torch.randint(0, args.vocab, (args.batch, args.context), device=device)
    ours = lmforge_gpt2(args.layers, args.width, args.heads, args.context, args.vocab, args.dropout).to(device)
    theirs = hf_gpt2(args.layers, args.width, args.heads, args.context, args.vocab, args.dropout).to(device)
    ours_fwd, theirs_fwd = (torch.compile(ours), torch.compile(theirs)) if args.compile else (ours, theirs)

    def cross_entropy(logits):
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), y.reshape(-1))
    return ours, theirs, {"lmforge": lambda: cross_entropy(ours_fwd(x)),
                          "transformers": lambda: cross_entropy(theirs_fwd(input_ids=x).logits)}


def mlm_models(args, device):
    """bert-mini shapes: the masked-LM loss of 15% of random tokens, masked as `--task mlm` masks them."""
    from lmforge.data.mlm import mask_tokens
    ids = torch.randint(5, args.vocab, (args.batch, args.context))
    x, labels = mask_tokens(ids, mask_id=4, vocab_size=args.vocab, special_ids={0, 1, 2, 3, 4})
    x, labels = x.to(device), labels.to(device)
    selected = labels != -100
    ours = lmforge_bert(args.layers, args.width, args.heads, args.context, args.vocab).to(device)
    theirs = hf_bert(args.layers, args.width, args.heads, args.context, args.vocab).to(device)
    ours_fwd, theirs_fwd = (torch.compile(ours), torch.compile(theirs)) if args.compile else (ours, theirs)
    return ours, theirs, {
        "lmforge": lambda: F.cross_entropy(ours_fwd(x, select=selected).float(), labels[selected]),
        "transformers": lambda: theirs_fwd(input_ids=x, labels=labels).loss}


def profile_step(step, n: int) -> None:
    """The self time of lmforge's step, by op (the forward, backward and optimizer ops together)."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(n):
            step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":
    main()
