"""What inspections cost a running batch: 16 streaming greedy clients of `lmforge serve`, alone and
while one more client sends inspections back to back (logit lens, direct logit attribution,
activation patching, integrated gradients, head scores, attention, in turn), and the ratio of
the batch's tokens/s between the two.

    python benchmarks/serve_inspect.py               # gpt-small shape (6 x 384, context 256)
    python benchmarks/serve_inspect.py --quick       # gpt-tiny, few tokens: checks that it runs

An inspection runs on the scheduler's thread between two decode steps (`lmforge/serve/jobs.py`),
so the batch stands still while it runs and goes on after it: the slowdown is the share of the
time the inspections take, and no inspection waits for the batch to finish. The runs alternate
(alone, beside inspections) `--repeat` times; each is reported by its median run.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from serve_throughput import build_model, free_port, level, start

TEXT = "The for statement in Python iterates over the items of any sequence, in order."
INSPECTIONS = [
    ("/inspect/lens", {"text": TEXT}),
    ("/inspect/dla", {"text": TEXT, "answer": "e", "wrong": "a"}),
    ("/inspect/patch", {"text": "The for statement", "corrupted": "The if statement!", "answer": " ", "wrong": "e"}),
    ("/inspect/attribute", {"text": TEXT, "steps": 16}),
    ("/inspect/heads", {"seq_len": 40}),
    ("/attention", {"text": TEXT}),
]


async def inspecting(url: str, stop: asyncio.Event) -> list[float]:
    """Inspections one after the other until `stop`: the seconds each took."""
    import httpx
    took = []
    async with httpx.AsyncClient(timeout=120) as client:
        while not stop.is_set():
            path, body = INSPECTIONS[len(took) % len(INSPECTIONS)]
            t0 = time.perf_counter()
            r = await client.post(url + path, json=body)
            if r.status_code != 200:
                raise RuntimeError(f"{path}: HTTP {r.status_code} {r.text[:300]}")
            took.append(time.perf_counter() - t0)
    return took


async def beside_inspections(url: str, args) -> tuple[dict, list[float]]:
    stop = asyncio.Event()
    inspector = asyncio.create_task(inspecting(url, stop))
    await asyncio.sleep(0.05)                         # the first inspection is under way
    batch = await level(url, "model", args.clients, args.requests, args.tokens, {"ignore_eos": True})
    stop.set()
    return batch, await inspector


def measure(url: str, args) -> tuple[list[float], list[float], list[float]]:
    """(tokens/s alone, tokens/s beside inspections, inspection seconds), `--repeat` runs each."""
    asyncio.run(level(url, "model", 4, 4, 4, {"ignore_eos": True}))                       # warm-up
    asyncio.run(beside_inspections(url, argparse.Namespace(**{**vars(args), "requests": 4, "tokens": 4})))
    alone, beside, took = [], [], []
    for _ in range(args.repeat):
        alone.append(asyncio.run(level(url, "model", args.clients, args.requests, args.tokens,
                                       {"ignore_eos": True}))["tokens_per_s"])
        batch, seconds = asyncio.run(beside_inspections(url, args))
        beside.append(batch["tokens_per_s"])
        took += seconds
    return alone, beside, took


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="gpt-small")
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--clients", type=int, default=16, help="streaming clients of the batch")
    p.add_argument("--requests", type=int, default=32, help="requests of the batch per run")
    p.add_argument("--tokens", type=int, default=64, help="new tokens per request")
    p.add_argument("--threads", type=int, default=2, help="torch threads of the server")
    p.add_argument("--repeat", type=int, default=3, help="runs of each (alternating); the median is reported")
    p.add_argument("--quick", action="store_true", help="gpt-tiny, 8 tokens, 16 requests, one run")
    args = p.parse_args()
    if args.quick:
        args.preset, args.context, args.tokens, args.requests, args.repeat = "gpt-tiny", 128, 8, 16, 1
    work = Path(tempfile.mkdtemp(prefix="serve-inspect-"))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    proc = None
    try:
        build_model(work, args.preset, args.context)
        url = f"http://127.0.0.1:{free_port()}"
        proc = start([sys.executable, "-m", "lmforge", "serve", str(work / "model"), "--port", url.rsplit(":", 1)[1],
                      "--device", "cpu", "--max-batch-size", str(args.clients)], url, env)
        if proc is None:
            sys.exit("the server did not start")
        alone, beside, took = measure(url, args)
        a, b = statistics.median(alone), statistics.median(beside)
        print(f"{args.preset} (random weights, context {args.context}), {args.clients} streaming clients, "
              f"{args.requests} requests x {args.tokens} tokens per run, {args.threads} threads, {os.cpu_count()} cores")
        print(f"batch alone:              {a:8.1f} tokens/s (runs: {', '.join(f'{x:.0f}' for x in alone)})")
        print(f"batch beside inspections: {b:8.1f} tokens/s (runs: {', '.join(f'{x:.0f}' for x in beside)})")
        print(f"inspections: {len(took)}, each {1000 * statistics.median(took):.0f} ms (median; "
              f"{1000 * max(took):.0f} ms at most)")
        print(f"slowdown of the batch while inspections run: {a / b:.2f}x")
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=20)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
