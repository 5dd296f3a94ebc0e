"""`lmforge quickstart`: the whole pipeline on a corpus every Python install has offline —
the Python reference text in `pydoc_data.topics` (~465 KB of English) — prepare, train a
small GPT in minutes on a laptop CPU, report validation perplexity and samples."""

from __future__ import annotations

import dataclasses
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError
from .options import at_least, nested, option, validate
from .runfile import TRAIN_CONFIG_FILE, read_run_file
from .safety import check_not_input, contents, resolved
from .train import TrainConfig

MARKER = ".lmforge-quickstart"
MARKER_TEXT = "made by lmforge quickstart; re-running quickstart replaces this directory\n"
SOURCE = "source/pydoc_topics.txt"
SAMPLE_PROMPTS = ["The for statement", "A class definition", "Exceptions are"]


# the training run of the quickstart: TrainConfig's fields with these defaults (the corpus is small: regularise, but
# not the attention weights: that sends CPU attention to its slow path, and without it the model is no worse).
# llama-mini's 800 steps end lower than gpt-mini's 1,500 at the same step cost (17.85 against 19.10, 3.9 min
# against 8.8 on 2 cores: docs/performance.md, "The quickstart in four minutes")
QUICKSTART_TRAINING = {"out": "runs/quickstart", "data": "data/pydoc", "preset": "llama-mini", "context_length": 128,
                       "dropout": 0.2, "attention_dropout": 0.0, "batch_size": 32, "max_steps": 800, "lr": 2e-3,
                       "warmup_steps": 80, "optimizer": "muon", "muon_lr": 0.03,
                       "eval_interval": 250, "eval_iters": 10, "log_interval": 10, "sample_interval": 0}


@dataclass
class QuickstartConfig:
    tokenizer: str = option("bpe", "tokenizer kind: bpe or char")
    vocab_size: int = option(1024, "BPE vocabulary size", check=at_least(1))
    train: TrainConfig = nested(TrainConfig, QUICKSTART_TRAINING,
                                skip=("task", "init_from", "resume", "force", "stop_after", "overwrite", "epochs"))

    def __post_init__(self) -> None:
        validate(self)


def pydoc_corpus() -> str:
    """The Python language reference topics shipped with the standard library."""
    from pydoc_data.topics import topics
    return "\n\n".join(topics[k].strip() for k in sorted(topics)) + "\n"


def _ours(path: Path, data: Path) -> bool:
    """Whether quickstart may replace `path`: it is absent or empty, holds quickstart's marker, or
    holds a run (perhaps interrupted) trained on quickstart's data directory. Anything else is
    refused: quickstart never replaces a model or data it did not make."""
    held = contents(path)
    if not held:
        return False
    if (path / MARKER).is_file():
        return True
    try:
        run = read_run_file(path / TRAIN_CONFIG_FILE)
        if isinstance(run, dict) and resolved(str(run.get("data", ""))) == resolved(data) and (data / MARKER).is_file():
            return True
    except (OSError, ValueError):
        pass
    raise ConfigError(f"{path} already holds {held} that quickstart did not make; pass another "
                      f"{'--data' if path == data else '--out'} (quickstart only replaces what it made)")


def quickstart(cfg: QuickstartConfig) -> dict:
    from .api import load
    from .data.shards import PrepareConfig, load_split, prepare
    from .evaluate.perplexity import perplexity_of_ids
    from .train import train

    t0 = time.perf_counter()
    t = cfg.train
    out, data = Path(t.out), Path(t.data)
    check_not_input(out, [("--data", data)], "--out")
    replace_out, replace_data = _ours(out, data), _ours(data, data)
    corpus = pydoc_corpus()
    with tempfile.TemporaryDirectory() as tmp:
        text_file = Path(tmp) / "pydoc_topics.txt"
        text_file.write_text(corpus, encoding="utf-8")
        print(f"[1/3] preparing the Python reference text ({text_file.stat().st_size / 1e3:.0f} KB) into {data}")
        meta = prepare(PrepareConfig(inputs=[str(text_file)], out=str(data), tokenizer=cfg.tokenizer,
                                     vocab_size=cfg.vocab_size, val_fraction=0.05, progress=t.progress,
                                     overwrite=replace_data),
                       extra_files={MARKER: MARKER_TEXT, SOURCE: corpus})
    source = data / SOURCE
    print(f"      {meta['train_tokens']:,} train + {meta['val_tokens']:,} val tokens, "
          f"{meta['bytes_per_token']:.2f} bytes/token, vocabulary {meta['vocab_size']}")
    print(f"[2/3] training {t.preset} for {t.max_steps} steps into {out}")
    tcfg = dataclasses.replace(t, warmup_steps=min(t.warmup_steps, t.max_steps // 10),   # short runs warm up less
                               overwrite=replace_out)
    summary = train(tcfg)
    (out / MARKER).write_text(MARKER_TEXT)
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
