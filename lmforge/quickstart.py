"""`lmforge quickstart`: the whole pipeline on a corpus every Python install has offline —
the Python reference text in `pydoc_data.topics` (~465 KB of English) — prepare, train a
small GPT in minutes on a laptop CPU, report validation perplexity and samples."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .options import nested, option
from .train import TrainConfig

MARKER = ".lmforge-quickstart"
SAMPLE_PROMPTS = ["The for statement", "A class definition", "Exceptions are"]


# the training run of the quickstart: TrainConfig's fields with these defaults (the corpus is small: regularise)
QUICKSTART_TRAINING = {"out": "runs/quickstart", "data": "data/pydoc", "preset": "gpt-mini", "context_length": 128,
                       "dropout": 0.2, "batch_size": 32, "max_steps": 1500, "lr": 2e-3, "warmup_steps": 100,
                       "eval_interval": 250, "eval_iters": 10, "log_interval": 10, "sample_interval": 0}


@dataclass
class QuickstartConfig:
    tokenizer: str = option("bpe", "tokenizer kind: bpe or char")
    vocab_size: int = option(1024, "BPE vocabulary size")
    train: TrainConfig = nested(TrainConfig, QUICKSTART_TRAINING,
                                skip=("task", "init_from", "resume", "force", "stop_after"))


def pydoc_corpus() -> str:
    """The Python language reference topics shipped with the standard library."""
    from pydoc_data.topics import topics
    return "\n\n".join(topics[k].strip() for k in sorted(topics)) + "\n"


def quickstart(cfg: QuickstartConfig) -> dict:
    from .api import load
    from .data.shards import PrepareConfig, load_split, prepare
    from .evaluate.perplexity import perplexity_of_ids
    from .train import train
    from .train.checkpoint import checkpoint_step

    t0 = time.perf_counter()
    t = cfg.train
    out = Path(t.out)
    if checkpoint_step(out) is not None:
        if not (out / MARKER).is_file():
            raise ConfigError(f"{out} already holds a model that quickstart did not make; pass another --out")
        import shutil
        shutil.rmtree(out)
    data = Path(t.data)
    source = data / "source" / "pydoc_topics.txt"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_text(pydoc_corpus(), encoding="utf-8")
    print(f"[1/3] preparing {source} ({source.stat().st_size / 1e3:.0f} KB, the Python reference text)")
    meta = prepare(PrepareConfig(inputs=[str(source)], out=str(data), tokenizer=cfg.tokenizer,
                                 vocab_size=cfg.vocab_size, val_fraction=0.05, progress=t.progress))
    print(f"      {meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens, "
          f"{meta['bytes_per_token']:.2f} bytes/token, vocabulary {meta['vocab_size']}")
    print(f"[2/3] training {t.preset} for {t.max_steps} steps into {out}")
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text("made by lmforge quickstart; re-running quickstart replaces this directory\n")
    tcfg = dataclasses.replace(t, warmup_steps=min(t.warmup_steps, t.max_steps // 10))   # short runs warm up less
    summary = train(tcfg)
    print("[3/3] evaluating")
    lm = load(out, device=t.device)
    val = load_split(data, "val")
    ppl = perplexity_of_ids(lm.module, val.astype("int64"), stride=lm.config.context_length // 2)
    samples = lm.generate(SAMPLE_PROMPTS, max_new_tokens=60, temperature=0.8, top_k=40, seed=0)
    elapsed = time.perf_counter() - t0
    print(f"\nvalidation perplexity: {ppl['ppl']:.2f} over {ppl['tokens']:,} tokens "
          f"(loss {ppl['nll']:.3f} nats/token)")
    for prompt, text in zip(SAMPLE_PROMPTS, samples):
        print(f"\n--- {prompt}{text}")
    print(f"\ndone in {elapsed / 60:.1f} min. The model directory is {out}/ "
          f"(config.json, model.safetensors, tokenizer.json, metrics.jsonl, loss.png).")
    print("next:")
    print(f"  lmforge generate {out} \"The while statement\" --max-new-tokens 80")
    print(f"  lmforge eval {out} --text {source}")
    print("  lmforge prepare YOUR_TEXT.txt --out data/mine && lmforge train --data data/mine --out runs/mine")
    return {"val_ppl": ppl["ppl"], "val_loss": ppl["nll"], "samples": samples, "seconds": elapsed,
            "out": str(out), "train": summary}
