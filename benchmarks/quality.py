"""Best model per CPU-minute: lmforge's trainer (its defaults: Muon) against Hugging Face
`transformers`' `Trainer` (AdamW, cosine) on the same GPT-2-shaped model, the same tokenized
data and the same wall-clock budget. Prints both validation losses, measured by one function on
the same windows, and how much of its budget lmforge needed to reach the Trainer's final loss.

    python benchmarks/quality.py                    # the quickstart corpus, gpt-mini shape, 3 minutes each
    python benchmarks/quality.py --minutes 5 --data data/mine --preset gpt-small

Each framework's step count is its budget divided by its own step time (measured first), so
each runs a whole warmup + cosine schedule inside the budget. Needs `transformers` and
`accelerate` (benchmark-only). Run it alone on the machine: it times both.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def val_windows(val: np.ndarray, T: int, n: int, seed: int) -> torch.Tensor:
    """n windows of T + 1 tokens drawn as lmforge's evaluation draws them (seed + 1)."""
    gen = torch.Generator().manual_seed(seed + 1)
    starts = torch.randint(len(val) - T, (n,), generator=gen)
    return torch.from_numpy(np.stack([val[i: i + T + 1] for i in starts.tolist()]).astype(np.int64))


@torch.no_grad()
def mean_nll(logits_of, windows: torch.Tensor, batch: int = 32) -> float:
    """Mean next-token cross-entropy of the windows: inputs w[:T], targets w[1:]."""
    total, count = 0.0, 0
    for i in range(0, len(windows), batch):
        w = windows[i: i + batch]
        logits = logits_of(w[:, :-1]).float()
        total += F.cross_entropy(logits.reshape(-1, logits.size(-1)), w[:, 1:].reshape(-1), reduction="sum").item()
        count += w[:, 1:].numel()
    return total / count


def hf_model(cfg, dropout: float):
    from transformers import GPT2Config, GPT2LMHeadModel
    hf = GPT2Config(n_layer=cfg.n_layer, n_embd=cfg.d_model, n_head=cfg.n_head, n_positions=cfg.context_length,
                    vocab_size=cfg.vocab_size, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
                    bos_token_id=None, eos_token_id=None, use_cache=False)
    return GPT2LMHeadModel(hf)


class Windows(torch.utils.data.Dataset):
    """Random training windows (seeded), as many as the run draws."""

    def __init__(self, train: np.ndarray, T: int, n: int, seed: int):
        gen = torch.Generator().manual_seed(seed)
        self.train, self.T = train, T
        self.starts = torch.randint(len(train) - T, (n,), generator=gen).tolist()

    def __len__(self):
        return len(self.starts)

    def __getitem__(self, i):
        x = torch.from_numpy(self.train[self.starts[i]: self.starts[i] + self.T].astype(np.int64))
        return {"input_ids": x, "labels": x}


