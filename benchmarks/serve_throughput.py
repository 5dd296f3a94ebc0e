"""Serving throughput: aggregate generated tokens/s and time-to-first-token of `lmforge serve`
at 1, 4 and 16 concurrent streaming clients, against the same requests one at a time, and
against `transformers serve` on the exported Hugging Face model in the same run (when it
starts offline). lmforge runs twice: with its eager step throughout (`--no-compile`), and with
its default, measured after `--warmup` unmeasured runs of the levels (on a CPU the default
compiles the step of a row count once that has decoded eagerly for 5 s).

    python benchmarks/serve_throughput.py                 # gpt-small shape (6 x 384, context 256)
    python benchmarks/serve_throughput.py --quick         # gpt-tiny, few tokens: checks that it runs

Every request is a streaming /v1/completions call, greedy, `--tokens` new tokens after a short
prompt (the model is random, its end-of-text token never the greedy choice, so every request
produces exactly that many). Each level sends the same `--requests` requests: c clients, each
sending its share one after the other. Tokens are counted from the streamed chunks. The levels
run `--repeat` times, interleaved, and each is reported by its median run. The clients are
plain asyncio connections: they share the 2 cores with the server they measure, and httpx
took about 4 times their CPU (0.87 s against 0.21 s for 4,096 streamed tokens), all of it
taken from the server under test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

PROMPTS = ["The for statement", "A class is", "def main():", "import sys", "The while loop", "return value",
           "Exceptions are", "A list holds", "The with statement", "Modules can", "print(", "x = [",
           "Functions take", "try:", "lambda x:", "The dict type"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_model(out: Path, preset: str, context: int) -> Path:
    """A random decoder of `preset`'s shape on a char tokenizer (end-of-text never greedy, so each
    request writes all its tokens, one character each: streamed text counts the tokens)."""
    from lmforge.api import Model
    from lmforge.config import get_preset
    from lmforge.data.shards import PrepareConfig, prepare
    from lmforge.model import build_model as build
    from lmforge.quickstart import pydoc_corpus
    from lmforge.tokenizers import Tokenizer
    corpus = out / "corpus.txt"
    corpus.write_text(pydoc_corpus()[:200_000], encoding="utf-8")
    prepare(PrepareConfig(inputs=[str(corpus)], out=str(out / "data"), tokenizer="char", progress=False))
    tokenizer = Tokenizer.load(out / "data")
    torch.manual_seed(0)
    config = get_preset(preset, vocab_size=tokenizer.vocab_size, context_length=context)
    module = build(config).eval()
    unwanted = [i for i in range(tokenizer.vocab_size)      # special and byte-fallback tokens: one character per token
                if i in tokenizer.special_ids or tokenizer.id_to_token(i).startswith("<0x")]
    with torch.no_grad():
        module.lm_head.weight[unwanted] = 0.0                 # logit 0, never the greedy choice (tied: embeddings too)
    lm = Model(module, config, tokenizer)
    lm.save(out / "model")
    lm.save(out / "hf", format="hf")
    return out


async def one_request(url: str, model: str, prompt: str, tokens: int, extra: dict) -> tuple[float, int, float]:
    """(time to first token, tokens received, total time) of one streaming completion, over a
    plain asyncio connection: the load generator shares the 2 cores with the server it
    measures, so it parses no more than it must (httpx would take about 4x its CPU)."""
    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"model": model, "prompt": prompt, "max_tokens": tokens, "temperature": 0, "stream": True,
                       **extra}).encode()
    t0 = time.perf_counter()
    first, n = None, 0
    reader, writer = await asyncio.open_connection(host, int(port))
    try:
        writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (host.encode(), len(body), body))
        status = await reader.readline()
        if b" 200 " not in status:
            raise RuntimeError(f"HTTP {status.decode().strip()}: {(await reader.read())[:300]!r}")
        headers = {}
        while (line := await reader.readline()) not in (b"\r\n", b""):
            key, _, value = line.decode().partition(":")
            headers[key.strip().lower()] = value.strip().lower()
        chunked = headers.get("transfer-encoding") == "chunked"
        buffer = b""
        while True:
            if chunked:
                size = int((await reader.readline()).split(b";")[0], 16)
                if size == 0:
                    break
                data = await reader.readexactly(size + 2)
                buffer += data[:-2]
            else:
                data = await reader.read(65536)
                if not data:
                    break
                buffer += data
            *events, buffer = buffer.split(b"\n\n")
            for event in events:
                for line in event.split(b"\n"):
                    if not line.startswith(b"data: ") or line == b"data: [DONE]":
                        continue
                    for choice in json.loads(line[6:]).get("choices", []):
                        if choice.get("text"):
                            n += len(choice["text"])           # one character per token (see build_model)
                            first = first or time.perf_counter() - t0
    finally:
        writer.close()
    return first or float("nan"), n, time.perf_counter() - t0


async def level(url: str, model: str, clients: int, requests: int, tokens: int, extra: dict) -> dict:
    queue = list(range(requests))
    results = []

    async def client_loop():
        while queue:
            i = queue.pop(0)
            results.append(await one_request(url, model, PROMPTS[i % len(PROMPTS)], tokens, extra))

    t0 = time.perf_counter()
    await asyncio.gather(*(client_loop() for _ in range(clients)))
    wall = time.perf_counter() - t0
    ttft = sorted(r[0] for r in results)
    generated = sum(r[1] for r in results)
    return {"clients": clients, "requests": requests, "tokens": generated, "seconds": wall,
            "tokens_per_s": generated / wall, "ttft_p50": statistics.median(ttft),
            "ttft_p95": ttft[min(len(ttft) - 1, int(0.95 * len(ttft)))]}


def start(cmd: list[str], url: str, env: dict, timeout: float = 300) -> subprocess.Popen | None:
    import httpx
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            print(f"  {cmd[0]} exited: {proc.stderr.read()[-1500:]}")
            return None
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.terminate()
    print(f"  {' '.join(cmd[:3])} did not answer /health within {timeout:.0f} s")
    return None


def run_server(name: str, cmd: list[str], url: str, model: str, args, env: dict, extra: dict) -> list[dict]:
    print(f"\n{name}: {' '.join(cmd)}")
    proc = start(cmd, url, env)
    if proc is None:
        return []
    rows = []
    try:
        asyncio.run(level(url, model, 1, 2, 4, extra))                           # warm-up
        for _ in range(args.warmup if name == "lmforge serve" else 0):     # the default's eager budget, spent
            for clients in args.clients:
                asyncio.run(level(url, model, clients, args.requests, args.tokens, extra))
        runs = {clients: [] for clients in args.clients}
        for _ in range(args.repeat):        # the levels interleaved, so a slow spell of the machine hits all
            for clients in args.clients:
                runs[clients].append(asyncio.run(level(url, model, clients, args.requests, args.tokens, extra)))
        for clients, results in runs.items():
            row = {"server": name, **sorted(results, key=lambda r: r["tokens_per_s"])[len(results) // 2],
                   "all_tokens_per_s": [round(r["tokens_per_s"], 1) for r in results]}
            rows.append(row)
            print(f"  {clients:>2} clients: {row['tokens_per_s']:8.1f} tokens/s (median of "
                  f"{', '.join(f'{x:.0f}' for x in row['all_tokens_per_s'])}), time to first token p50 "
                  f"{1000 * row['ttft_p50']:7.1f} ms, p95 {1000 * row['ttft_p95']:7.1f} ms")
    except Exception as e:          # a peer that fails mid-run is reported, not fatal
        print(f"  failed: {type(e).__name__}: {e}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="gpt-small")
    p.add_argument("--context", type=int, default=256)
    p.add_argument("--tokens", type=int, default=64, help="new tokens per request")
    p.add_argument("--requests", type=int, default=32, help="requests per concurrency level")
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--threads", type=int, default=2, help="torch threads of each server")
    p.add_argument("--repeat", type=int, default=3, help="runs of every level (interleaved); the median is reported")
    p.add_argument("--warmup", type=int, default=2,
                   help="unmeasured runs of every level before lmforge's default is measured: on a CPU it compiles "
                        "the step of a row count once that has decoded eagerly for 5 s")
    p.add_argument("--no-transformers", action="store_true", help="skip `transformers serve`")
    p.add_argument("--quick", action="store_true", help="gpt-tiny, 8 tokens, 8 requests")
    p.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = p.parse_args()
    if args.quick:
        args.preset, args.context, args.tokens, args.requests, args.repeat, args.warmup = "gpt-tiny", 64, 8, 8, 1, 0
    work = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}
    try:
        build_model(work, args.preset, args.context)
        print(f"{args.preset} (random weights, context {args.context}), {args.requests} requests x {args.tokens} "
              f"tokens per level, {args.threads} threads per server, {os.cpu_count()} cores")
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        lmforge = [sys.executable, "-m", "lmforge", "serve", str(work / "model"), "--device", "cpu",
                   "--max-batch-size", "16"]
        rows = run_server("lmforge serve --no-compile", [*lmforge, "--no-compile", "--port", str(port)],
                          url, "model", args, env, {"ignore_eos": True})
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        rows += run_server("lmforge serve", [*lmforge, "--port", str(port)], url, "model", args, env,
                           {"ignore_eos": True})
        if not args.no_transformers and shutil.which("transformers"):
            for batching in ("--no-continuous-batching", "--continuous-batching"):
                port = free_port()
                url = f"http://127.0.0.1:{port}"
                rows += run_server(f"transformers serve {batching}",
                                   ["transformers", "serve", str(work / "hf"), "--port", str(port), batching],
                                   url, str(work / "hf"), args, env, {})
        elif not args.no_transformers:
            print("\ntransformers serve: the `transformers` command is not installed; not measured")
        base = {r["server"]: r["tokens_per_s"] for r in rows if r["clients"] == 1}
        print("\nserver | clients | tokens/s | vs 1 client | TTFT p50 ms | TTFT p95 ms")
        for r in rows:
            print(f"{r['server']} | {r['clients']} | {r['tokens_per_s']:.1f} | "
                  f"{r['tokens_per_s'] / base[r['server']]:.2f}x | {1000 * r['ttft_p50']:.1f} | "
                  f"{1000 * r['ttft_p95']:.1f}")
        ours = {r["clients"]: r["tokens_per_s"] for r in rows if r["server"] == "lmforge serve"}
        for r in rows:
            if r["server"] != "lmforge serve" and r["clients"] in ours:      # the eager step's row included
                print(f"ratio lmforge / {r['server']} at {r['clients']} clients: "
                      f"{ours[r['clients']] / r['tokens_per_s']:.2f}x")
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
