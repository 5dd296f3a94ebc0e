"""Peak memory per process of the one training loop under DDP and FSDP, with and without
activation checkpointing (gpt-small shapes by default: 6 layers x 384, context 256).

    python benchmarks/memory.py                  # 2 processes, batch 8, 3 steps, CPU (gloo) or GPU (NCCL)
    python benchmarks/memory.py --preset gpt-tiny --steps 2     # a quick check that it runs

Each configuration is a fresh `torchrun --standalone --nproc_per_node N` job that runs
`Trainer.fit` (the real loop: strategy, optimizer, checkpoint at the end) on random tokens
and reports, per process: the bytes of the parameters, gradients and AdamW state it holds
(its shards under FSDP; measured from the tensors after a backward pass), its peak resident
memory (CPU: the process's maximum RSS, which includes ~0.3 GiB of imports and process group; also
shown over that baseline) and on a GPU the peak allocated CUDA memory.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

CONFIGS = [("ddp", False), ("ddp", True), ("fsdp", False), ("fsdp", True)]


def _local_bytes(t: torch.Tensor | None) -> int:
    if t is None:
        return 0
    t = t.to_local() if hasattr(t, "to_local") else t
    return t.numel() * t.element_size()


def worker(args) -> None:
    """One process of one configuration (started by torchrun)."""
    from lmforge.config import get_preset
    from lmforge.model import build_model
    from lmforge.tasks import Task
    from lmforge.train import TrainConfig, Trainer
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    from lmforge.train.distributed import init_distributed
    init_distributed(args.device, args.strategy)                             # the process group, before the baseline
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024     # after imports and joining the group
    config = get_preset(args.preset, dropout=0.0)
    T, V = config.context_length, config.vocab_size

    class RandomTokens(Task):
        """Windows of pseudo-random tokens (a function of the example index): no data files needed."""
        name = "random-tokens"

        def sample(self, split, n, generator):
            return torch.randint(0, 1 << 30, (n,), generator=generator)

        def collate(self, split, indices):
            g = torch.Generator().manual_seed(int(indices.sum()))
            x = torch.randint(0, V, (len(indices), T + 1), generator=g)
            return {"x": x[:, :-1], "y": x[:, 1:]}

        def loss(self, model, batch):
            return F.cross_entropy(model(batch["x"]).flatten(0, 1).float(), batch["y"].flatten())

    held: dict[str, int] = {}
    grads: list[int] = []

    def count_grads(optimizer, *_):
        grads.append(sum(_local_bytes(p.grad) for g in optimizer.param_groups for p in g["params"]))

    def count_state(optimizer, *_):
        """The parameter and optimizer-state bytes of this process after the step (the last call wins)."""
        held["params"] = sum(_local_bytes(p) for g in optimizer.param_groups for p in g["params"])
        held["optimizer"] = sum(_local_bytes(v) for s in optimizer.state.values() for v in s.values()
                                if isinstance(v, torch.Tensor) and v.dim() > 0)

    register_optimizer_step_pre_hook(count_grads)
    register_optimizer_step_post_hook(count_state)
    cfg = TrainConfig(data="-", out=args.out, preset=args.preset, batch_size=args.batch, max_steps=args.steps,
                      warmup_steps=1, eval_interval=args.steps, eval_iters=1, log_interval=args.steps,
                      sample_interval=0, device=args.device, strategy=args.strategy, progress=False,
                      activation_checkpointing=args.activation_checkpointing)
    torch.manual_seed(0)
    trainer = Trainer(cfg, build_model(config), RandomTokens(), config)
    trainer.fit()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    row = {"rank": trainer.dist.rank, "params": held["params"], "grads": max(grads), "optimizer": held["optimizer"],
           "peak_rss": peak, "rss_over_baseline": peak - baseline}
    if trainer.device.type == "cuda":
        row["cuda_peak_allocated"] = torch.cuda.max_memory_allocated(trainer.device)
    rows = [None] * trainer.dist.world_size
    torch.distributed.all_gather_object(rows, row)
    if trainer.dist.is_main:
        print("MEMORY " + json.dumps(rows), flush=True)
    torch.distributed.destroy_process_group()


def run(args) -> list[dict]:
    results = []
    for strategy, ac in CONFIGS:
        with tempfile.TemporaryDirectory() as out:
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(args.nproc),
                   __file__, "--worker", "--strategy", strategy, "--out", out, "--preset", args.preset,
                   "--batch", str(args.batch), "--steps", str(args.steps), "--device", args.device,
                   *(["--activation-checkpointing"] if ac else [])]
            env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
            done = subprocess.run(cmd, env=env, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"{strategy} failed:\n{done.stderr[-3000:]}")
            line = next(x for x in done.stdout.splitlines() if x.startswith("MEMORY "))
            ranks = json.loads(line[len("MEMORY "):])
            results.append({"strategy": strategy, "activation_checkpointing": ac, "ranks": ranks})
    return results


def report(args, results: list[dict]) -> None:
    mib = 2 ** 20
    from lmforge.config import get_preset
    c = get_preset(args.preset)
    print(f"{args.preset} ({c.n_layer} layers x {c.d_model}, context {c.context_length}, vocab {c.vocab_size}), "
          f"{args.nproc} processes, batch {args.batch} per process, {args.steps} steps, {args.device}; "
          f"MiB per process (the largest rank)")
    print(f"| strategy | act. ckpt | params | grads | AdamW state | params+grads+state | peak RSS | "
          f"RSS over baseline |{' CUDA peak |' if 'cuda_peak_allocated' in results[0]['ranks'][0] else ''}")
    print("|---|---|---|---|---|---|---|---|" + ("---|" if "cuda_peak_allocated" in results[0]["ranks"][0] else ""))
    for r in results:
        top = {k: max(x[k] for x in r["ranks"]) for k in r["ranks"][0] if k != "rank"}
        state = max(x["params"] + x["grads"] + x["optimizer"] for x in r["ranks"])
        cells = [r["strategy"], "on" if r["activation_checkpointing"] else "off", top["params"] / mib,
                 top["grads"] / mib, top["optimizer"] / mib, state / mib, top["peak_rss"] / mib,
                 top["rss_over_baseline"] / mib]
        if "cuda_peak_allocated" in top:
            cells.append(top["cuda_peak_allocated"] / mib)
        print("| " + " | ".join(f"{c:.1f}" if isinstance(c, float) else c for c in cells) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="gpt-small")
    p.add_argument("--nproc", type=int, default=2)
    p.add_argument("--batch", type=int, default=8, help="sequences per micro-batch per process")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", default=None, help="also write the results to this JSON file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--strategy", default="fsdp", help=argparse.SUPPRESS)
    p.add_argument("--activation-checkpointing", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return
    results = run(args)
    report(args, results)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))


if __name__ == "__main__":
    main()
