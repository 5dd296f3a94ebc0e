"""Muon vs AdamW: the same model, data and schedule; report validation loss along the way and
how many steps Muon needs to reach AdamW's final validation loss.

    python benchmarks/muon_vs_adamw.py                       # the quickstart corpus, gpt-mini, 600 steps
    python benchmarks/muon_vs_adamw.py --data data/mine --preset gpt-small --steps 1000
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def val_curve(out: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["val_loss"] for r in rows if r["kind"] == "eval"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None, help="prepared data directory (default: the quickstart corpus)")
    p.add_argument("--preset", default="gpt-mini")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--eval-interval", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--context-length", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3, help="AdamW lr (and Muon's lr for the non-matrix params)")
    p.add_argument("--muon-lr", type=float, default=0.02)
    args = p.parse_args()
    from common import quickstart_data, scratch_dir
    from lmforge.config import ModelOverridesConfig
    from lmforge.train import TrainConfig, train
    work = scratch_dir("muon-bench-")
    data = args.data or quickstart_data(work)
    curves = {}
    for opt in ("adamw", "muon"):
        cfg = TrainConfig(data=data, out=str(work / opt), preset=args.preset,
                          model=ModelOverridesConfig(context_length=args.context_length),
                          batch_size=args.batch_size, max_steps=args.steps, lr=args.lr, muon_lr=args.muon_lr,
                          optimizer=opt, warmup_steps=args.steps // 10, eval_interval=args.eval_interval,
                          eval_iters=10, sample_interval=0, device="cpu", progress=False)
        train(cfg)
        curves[opt] = val_curve(work / opt)
    print(f"\nvalidation loss, {args.preset}, {args.steps} steps, batch {args.batch_size} x {args.context_length}")
    print(f"{'step':>6} {'adamw':>8} {'muon':>8}")
    for step in curves["adamw"]:
        print(f"{step:>6} {curves['adamw'][step]:>8.4f} {curves['muon'][step]:>8.4f}")
    target = curves["adamw"][args.steps]
    reached = next((s for s, v in curves["muon"].items() if v <= target), None)
    print(f"AdamW's final val loss {target:.4f}: Muon reaches it at step "
          f"{reached if reached is not None else 'never'} of {args.steps}")


if __name__ == "__main__":
    main()
