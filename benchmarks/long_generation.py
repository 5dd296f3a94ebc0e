"""Generating past the context window: tokens/s of a long greedy generation (default 1,000
tokens from a 256-token-context model) against the same model generating within its window,
and against `transformers` generating the same length where it can. A GPT-2 (learned
positions) cannot go past its position table in `transformers`, so its row there is the longest
it can write (context - prompt); a Llama (rotary) in `transformers` goes on with a growing cache
that attends to everything (no window), so it is not the same computation. Also the cost per
token of `--json-mode`: the mask lookup + per-token state update, and the one-off table build.

    python benchmarks/long_generation.py                 # 4 x 256, context 256, vocab 4096, fp32
    python benchmarks/long_generation.py --quick         # tiny shapes: checks that it runs
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import add_common_args, alternate, device_and_dtype, hf_gpt2, hf_llama, lmforge_gpt2, \
    lmforge_llama, machine, report, setup_threads, timed  # noqa: E402


def lmforge_rate(model, prompt: list[int], new: int, device) -> float:
    from lmforge.generate import GenerationConfig, generate_ids
    cfg = GenerationConfig(max_new_tokens=new, greedy=True)
    return new / timed(lambda: generate_ids(model, [prompt], cfg), device)


def hf_rate(model, prompt: list[int], new: int, device) -> float:
    ids = torch.tensor([prompt], device=device)
    return new / timed(lambda: model.generate(ids, max_new_tokens=new, min_new_tokens=new, do_sample=False,
                                              pad_token_id=0), device)


def json_mode_cost(args) -> None:
    """Per-token cost of JSON mode on a BPE tokenizer trained on JSON-like text."""
    import random

    from lmforge.generate import GenerationConfig, generate
    from lmforge.generate.json_mode import json_table
    from lmforge.tokenizers import train_bpe_tokenizer
    rng = random.Random(0)
    words = ["name", "value", "items", "id", "true", "false", "null", "text", "price", "count"]
    docs = [str({rng.choice(words): [rng.randint(0, 999), rng.choice(words)] for _ in range(4)}).replace("'", '"')
            for _ in range(2000)]
    tok = train_bpe_tokenizer(docs, vocab_size=args.json_vocab)
    t0 = time.perf_counter()
    table = json_table(tok)
    build = time.perf_counter() - t0
    model = lmforge_gpt2(args.layers, args.width, args.heads, args.context, tok.vocab_size).eval()
    new = min(args.new, 200)
    free = GenerationConfig(max_new_tokens=new, temperature=1.0, seed=0, ignore_eos=True)
    masked = GenerationConfig(max_new_tokens=new, temperature=1.0, seed=0, json_mode=True)
    generate(model, tok, "", masked)                                  # warm: the masks of the states it meets
    t_free = min(timed(lambda: generate(model, tok, "", free), torch.device("cpu")) for _ in range(args.rounds))
    n_masked, t_masked = 0, float("inf")
    for _ in range(args.rounds):
        t0 = time.perf_counter()
        n_masked = len(generate(model, tok, "", masked)[0].ids) + 1
        t_masked = min(t_masked, time.perf_counter() - t0)
    per_free, per_masked = t_free / new, t_masked / n_masked
    print(f"\njson mode (vocab {tok.vocab_size}, {len(table.masks)} states met)")
    print(f"  table: {build * 1e3:.1f} ms to read the vocabulary; each new state's mask is built on first use")
    print(f"  per token: {per_free * 1e3:.2f} ms unconstrained, {per_masked * 1e3:.2f} ms with --json-mode "
          f"(+{(per_masked - per_free) * 1e3:.2f} ms, {n_masked} tokens)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_common_args(p)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--prompt", type=int, default=16)
    p.add_argument("--new", type=int, default=1000)
    p.add_argument("--json-vocab", type=int, default=1000)
    p.add_argument("--quick", action="store_true", help="tiny shapes, one round")
    args = p.parse_args()
    if args.quick:
        args.layers, args.width, args.heads, args.context, args.vocab, args.new, args.rounds = 1, 32, 2, 32, 64, 100, 1
        args.json_vocab = 300
    setup_threads(args)
    device, dtype = device_and_dtype(args)
    prompt = list(range(1, args.prompt + 1))
    within = args.context - args.prompt
    shapes = dict(layers=args.layers, width=args.width, context=args.context, vocab=args.vocab, prompt=args.prompt,
                  new=args.new, within=within, dtype=str(dtype).replace("torch.", ""))
    torch.manual_seed(0)
    for name, ours, theirs in (
            ("gpt2 (learned positions: re-encode)", lmforge_gpt2(args.layers, args.width, args.heads, args.context,
                                                                  args.vocab),
             hf_gpt2(args.layers, args.width, args.heads, args.context, args.vocab)),
            ("llama (rotary: rolling cache)", lmforge_llama(args.layers, args.width, args.heads, args.heads,
                                                            4 * args.width, args.context, args.vocab),
             hf_llama(args.layers, args.width, args.heads, args.heads, 4 * args.width, args.context, args.vocab))):
        ours, theirs = ours.to(device, dtype).eval(), theirs.to(device, dtype).eval()
        hf_new = within if name.startswith("gpt2") else args.new
        with torch.no_grad():
            results = alternate({"past window": lambda: lmforge_rate(ours, prompt, args.new, device),
                                 "within window": lambda: lmforge_rate(ours, prompt, within, device),
                                 f"transformers {hf_new}": lambda: hf_rate(theirs, prompt, hf_new, device)},
                                args.rounds)
        report(f"long generation, {name}", shapes, results, "tokens/s", args)
    json_mode_cost(args)
    print(f"machine: {machine()}")


if __name__ == "__main__":
    main()