def run_hf(cfg, data, args, steps: int, work: Path, windows: torch.Tensor):
    """Trainer for `steps` steps; returns (seconds, final val loss, [(step, seconds, val loss)])."""
    from transformers import Trainer, TrainerCallback, TrainingArguments
    torch.manual_seed(args.seed)
    model = hf_model(cfg, args.dropout)
    curve, clock = [], {"eval": 0.0}

    class Curve(TrainerCallback):
        def on_step_end(self, targs, state, control, model=None, **kw):
            if state.global_step % max(1, steps // 10) == 0 or state.global_step == steps:
                t = time.perf_counter()
                model.eval()
                loss = mean_nll(lambda x: model(input_ids=x).logits, windows)
                model.train()
                clock["eval"] += time.perf_counter() - t
                curve.append((state.global_step, time.perf_counter() - clock["t0"] - clock["eval"], loss))

    targs = TrainingArguments(output_dir=str(work / "hf"), max_steps=steps, per_device_train_batch_size=args.batch_size,
                              learning_rate=args.hf_lr, lr_scheduler_type="cosine", warmup_steps=max(1, steps // 15),
                              weight_decay=0.1, adam_beta1=0.9, adam_beta2=0.95, max_grad_norm=1.0,
                              logging_steps=max(1, steps // 10), save_strategy="no", report_to=[], use_cpu=args.cpu,
                              dataloader_num_workers=0, seed=args.seed, disable_tqdm=True)
    trainer = Trainer(model=model, args=targs, train_dataset=Windows(data["train"], cfg.context_length,
                                                                     steps * args.batch_size, args.seed),
                      callbacks=[Curve()])
    clock["t0"] = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - clock["t0"] - clock["eval"]
    return seconds, curve[-1][2], curve


def run_lmforge(data_dir: str, args, steps: int, work: Path, windows: torch.Tensor, curve_points: int = 10):
    """lmforge's trainer for `steps` steps; returns (training seconds, final val loss, curve). The
    seconds leave out evaluations and checkpoints, as the Trainer's leave out its evaluations:
    they are the sum of the logged intervals, which the trainer times without them."""
    from lmforge.api import load
    from lmforge.config import ModelOverridesConfig
    from lmforge.train import TrainConfig, train
    out = work / f"lmforge-{steps}"
    cfg = TrainConfig(data=data_dir, out=str(out), preset=args.preset, batch_size=args.batch_size, max_steps=steps,
                      warmup_steps=max(1, steps // 15), eval_interval=max(1, steps // curve_points),
                      save_interval=steps, log_interval=max(1, steps // 50),
                      eval_iters=max(1, len(windows) // args.batch_size),
                      model=ModelOverridesConfig(dropout=args.dropout), lr=args.lmforge_lr, muon_lr=args.muon_lr,
                      sample_interval=0, progress=False, device="cuda" if not args.cpu else "cpu", overwrite=True)
    train(cfg)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in rows if r["kind"] == "train"]
    seconds = sum((b["tokens"] - a["tokens"]) / b["tokens_per_s"] for a, b in zip([{"tokens": 0}] + trained, trained))
    lm = load(out, device="cpu")
    lm.module.eval()
    final = mean_nll(lambda x: lm.module(x), windows)
    curve = [(r["step"], seconds * r["step"] / steps, r["val_loss"]) for r in rows if r["kind"] == "eval"]
    return seconds, final, curve


def step_time(fn, short: int = 10, long: int = 60) -> float:
    """Seconds per training step without start-up: the difference of a short and a long run
    (`fn(steps)` returns its training seconds)."""
    return max(1e-3, (fn(long) - fn(short)) / (long - short))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None, help="prepared data directory (default: the quickstart corpus)")
    p.add_argument("--preset", default="gpt-mini", help="a GPT-2-shaped lmforge preset")
    p.add_argument("--minutes", type=float, default=3.0, help="wall-clock training budget of each framework")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--dropout", type=float, default=0.2)
    p.add_argument("--hf-lr", type=float, default=2e-3, help="the Trainer's AdamW rate (2e-3: best of 1e-3..3e-3 "
                                                            "for this shape on the quickstart corpus)")
    p.add_argument("--lmforge-lr", type=float, default=2e-3, help="lmforge's AdamW rate (embeddings, head, norms)")
    p.add_argument("--muon-lr", type=float, default=0.03)
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--eval-windows", type=int, default=640)
    p.add_argument("--cpu", action=argparse.BooleanOptionalAction, default=True)
    args = p.parse_args()
    from common import quickstart_data, scratch_dir
    from lmforge.config import get_preset
    from lmforge.data.shards import load_splits
    work = scratch_dir("quality-bench-")
    data_dir = args.data or quickstart_data(work)
    meta = json.loads((Path(data_dir) / "meta.json").read_text())
    cfg = get_preset(args.preset, vocab_size=meta["vocab_size"])
    if cfg.family != "decoder" or cfg.position != "learned":
        raise SystemExit(f"--preset {args.preset} is not GPT-2-shaped (a decoder with learned positions)")
    data = load_splits(data_dir, cfg.context_length + 1, "the context")
    windows = val_windows(data["val"], cfg.context_length, args.eval_windows, args.seed)

    budget = args.minutes * 60
    hf_step = step_time(lambda n: run_hf(cfg, data, args, n, work, windows[:8])[0])
    lm_step = step_time(lambda n: run_lmforge(data_dir, args, n, work, windows[:8], curve_points=1)[0])
    hf_steps, lm_steps = max(10, int(budget / hf_step)), max(10, int(budget / lm_step))
    print(f"step time: transformers Trainer {hf_step * 1e3:.0f} ms, lmforge {lm_step * 1e3:.0f} ms "
          f"-> {hf_steps} and {lm_steps} steps in {args.minutes:g} min")
    hf_s, hf_loss, _ = run_hf(cfg, data, args, hf_steps, work, windows)
    lm_s, lm_loss, lm_curve = run_lmforge(data_dir, args, lm_steps, work, windows)
    reach = next((t for _, t, v in lm_curve if v <= hf_loss), None)
    at_hf_time = [v for _, t, v in lm_curve if t <= hf_s * 1.001]
    shape = f"{args.preset} ({cfg.n_layer} x {cfg.d_model}, context {cfg.context_length}), batch {args.batch_size}"
    print(f"\nvalidation loss at equal wall-clock ({shape}, {torch.get_num_threads()} threads)")
    print(f"{'':<34} {'steps':>6} {'seconds':>8} {'val loss':>9} {'val ppl':>8}")
    for name, steps, secs, loss in [("transformers Trainer (AdamW)", hf_steps, hf_s, hf_loss),
                                    ("lmforge (Muon, its defaults)", lm_steps, lm_s, lm_loss)]:
        print(f"{name:<34} {steps:>6} {secs:>8.0f} {loss:>9.4f} {math.exp(loss):>8.2f}")
    print(f"val-loss ratio lmforge / transformers: {lm_loss / hf_loss:.3f} (lower is better)")
    if at_hf_time and lm_s > hf_s * 1.02:
        print(f"(the Trainer trained {hf_s:.0f} s of its budget: lmforge's validation loss at that time was "
              f"{at_hf_time[-1]:.4f}, by its own evaluation on the same windows)")
    if reach is not None:
        print(f"lmforge reached the Trainer's final loss after {reach:.0f} s: {hf_s / reach:.2f}x less time")
    else:
        print("lmforge did not reach the Trainer's final loss within its budget")


if __name__ == "__main__":
    main()
