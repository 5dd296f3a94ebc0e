"""Adapt and compress on real text: train a small GPT on a corpus (the KJV Bible of the shared
data kit), quantize it to int8 and int4 and compare size, decode speed and perplexity, then
distil a small draft model from it and measure speculative decoding (acceptance rate, speed-up).

    python benchmarks/adapt_compress_kjv.py --corpus ../shared/data/kjv.txt --out benchmarks/results/kjv

The last --heldout-lines lines of the corpus are held out (never trained on) for perplexity and
prompts. Steps whose output already exists are skipped, so a re-run only re-measures. Prints
markdown tables (the ones in docs/adapt.md) and writes OUT/results.json. Timings are batch-1 decodes;
on a shared CPU they move by tens of percent, so compared runs alternate and each keeps its best.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import lmforge
from lmforge.generate import GenerationConfig, generate_ids
from lmforge.generate.speculative import speculative_generate_ids
from lmforge.quantize import QuantizeConfig, format_report, quantization_report, quantize
from lmforge.train.distill import DistillConfig, distill


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", default="../shared/data/kjv.txt")
    p.add_argument("--out", default="benchmarks/results/kjv")
    p.add_argument("--heldout-lines", type=int, default=1000)
    p.add_argument("--vocab-size", type=int, default=2048)
    p.add_argument("--steps", type=int, default=300, help="training steps of the model (batch 16 x 128 tokens)")
    p.add_argument("--n-layer", type=int, default=6, help="the model: gpt-mini resized (the draft is gpt-tiny)")
    p.add_argument("--d-model", type=int, default=192)
    p.add_argument("--n-head", type=int, default=6)
    p.add_argument("--draft-steps", type=int, default=300, help="distillation steps of the draft")
    p.add_argument("--new-tokens", type=int, default=100, help="tokens per timed decode")
    p.add_argument("--prompts", type=int, default=6)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for the timed decodes (training uses 2): "
                   "batch-1 decoding on a shared CPU is several times slower with more threads")
    return p.parse_args()


def split_corpus(corpus: Path, out: Path, heldout_lines: int) -> tuple[Path, Path]:
    lines = corpus.read_text(encoding="utf-8").splitlines(keepends=True)
    train, heldout = out / "train.txt", out / "heldout.txt"
    if not train.is_file():
        train.write_text("".join(lines[:-heldout_lines]), encoding="utf-8")
        heldout.write_text("".join(lines[-heldout_lines:]), encoding="utf-8")
    return train, heldout


def train_models(args, out: Path, train_text: Path) -> tuple[Path, Path]:
    data, model, draft = out / "data", out / "model", out / "draft"
    common = dict(batch_size=16, lr=2e-3, warmup_steps=50, eval_interval=100, eval_iters=10,
                  sample_interval=0, device=args.device)
    if not (data / "meta.json").is_file():
        lmforge.prepare(lmforge.PrepareConfig(inputs=[str(train_text)], out=str(data), tokenizer="bpe",
                                              vocab_size=args.vocab_size))
    if not (model / "model.safetensors").is_file():
        t0 = time.perf_counter()
        lmforge.train(lmforge.TrainConfig(data=str(data), out=str(model), preset="gpt-mini", max_steps=args.steps,
                                          model=lmforge.ModelOverridesConfig(context_length=128, dropout=0.0, n_layer=args.n_layer,
                                                                       d_model=args.d_model, n_head=args.n_head),
                                          **common))
        print(f"trained {model} in {(time.perf_counter() - t0) / 60:.1f} min")
    if not (draft / "model.safetensors").is_file():
        t0 = time.perf_counter()
        distill(DistillConfig(teacher=str(model), student_preset="gpt-tiny", temperature=2.0, alpha=0.5),
                lmforge.TrainConfig(data=str(data), out=str(draft), max_steps=args.draft_steps,
                                    model=lmforge.ModelOverridesConfig(context_length=128, dropout=0.0), **common))
        print(f"distilled {draft} in {(time.perf_counter() - t0) / 60:.1f} min")
    return model, draft


def quantization_table(args, out: Path, model: Path, heldout: Path) -> list[dict]:
    copies = []
    for bits in (8, 4):
        copies.append(out / f"int{bits}")
        if not (copies[-1] / "model.safetensors").is_file():
            quantize(QuantizeConfig(str(model), str(copies[-1]), bits=bits, group_size=64))
    rows = quantization_report(model, copies, heldout.read_text(encoding="utf-8"), args.new_tokens, args.device)
    print(format_report(rows))
    return rows


def speculative_table(args, model_dir: Path, draft_dir: Path, heldout: Path) -> list[dict]:
    lm, draft = lmforge.load(model_dir, device=args.device), lmforge.load(draft_dir, device=args.device)
    verses = [v for v in heldout.read_text(encoding="utf-8").splitlines() if len(v.split()) > 12]
    step = max(1, len(verses) // args.prompts)
    prompts = [lm.tokenizer.encode(" ".join(v.split()[:8]) + " ") for v in verses[::step][: args.prompts]]
    rows = []
    for label, temperature in (("greedy", 0.0), ("sampling T=0.8", 0.8)):
        for k in (2, 4, 6):
            cfg = GenerationConfig(max_new_tokens=args.new_tokens, temperature=temperature, seed=0, draft_tokens=k,
                                   ignore_eos=True)
            plain_time = spec_time = plain_tokens = spec_tokens = drafted = accepted = 0
            same = True
            for ids in prompts:
                best = {}
                for _ in range(3):                               # alternate, keep each one's best
                    plain = generate_ids(lm.module, [ids], cfg)
                    spec = speculative_generate_ids(lm.module, draft.module, [ids], cfg)
                    for name, (tokens, _, stats) in (("plain", plain), ("spec", spec)):
                        if name not in best or stats["decode_s"] < best[name][1]["decode_s"]:
                            best[name] = (tokens, stats)
                same &= temperature > 0 or best["plain"][0] == best["spec"][0]
                plain_time += best["plain"][1]["decode_s"]
                spec_time += best["spec"][1]["decode_s"]
                plain_tokens += best["plain"][1]["new_tokens"] - 1
                spec_tokens += best["spec"][1]["new_tokens"] - 1
                drafted += best["spec"][1]["drafted"]
                accepted += best["spec"][1]["accepted"]
            row = {"mode": label, "draft_tokens": k, "acceptance_rate": accepted / drafted,
                   "plain_tokens_per_s": plain_tokens / plain_time, "spec_tokens_per_s": spec_tokens / spec_time,
                   "identical_to_plain": same if temperature == 0 else None}
            row["speedup"] = row["spec_tokens_per_s"] / row["plain_tokens_per_s"]
            rows.append(row)
            print(row)
    return rows


def markdown(quant: list[dict], spec: list[dict], model: lmforge.Model, draft: lmforge.Model) -> str:
    def params(m):
        return f"{sum(p.numel() for p in m.module.parameters()) / 1e6:.2f}M"
    lines = ["| model | size on disk | decode tokens/s | held-out perplexity | Δ perplexity |", "|---|---|---|---|---|"]
    for r in quant:
        lines.append(f"| {r['model']} | {r['bytes'] / 1e6:.2f} MB ({r['size_ratio']:.2f}x) | "
                     f"{r['decode_tokens_per_s']:.0f} ({r['speed_ratio']:.2f}x) | {r['ppl']:.2f} | "
                     f"{r['ppl_delta_pct']:+.2f}% |")
    lines += ["", f"Model {params(model)} parameters, draft {params(draft)}.", "",
              "| decoding | draft tokens | acceptance | plain tokens/s | speculative tokens/s | speed-up |",
              "|---|---|---|---|---|---|"]
    for r in spec:
        lines.append(f"| {r['mode']} | {r['draft_tokens']} | {100 * r['acceptance_rate']:.0f}% | "
                     f"{r['plain_tokens_per_s']:.0f} | {r['spec_tokens_per_s']:.0f} | {r['speedup']:.2f}x |")
    return "\n".join(lines)


def main() -> int:
    args = parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()) if args.device == "cpu" else torch.get_num_threads())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train_text, heldout = split_corpus(Path(args.corpus), out, args.heldout_lines)
    model, draft = train_models(args, out, train_text)
    torch.set_num_threads(args.threads)
    quant = quantization_table(args, out, model, heldout)
    spec = speculative_table(args, model, draft, heldout)
    assert all(r["identical_to_plain"] for r in spec if r["identical_to_plain"] is not None), \
        "speculative greedy decoding diverged from plain greedy decoding"
    table = markdown(quant, spec, lmforge.load(model, device="cpu"), lmforge.load(draft, device="cpu"))
    (out / "results.json").write_text(json.dumps({"args": vars(args), "quantization": quant, "speculative": spec},
                                                 indent=2) + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
