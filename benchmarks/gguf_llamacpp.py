"""lmforge against llama.cpp on the same model: export it to GGUF, check that llama.cpp's greedy
tokens equal lmforge's, then batch-1 greedy decoding side by side — lmforge fp32 / int8 / int4
against llama.cpp f32 / q8_0 — on the same CPU threads. The CPU decoding anchor.

    pip install llama-cpp-python        # compiles llama.cpp from source (not a test dependency)
    python benchmarks/gguf_llamacpp.py                     # Llama kind, 6 x 384, GQA 6/2, vocab 8192, 2 threads
    python benchmarks/gguf_llamacpp.py --compile           # lmforge's compiled decode step from the first call
    python benchmarks/gguf_llamacpp.py --no-compile        # lmforge's eager step throughout
    python benchmarks/gguf_llamacpp.py --arch gpt2         # GPT-2 kind, same sizes
    python benchmarks/gguf_llamacpp.py --model runs/quickstart   # a trained model directory instead

The model has random weights (perturbed so logits are peaked and greedy choices are not near
ties) unless --model is given; tokens/s counts the new tokens of prompt prefill + decoding.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from common import add_common_args, alternate, report, scratch_dir, timed, warm_up_default


def build(args, out: Path) -> Path:
    """A model directory: --model, or a random model of the asked shape with a BPE tokenizer
    trained on Python's own documentation."""
    if args.model:
        return Path(args.model)
    from lmforge.api import Model
    from lmforge.config import get_preset
    from lmforge.model import build_model
    from lmforge.quickstart import pydoc_corpus
    from lmforge.tokenizers.bpe import train_bpe_tokenizer
    tokenizer = train_bpe_tokenizer([pydoc_corpus()[:2_000_000]], vocab_size=args.vocab)
    preset = "llama-1b" if args.arch == "llama" else "gpt2-124m"
    kv = ({"n_kv_head": args.kv_heads, "d_ff": 64 * -(-8 * args.width // 3 // 64)}   # SwiGLU width ~8/3 d_model
          if args.arch == "llama" else {})
    config = get_preset(preset, n_layer=args.layers, d_model=args.width, n_head=args.heads, context_length=args.context,
                        vocab_size=tokenizer.vocab_size, pad_vocab_multiple=1, dropout=0.0, **kv)
    torch.manual_seed(0)
    model = build_model(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    Model(model, config, tokenizer).save(out / "model")
    return out / "model"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_common_args(p)
    p.add_argument("--model", default=None, help="an lmforge model directory (default: a random model)")
    p.add_argument("--arch", default="llama", choices=("llama", "gpt2"))
    p.add_argument("--layers", type=int, default=6)
    p.add_argument("--width", type=int, default=384)
    p.add_argument("--heads", type=int, default=6)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--context", type=int, default=512)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--prompt", default="The for statement in Python iterates over", help="prompt text")
    p.add_argument("--new", type=int, default=128, help="generated tokens")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="lmforge decodes with its compiled decode step (`lmforge generate --compile`); "
                        "--no-compile: the eager step; default: generate's default, measured once the warm-up "
                        "has spent its eager budget (on a CPU it then compiles)")
    p.set_defaults(threads=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    try:
        from llama_cpp import Llama
    except ImportError:
        sys.exit("llama-cpp-python is not installed: `pip install llama-cpp-python` (it compiles llama.cpp)")

    import lmforge
    from lmforge.generate import GenerationConfig, generate_ids
    from lmforge.generate.core import encode_prompt
    from lmforge.quantize import QuantizeConfig, quantize
    work = scratch_dir("gguf-bench-")
    model_dir = build(args, work)
    files = {t: work / f"model-{t}.gguf" for t in ("f32", "q8_0")}
    for outtype, path in files.items():
        lmforge.export_gguf(model_dir, path, outtype=outtype)

    lm = lmforge.load(model_dir, device="cpu")
    prompt = encode_prompt(lm.tokenizer, args.prompt)
    cfg = GenerationConfig(max_new_tokens=args.new, greedy=True, compile=args.compile)
    ours = {"lmforge fp32": lm.module}
    for bits in (8, 4):                           # as a user gets them: `lmforge quantize`, then load
        quantize(QuantizeConfig(str(model_dir), str(work / f"int{bits}"), bits=bits))
        ours[f"lmforge int{bits}"] = lmforge.load(work / f"int{bits}", device="cpu").module
    theirs = {f"llama.cpp {t}": Llama(model_path=str(path), n_ctx=args.context, n_threads=args.threads,
                                      n_threads_batch=args.threads, n_batch=64, verbose=False)
              for t, path in files.items()}

    def lmforge_tokens(module) -> list[int]:
        return generate_ids(module, [prompt], cfg, eos_id=None)[0][0]

    def llamacpp_tokens(llm) -> list[int]:
        llm.reset()
        out = []
        for token in llm.generate(prompt, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0, reset=True):
            out.append(token)
            if len(out) == args.new:
                break
        return out

    text = "The for statement 说中文 🙂 naïve café — x² ∑\ttab  two spaces"
    llama_ids = theirs["llama.cpp f32"].tokenize(text.encode("utf-8"), add_bos=False, special=False)
    same_ids = llama_ids == lm.tokenizer.encode(text)
    print(f"tokenizer: llama.cpp encodes a Unicode text {'like' if same_ids else 'UNLIKE'} lmforge ({len(llama_ids)} "
          f"tokens)")
    # llama.cpp keeps its KV cache in f16 (an f32 one crashed llama-cpp-python 0.2.90 here), which moves logits
    # by ~1e-3: greedy tokens of a random model may part at a near-tie, so the logits are compared too
    exact = Llama(model_path=str(files["f32"]), n_ctx=args.context, n_threads=args.threads, logits_all=True,
                  verbose=False)
    ref, got = lmforge_tokens(lm.module), llamacpp_tokens(exact)
    exact.reset()
    exact.eval(prompt + ref)
    with torch.no_grad():
        ours_logits = lm.module(torch.tensor([prompt + ref])).float()[0]
    max_diff = (ours_logits - torch.tensor(exact.scores[: len(prompt) + len(ref)])).abs().max().item()
    print(f"logits over prompt + {len(ref)} tokens: max |lmforge - llama.cpp| = {max_diff:.2e} "
          f"(largest logit {ours_logits.abs().max().item():.2f})")
    same = next((i for i, (a, b) in enumerate(zip(ref, got)) if a != b), min(len(ref), len(got)))
    print(f"greedy tokens, lmforge fp32 vs llama.cpp f32 on the exported file: {same} of {args.new} equal"
          + ("" if same == args.new else f" (first difference at token {same})"))
    print(f"  lmforge:   {lm.tokenizer.decode(ref)[:120]!r}")
    print(f"  llama.cpp: {lm.tokenizer.decode(got)[:120]!r}")

    measures = {name: (lambda m=m: args.new / timed(lambda: lmforge_tokens(m), torch.device("cpu")))
                for name, m in ours.items()}
    measures |= {name: (lambda m=m: args.new / timed(lambda: llamacpp_tokens(m), torch.device("cpu")))
                 for name, m in theirs.items()}
    for fn in measures.values():                  # warmup
        fn()
    if args.compile is None:                      # generate's default: decode until it has chosen its step
        for name, m in ours.items():
            print(f"lmforge's default, {name}: {warm_up_default(m, measures[name])}")
    results = alternate(measures, args.rounds)
    config = lm.config
    shapes = dict(model=f"{args.arch if not args.model else Path(args.model).name} {config.n_layer}x{config.d_model}",
                  params=f"{sum(p.numel() for p in lm.module.parameters()) / 1e6:.1f}M", vocab=config.vocab_size,
                  batch=1, prompt=len(prompt), new_tokens=args.new, threads=args.threads, device="cpu",
                  lmforge_compiled="default" if args.compile is None else args.compile)
    row = report("batch-1 greedy decoding, lmforge vs llama.cpp (GGUF export)", shapes, results, "tokens/s", args,
                 {"greedy_tokens_equal": same, "tokenizer_equal": same_ids, "max_logit_diff": max_diff,
                  "file_bytes": {t: f.stat().st_size for t, f in files.items()}})
    best = row["best"]
    for ours_name, theirs_name in (("lmforge fp32", "llama.cpp f32"), ("lmforge int8", "llama.cpp q8_0"),
                                   ("lmforge int4", "llama.cpp q8_0")):
        print(f"  ratio {ours_name} / {theirs_name}: {best[ours_name] / best[theirs_name]:.2f}x")


if __name__ == "__main__":
    main()
