"""The GPU suite: one command for a short GPU lease that measures every GPU figure issue 25 asks
for, in one run of at most ~8 minutes, and writes one JSON of results.

    PYTHONPATH=. python3 benchmarks/gpu_suite.py --nanogpt .nanogpt --wheels .whl   # on a lent GPU
    python benchmarks/gpu_suite.py --dry-run            # CPU: tiny shapes, every part's code path
    python benchmarks/gpu_suite.py --only decode        # one part (plus env)

Parts, in the order they run (a part that no longer fits the time left is skipped, with the reason):

    env          versions, the packages lmforge needs, the copy bandwidth and bf16 matmul rate
                 measured on the card, whether vLLM is there
    train        GPT-2 124M, bf16 autocast, compiled, fused AdamW, batch 12 x 1024: lmforge's loop
                 (`lmforge.train.train`) and nanoGPT's own train.py on the same synthetic tokens;
                 tokens/s and MFU (one FLOP count, one peak, for both)
    decode       Llama 1.1B shapes (llama-1b), bf16, batch 1 and 8: lmforge's compiled decode step
                 (CUDA graphs) against transformers' static cache (which it compiles), and against
                 the memory-bandwidth limit (bytes read per step / the measured copy bandwidth)
    correctness  GPT-2 124M trained 50 steps in bf16 and in fp32 from the same start (losses within
                 tolerance); greedy decoding of llama-1b-shaped weights (bf16, then fp32) for 32
                 tokens, lmforge against transformers on the same weights (`Model.save(format="hf")`)
    memory       one torchrun process: the eager loop plain, with activation checkpointing, and under
                 --strategy fsdp (one GPU: FSDP's overhead), tokens/s and peak CUDA memory each
    serve        `lmforge serve` at 1 / 16 / 64 streaming clients (benchmarks/serve_throughput.py's
                 client), and `vllm serve` on the same model exported to Hugging Face format when a
                 vLLM is given (--vllm-python) or on the PATH; else the reason it was not measured

Each part runs in its own process group (this script with --worker), under a time limit taken from
the budget; a worker prints `RESULT {json}` lines as figures arrive, so a part cut off by its limit
keeps what it finished, and the JSON is rewritten after every part. A dry run runs the workers in
this process instead (but for the memory part's torchrun): it checks code paths, quickly. The
machine's own torch and packages are used (the suite runs from the source tree: PYTHONPATH=.);
`--wheels DIR` installs the wheels in DIR first (what lmforge needs that the machine lacks; timed).
nanoGPT is not on PyPI: --nanogpt takes the folder of a checkout (train.py, model.py,
configurator.py), never committed here.

benchmarks/run_all.py stays the local command (every side-by-side script, CPU or GPU shapes); this
suite is the one command for a lent GPU: budgeted, self-contained, one JSON. It reuses common.py
(the transformers peers' timing helpers) and serve_throughput.py (the model and the streaming client).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PARTS = ("env", "train", "decode", "correctness", "memory", "serve")
H200_DATASHEET = {"bandwidth_Bps": 4.8e12, "bf16_dense_flops": 989e12}


@dataclass
class Job:
    part: str
    worker: str
    budget_s: float          # expected seconds on a lent H200, compile included (the plan)
    torchrun: bool = False


JOBS = [Job("env", "env", 20), Job("train", "train", 80), Job("train", "nanogpt", 80), Job("decode", "decode", 150),
        Job("correctness", "correctness", 40), Job("memory", "memory", 45, torchrun=True), Job("serve", "serve", 65)]

# ---- what each worker runs: the GPU figures, and --dry-run's tiny CPU shapes ---------------------------
GPT2 = {"preset": "gpt2-124m", "vocab": 50257, "batch": 12, "overrides": {}}
LLAMA_1B = {"preset": "llama-1b", "overrides": {}}


def settings_for(dry: bool) -> dict[str, dict]:
    """Per worker: its settings. GPU: the issue's shapes; dry run: tiny shapes, a few steps, CPU."""
    if dry:
        gpt = {"preset": "gpt2-124m", "vocab": 512, "batch": 2,
               "overrides": {"n_layer": 1, "d_model": 32, "n_head": 2, "context_length": 32}}
        llama = {"preset": "llama-1b", "overrides": {"n_layer": 2, "d_model": 64, "n_head": 4, "n_kv_head": 2,
                                                     "d_ff": 128, "vocab_size": 512, "context_length": 128}}
        speed = {"steps": 4, "log_interval": 2, "timed_after": 2}
        return {
            "env": {},
            "train": {**gpt, "runs": [{"name": "lmforge", "compile": False, **speed}]},
            "nanogpt": {**gpt, "compile": False, "dtype": "float32", "iters": 4, "timed_after": 1},
            "decode": {"llama": llama, "batches": [1, 2], "prompt": 4, "new_tokens": 8, "rounds": 1, "compile": False},
            "correctness": {"gpt": {**gpt, "steps": 6}, "llama": llama, "greedy_tokens": 8, "prompt": 4},
            "memory": {**gpt, "runs": _memory_runs(speed)},
            "serve": {"preset": "gpt-tiny", "context": 64, "clients": [1, 2], "tokens": 8, "min_requests": 2},
        }
    speed = {"steps": 60, "log_interval": 5, "timed_after": 15}
    return {
        "env": {},
        "train": {**GPT2, "runs": [{"name": "lmforge", "compile": True, **speed}]},
        "nanogpt": {**GPT2, "compile": True, "dtype": "bfloat16", "iters": 60, "timed_after": 15},
        "decode": {"llama": LLAMA_1B, "batches": [1, 8], "prompt": 16, "new_tokens": 128, "rounds": 3, "compile": True},
        "correctness": {"gpt": {**GPT2, "batch": 4, "steps": 50}, "llama": LLAMA_1B, "greedy_tokens": 32, "prompt": 16},
        "memory": {**GPT2, "runs": _memory_runs({"steps": 25, "log_interval": 5, "timed_after": 5})},
        "serve": {"preset": "llama-1b", "context": 1024, "clients": [1, 16, 64], "tokens": 64, "min_requests": 8},
    }


def _memory_runs(speed: dict) -> list[dict]:
    """Plain, activation checkpointing, FSDP on one process: all eager (the loop refuses --compile with
    fsdp, so the eager plain run is FSDP's baseline). FSDP runs to its end (evaluation and report, which
    gather the whole model: `Strategy.full_params`), the others stop before it."""
    return [{"name": "plain", **speed}, {"name": "activation_checkpointing", "activation_checkpointing": True, **speed},
            {"name": "fsdp", "strategy": "fsdp", "finish": True, **speed}]


# =========================================== the driver ==================================================
def main() -> None:
    args = parse_args()
    if args.worker:
        worker_main(args.worker, json.loads(args.settings))
        return
    Suite(args).run()


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes: check that every part's code runs")
    p.add_argument("--only", action="append", choices=PARTS, help="run only this part (repeatable; env always runs)")
    p.add_argument("--budget-s", type=float, default=480, help="wall-clock budget of the whole suite, seconds")
    p.add_argument("--json", default=None, help="results file (default: $OUT/gpu_suite.json when OUT is set, else "
                                                "benchmarks/results/gpu_suite-<time>.json); the log goes beside it")
    p.add_argument("--nanogpt", default=None, help="folder of a nanoGPT checkout (train.py, model.py, configurator.py)")
    p.add_argument("--wheels", default=None, help="install these wheels first (pip --no-index --no-deps, timed)")
    p.add_argument("--vllm-python", default=None, help="python of a virtual environment that has vLLM")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    p.add_argument("--settings", default="{}", help=argparse.SUPPRESS)
    return p.parse_args()


class Suite:
    """Plans the jobs against the budget, runs each in its own process group under its time limit,
    merges the RESULT lines into one dict and writes it (whole, via a temp file) after every job."""

    def __init__(self, args: argparse.Namespace):
        self.args, self.t0 = args, time.time()
        self.deadline = self.t0 + args.budget_s
        self.work = Path(tempfile.mkdtemp(prefix="gpu-suite-"))
        out = os.environ.get("OUT")
        stamp = time.strftime("%Y%m%d-%H%M")
        default = Path(out) / "gpu_suite.json" if out else HERE / "results" / f"gpu_suite-{stamp}.json"
        self.json_path = Path(args.json) if args.json else default
        self.json_path.parent.mkdir(parents=True, exist_ok=True)
        self.log = open(self.json_path.with_suffix(".log"), "w")
        self.lock = threading.Lock()
        parts = set(args.only or PARTS) | {"env"}
        self.jobs = [j for j in JOBS if j.part in parts]
        self.settings = settings_for(args.dry_run)
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        self.env = {**os.environ, "PYTHONPATH": path,
                    "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1",
                    "TRANSFORMERS_OFFLINE": "1", "MPLBACKEND": "Agg"}
        self.results: dict = {"suite": {"argv": sys.argv[1:], "dry_run": args.dry_run, "budget_s": args.budget_s,
                                        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                                        "plan": [{"part": j.part, "job": j.worker, "budget_s": j.budget_s}
                                                 for j in self.jobs]},
                              **{p: {} for p in PARTS if p in parts}}

    def run(self) -> None:
        self.print_plan()
        try:
            self.install()
            for i, job in enumerate(self.jobs):
                self.run_job(job, later=sum(j.budget_s for j in self.jobs[i + 1:]))
                versions = self.results["env"].get("versions")
                if job.part == "env" and not self.args.dry_run and versions and not versions["cuda_device"]:
                    self.results["suite"]["stopped"] = "no CUDA device here: run with --dry-run on a CPU machine"
                    break
        finally:
            self.results["suite"]["wall_s"] = round(time.time() - self.t0, 1)
            self.results["summary"] = summarise(self.results)
            self.write()
            self.log.close()
            shutil.rmtree(self.work, ignore_errors=True)
        print_summary(self.results)
        print(f"\nresults: {self.json_path}")

    def print_plan(self) -> None:
        mode = "dry run (CPU, tiny shapes; the budgets are the GPU plan's)" if self.args.dry_run else "GPU"
        print(f"GPU suite, {mode}; budget {self.args.budget_s:.0f} s; results -> {self.json_path}")
        for j in self.jobs:
            print(f"  {j.part:<12} {j.worker:<12} ~{j.budget_s:>4.0f} s")
        print(f"  {'':<12} {'total':<12} ~{sum(j.budget_s for j in self.jobs):>4.0f} s", flush=True)

    def install(self) -> None:
        """--wheels DIR: pip-install its wheels into a folder on the workers' PYTHONPATH, timed."""
        if not self.args.wheels:
            self.results["suite"]["install"] = {"skipped": "no --wheels: the machine's own packages are used"}
            return
        wheels = sorted(str(w) for w in Path(self.args.wheels).glob("*.whl"))
        site = self.work / "site"
        t0 = time.time()
        done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
                               "--no-cache-dir", "--upgrade", "--target", str(site), *wheels],
                              capture_output=True, text=True)
        self.results["suite"]["install"] = {"wheels": [Path(w).name for w in wheels],
                                            "seconds": round(time.time() - t0, 1),
                                            **({"error": done.stderr[-1000:]} if done.returncode else {})}
        self.env["PYTHONPATH"] = os.pathsep.join([str(site), self.env["PYTHONPATH"]])
        print(f"installed {len(wheels)} wheels in {time.time() - t0:.1f} s", flush=True)

    def run_job(self, job: Job, later: float) -> None:
        left = self.deadline - time.time()
        if left < min(job.budget_s, 30):
            self.merge([job.part, job.worker], {"skipped": f"budget: {left:.0f} s left of {self.args.budget_s:.0f}, "
                                                           f"this job's plan is {job.budget_s:.0f} s"})
            return
        limit = min(left, max(job.budget_s, left - later))
        settings = {**self.settings[job.worker], "part": job.part, "work": str(self.work), "dry_run": self.args.dry_run,
                    "device": "cpu" if self.args.dry_run else "cuda", "deadline": time.time() + limit - 5,
                    "nanogpt": self.args.nanogpt and str(Path(self.args.nanogpt).resolve()),
                    "vllm_python": self.args.vllm_python}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", job.worker,
               "--settings", json.dumps(settings)]
        if job.torchrun:
            cmd[1:1] = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1"]
        print(f"\n[{job.part}/{job.worker}] limit {limit:.0f} s", flush=True)
        # a dry run's jobs run in this process (they check code paths; each process start costs seconds)
        outcome = self.run_inline(job.worker, settings) if self.args.dry_run and not job.torchrun else \
            self.run_process(cmd, limit)
        self.merge([job.part, f"{job.worker}_job"], outcome)
        self.write()

    def run_process(self, cmd: list[str], limit: float) -> dict:
        t0 = time.time()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=self.env,
                                cwd=self.work, start_new_session=True)      # its own group: a timeout ends all of it
        tail: list[str] = []
        reader = threading.Thread(target=self.read_output, args=(proc, tail), daemon=True)
        reader.start()
        timed_out = False
        try:
            proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        with contextlib.suppress(ProcessLookupError):      # whatever it left running (a server, compile workers)
            os.killpg(proc.pid, signal.SIGKILL)
        reader.join(timeout=10)
        outcome = {"seconds": round(time.time() - t0, 1), "rc": proc.returncode}
        if timed_out:
            outcome["timed_out"] = f"stopped at its limit of {limit:.0f} s"
        if proc.returncode and not timed_out:
            outcome["tail"] = "".join(tail[-15:])
        return outcome

    def run_inline(self, worker: str, settings: dict) -> dict:
        t0 = time.time()
        os.environ.update(self.env)                 # what the workers' own subprocesses need
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        SINKS.append(self.merge)
        try:
            WORKERS[worker](settings)
            return {"seconds": round(time.time() - t0, 1), "rc": 0}
        except Exception:                           # a broken worker is recorded like a crashed process
            import traceback
            return {"seconds": round(time.time() - t0, 1), "rc": 1, "tail": traceback.format_exc()[-1500:]}
        finally:
            SINKS.pop()

    def read_output(self, proc: subprocess.Popen, tail: list[str]) -> None:
        for line in proc.stdout:
            self.log.write(line)
            if line.startswith("RESULT {"):
                row = json.loads(line[len("RESULT "):])
                self.merge(row["path"], row["value"])
                print(f"  {'/'.join(row['path'])}: {brief(row['value'])}", flush=True)
            else:
                tail.append(line)
                del tail[:-40]
                if line.startswith("[") and "] " in line:
                    print("  " + line.rstrip(), flush=True)
        self.log.flush()

    def merge(self, path: list[str], value) -> None:
        with self.lock:
            node = self.results
            for key in path[:-1]:
                node = node.setdefault(key, {})
            node[path[-1]] = value

    def write(self) -> None:
        with self.lock:
            text = json.dumps(self.results, indent=1, default=str)
        tmp = self.json_path.with_suffix(".json.tmp")
        tmp.write_text(text)
        tmp.replace(self.json_path)


def brief(value) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 160 else text[:157] + "..."


# ============================================ the workers =================================================
def worker_main(name: str, s: dict) -> None:
    WORKERS[name](s)


SINKS: list = []       # a dry run's in-process jobs hand their figures straight to the suite


def emit(path: list[str], value) -> None:
    """One figure (or the reason there is none) for the results, at `path`."""
    if SINKS:
        value = json.loads(json.dumps(value, default=str))
        SINKS[-1](path, value)
        print(f"  {'/'.join(path)}: {brief(value)}", flush=True)
        return
    print("RESULT " + json.dumps({"path": path, "value": value}, default=str), flush=True)


def say(s: dict, message: str) -> None:
    print(f"[{s['part']}] {message}", flush=True)


def time_left(s: dict) -> float:
    return s["deadline"] - time.time()


def needs_cuda(s: dict, what: str) -> dict | None:
    """The reason a figure is not measured on this device, or None when it can be."""
    return None if s["device"] == "cuda" else {"skipped": f"{what}: needs CUDA (this run is on {s['device']})"}


# ---- env ---------------------------------------------------------------------------------------------
def env_worker(s: dict) -> None:
    import platform
    import tomllib

    import torch
    pinned = [d for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
              if d.startswith("torch")]
    cuda = torch.cuda.is_available()
    versions = {"python": platform.python_version(), "torch": torch.__version__, "torch_pinned": pinned,
                "cuda": torch.version.cuda, "cuda_device": torch.cuda.get_device_name() if cuda else None,
                "cpu_count": os.cpu_count(), "packages": package_versions()}
    emit(["env", "versions"], versions)
    missing = [m for m, v in versions["packages"].items() if v is None and m in NEEDED]
    emit(["env", "missing"], missing or "none")
    if s["device"] == "cuda" and cuda:
        emit(["env", "ceilings"], {"copy_GBps": round(copy_bandwidth() / 1e9, 1),
                                   "bf16_matmul_TFLOPs": round(matmul_rate() / 1e12, 1),
                                   "datasheet": H200_DATASHEET})
    else:
        emit(["env", "ceilings"], needs_cuda(s, "measuring the card") or {"skipped": "no CUDA device"})
    vllm, why = vllm_command(s)
    emit(["env", "vllm"], {"command": vllm} if vllm else {"skipped": why})


NEEDED = ("numpy", "tokenizers", "safetensors", "tqdm", "matplotlib", "sacrebleu", "starlette", "uvicorn",
          "prometheus_client", "jinja2", "yaml", "transformers", "httpx")


def package_versions() -> dict[str, str | None]:
    import importlib
    out = {}
    for name in (*NEEDED, "triton", "gguf", "vllm"):
        try:
            out[name] = getattr(importlib.import_module(name), "__version__", "?")
        except Exception:                      # a missing or broken package: recorded, not fatal
            out[name] = None
    return out


def copy_bandwidth() -> float:
    """Device-to-device copy bandwidth, bytes read + written per second (1 GiB, random data)."""
    import torch
    src = torch.rand(1 << 28, device="cuda")
    dst = torch.empty_like(src)
    seconds = cuda_seconds(lambda: dst.copy_(src), 20)
    return 2 * src.nbytes / seconds


def matmul_rate() -> float:
    """bf16 8192^3 matrix product on random data, FLOP/s."""
    import torch
    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    return 2 * 8192 ** 3 / cuda_seconds(lambda: a @ b, 20)


def cuda_seconds(fn, reps: int) -> float:
    """Median seconds of one call of `fn`, timed with CUDA events after 3 warm-up calls."""
    import torch
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1000)
    return statistics.median(times)


def vllm_command(s: dict) -> tuple[list[str] | None, str]:
    """The `vllm` command to start vLLM's server with, or None and why there is none."""
    if s["device"] != "cuda":
        return None, f"vLLM serves on GPUs; this run is on {s['device']}"
    if s.get("vllm_python"):
        exe = Path(s["vllm_python"]).parent / "vllm"
        return ([str(exe)], "") if exe.is_file() else (None, f"no vllm command beside {s['vllm_python']}")
    if shutil.which("vllm"):
        return [shutil.which("vllm")], ""
    return None, ("vllm is not installed here (it pins its own torch, and its wheels with their dependencies run "
                  "to gigabytes: a machine without a network cannot install it); give --vllm-python PATH, the python "
                  "of a virtual environment that has vLLM")


# ---- synthetic data: one tokenizer and token shards that lmforge and nanoGPT both read ----------------
def synthetic_tokenizer(vocab_size: int):
    """A word-level tokenizer of `vocab_size` tokens ("<pad>".."<mask>", then "t5", "t6", ...): what a
    model directory and a data directory need around ids that mean nothing."""
    from tokenizers import Tokenizer as HFTokenizer
    from tokenizers import models, pre_tokenizers

    from lmforge.tokenizers import Tokenizer
    from lmforge.tokenizers.base import SPECIAL_TOKENS
    specials = list(SPECIAL_TOKENS.values())
    vocab = {tok: i for i, tok in enumerate(specials)} | {f"t{i}": i for i in range(len(specials), vocab_size)}
    hf = HFTokenizer(models.WordLevel(vocab, unk_token=SPECIAL_TOKENS["unk"]))
    hf.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    hf.add_special_tokens(specials)
    return Tokenizer(hf, "hf")


def synthetic_data(s: dict, tokens: int = 2_000_000) -> str:
    """A prepared data directory (train.bin / val.bin uint16, meta.json, tokenizer) of arithmetic
    progressions modulo the vocabulary: random start and stride per run of 64-512 tokens, so a model
    can learn them (the loss falls, which the bf16-vs-fp32 check needs) and every id is used.
    nanoGPT reads the same train.bin / val.bin."""
    import numpy as np
    V = s["vocab"]
    d = Path(s["work"]) / f"data-{V}"
    if (d / "meta.json").is_file():
        return str(d)
    rng = np.random.default_rng(0)
    lengths = rng.integers(64, 513, size=tokens // 64)
    lengths = lengths[: np.searchsorted(np.cumsum(lengths), tokens) + 1]
    starts = np.repeat(rng.integers(0, V, size=len(lengths)), lengths)
    strides = np.repeat(rng.integers(1, 17, size=len(lengths)), lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    ids = ((starts + strides * offsets) % V).astype(np.uint16)[:tokens]
    tmp = Path(tempfile.mkdtemp(dir=s["work"]))
    n_val = len(ids) // 20
    ids[:-n_val].tofile(tmp / "train.bin")
    ids[-n_val:].tofile(tmp / "val.bin")
    tokenizer = synthetic_tokenizer(V)
    tokenizer.save(tmp)
    meta = {"dtype": "uint16", "vocab_size": V, "tokenizer": tokenizer.kind, "train_tokens": len(ids) - n_val,
            "val_tokens": n_val, "eos_id": tokenizer.eos_id, "sources": ["synthetic arithmetic progressions"]}
    (tmp / "meta.json").write_text(json.dumps(meta))
    with contextlib.suppress(OSError):             # another worker may have made it meanwhile
        tmp.rename(d)
    return str(d)


# ---- train / memory / the bf16 check: runs of the one loop ----------------------------------------------
def train_worker(s: dict) -> None:
    data = synthetic_data(s)
    for run in s["runs"]:
        if time_left(s) < 15:
            emit([s["part"], run["name"]], {"skipped": f"budget: {time_left(s):.0f} s left in the part"})
            continue
        say(s, f"training: {run['name']}")
        emit([s["part"], run["name"]], train_run(s, run, data))


def train_run(s: dict, run: dict, data: str) -> dict:
    """One run of `lmforge.train.train` (the real loop) on the synthetic shards, AdamW (nanoGPT's
    optimizer; lmforge's default is Muon); its tokens/s and MFU rows after `timed_after` steps, its
    per-step losses and peak CUDA memory. A run that does not `finish` stops after its last step
    (`stop_after`): no final evaluation, so a compiled model is not compiled again for eval mode."""
    import torch

    from lmforge.config import ModelOverridesConfig
    from lmforge.train import TrainConfig, train
    steps, cuda = run["steps"], s["device"] == "cuda"
    rec = recorder(cuda)
    if cuda:                                   # the peak of this run alone (runs share the memory part's process)
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    end = steps if run.get("finish") else steps + 1          # a schedule one step longer: no final evaluation
    cfg = TrainConfig(data=data, out=str(Path(s["work"]) / f"run-{s['part']}-{run['name']}"), preset=s["preset"],
                      model=ModelOverridesConfig(dropout=0.0, **s["overrides"]), batch_size=s["batch"],
                      max_steps=end, stop_after=steps, eval_interval=end, eval_iters=1, lr=6e-4, warmup_steps=10,
                      log_interval=run["log_interval"], sample_interval=0, device=s["device"],
                      dtype=run.get("dtype", "auto"), compile=run.get("compile", False),
                      strategy=run.get("strategy", "auto"),
                      activation_checkpointing=run.get("activation_checkpointing", False),
                      optimizer="adamw", progress=False)
    t0, error = time.time(), None
    try:
        train(cfg, observers=[rec])
    except Exception as e:                 # recorded with whatever rows came before it
        error = f"{type(e).__name__}: {e}" + next((f" ({why})" for key, why in KNOWN.items() if key in str(e)), "")
    return run_figures(rec, run, cfg, time.time() - t0, error, needs_cuda(s, "MFU and peak CUDA memory"))


# errors this suite can explain, by a word of their message
KNOWN = {"reset_iter_state": "torch before 2.12 has no FSDPModule.reset_iter_state, which FSDPStrategy.full_params "
                             "calls after gathering the model for evaluation (lmforge/train/distributed.py)"}


def recorder(cuda: bool):
    """A RunObserver that keeps the train rows and the peak CUDA memory at each of them."""
    import torch

    from lmforge.train import RunObserver

    class Recorder(RunObserver):
        def __init__(self):
            self.rows: list[dict] = []
            self.peak = 0

        def on_log(self, row):
            if row["kind"] == "train":
                self.rows.append(dict(row))
                if cuda:
                    self.peak = max(self.peak, torch.cuda.max_memory_allocated())
    return Recorder()


def run_figures(rec, run: dict, cfg, seconds: float, error: str | None, no_cuda: dict | None) -> dict:
    """tokens/s and MFU: medians of the rows after `timed_after` steps (the first rows hold compilation)."""
    timed = [r for r in rec.rows if r["step"] > run["timed_after"]]
    out: dict = {"steps": run["steps"], "batch": cfg.batch_size, "seconds": round(seconds, 1)}
    if timed:
        out["tokens_per_s"] = round(statistics.median(r["tokens_per_s"] for r in timed), 1)
        if all("mfu" in r for r in timed):
            out["mfu"] = round(statistics.median(r["mfu"] for r in timed), 4)
    out["losses"] = [r["loss"] for r in rec.rows]
    if rec.peak:
        out["peak_cuda_GiB"] = round(rec.peak / 2 ** 30, 2)
    if no_cuda:
        out["mfu"] = out["peak_cuda_GiB"] = no_cuda
    if error:
        out["error"] = error
    if not timed and not error:
        out["error"] = f"no train rows after step {run['timed_after']}"
    return out


def memory_worker(s: dict) -> None:
    """The memory part: `train_worker` in one torchrun process (FSDP needs a process group)."""
    import torch.distributed as dist
    try:
        train_worker(s)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


# ---- nanoGPT's own train.py on the same shards --------------------------------------------------------
NANOGPT_ITER = re.compile(r"^iter (\d+): loss (\S+), time ([\d.]+)ms, mfu (-?[\d.]+)%", re.M)


def nanogpt_worker(s: dict) -> None:
    """nanoGPT's train.py itself (its loop: bf16 autocast, torch.compile, fused AdamW, grad clip, a
    loss.item() per logged iteration), run with config overrides for lmforge's shapes and batch, on
    the same train.bin; its printed iteration times give tokens/s, and MFU is computed with
    lmforge's FLOP count and peak so both MFUs are comparable."""
    src = Path(s["nanogpt"]) if s.get("nanogpt") else None
    if src is None:
        emit(["train", "nanogpt"], {"skipped": "no --nanogpt DIR (a checkout of github.com/karpathy/nanoGPT)"})
        return
    missing = [f for f in ("train.py", "model.py", "configurator.py") if not (src / f).is_file()]
    if missing:
        emit(["train", "nanogpt"], {"skipped": f"{src} has no {', '.join(missing)}"})
        return
    from lmforge.config import get_preset
    config = get_preset(s["preset"], vocab_size=s["vocab"], dropout=0.0, **s["overrides"])
    run = nanogpt_folder(s, src, config.padded_vocab_size)
    settings = {"dataset": "gpu_suite", "out_dir": str(run / "out"), "batch_size": s["batch"],
                "block_size": config.context_length, "n_layer": config.n_layer, "n_head": config.n_head,
                "n_embd": config.d_model, "bias": config.bias, "dropout": 0.0, "gradient_accumulation_steps": 1,
                "max_iters": s["iters"], "lr_decay_iters": s["iters"], "warmup_iters": 10, "learning_rate": 6e-4,
                "min_lr": 6e-5, "eval_interval": 10 ** 9, "eval_iters": 1, "log_interval": 1,
                "always_save_checkpoint": False, "compile": s["compile"], "dtype": s["dtype"], "device": s["device"]}
    say(s, f"nanoGPT train.py ({src})")
    t0 = time.time()
    try:
        done = subprocess.run([sys.executable, str(src / "train.py"), *(f"--{k}={v}" for k, v in settings.items())],
                              cwd=run, capture_output=True, text=True, timeout=max(10.0, time_left(s)))
    except subprocess.TimeoutExpired as e:
        done = subprocess.CompletedProcess(e.cmd, -9, e.stdout or "", (e.stderr or "") + "\n(stopped at the limit)")
    print(done.stdout, done.stderr, sep="\n", flush=True)
    emit(["train", "nanogpt"], nanogpt_figures(s, config, done, time.time() - t0))


def nanogpt_folder(s: dict, src: Path, vocab_size: int) -> Path:
    """A working folder as train.py expects it: configurator.py and data/gpu_suite/ holding the shards
    and a meta.pkl that gives lmforge's padded vocabulary (GPT-2: 50304, nanoGPT's own default)."""
    import pickle
    data = Path(synthetic_data(s))
    run = Path(s["work"]) / "nanogpt"
    (run / "data" / "gpu_suite").mkdir(parents=True, exist_ok=True)
    for split in ("train.bin", "val.bin"):
        link = run / "data" / "gpu_suite" / split
        if not link.exists():
            link.symlink_to(data / split)
    (run / "data" / "gpu_suite" / "meta.pkl").write_bytes(pickle.dumps({"vocab_size": vocab_size}))
    shutil.copy(src / "configurator.py", run)
    return run


def nanogpt_figures(s: dict, config, done: subprocess.CompletedProcess, seconds: float) -> dict:
    import torch

    from lmforge.model import flops_per_token
    from lmforge.train.progress import peak_flops
    iters = [(int(i), float(loss), float(ms), float(mfu)) for i, loss, ms, mfu in NANOGPT_ITER.findall(done.stdout)]
    timed = [ms for i, _, ms, _ in iters if i > s["timed_after"]]
    out: dict = {"iters": len(iters), "batch": s["batch"], "seconds": round(seconds, 1),
                 "losses": [loss for _, loss, _, _ in iters]}
    if not timed:
        return {**out, "error": f"train.py exited with {done.returncode} and no timed iterations",
                "tail": (done.stdout + done.stderr)[-1500:]}
    out["tokens_per_s"] = round(s["batch"] * config.context_length / (statistics.median(timed) / 1000), 1)
    peak = peak_flops(torch.device(s["device"])) if s["device"] == "cuda" else None
    if peak:
        out["mfu"] = round(out["tokens_per_s"] * flops_per_token(config) / peak, 4)
        out["mfu_printed_vs_a100"] = statistics.median(m for i, _, _, m in iters if i > s["timed_after"]) / 100
    else:
        out["mfu"] = needs_cuda(s, "MFU") or {"skipped": "the GPU's peak FLOP/s is not known"}
    return out


# ---- decode and the greedy check: the same llama-1b-shaped weights in lmforge and transformers ---------
def llama_pair(s: dict, dtype: str = "bfloat16"):
    """(lmforge module, transformers LlamaForCausalLM, config): random weights in `dtype` built on the
    device in lmforge, exported with `Model.save(format="hf")` and loaded by transformers (SDPA)."""
    import torch
    from transformers import LlamaForCausalLM

    from lmforge.api import Model
    from lmforge.config import get_preset
    from lmforge.model import build_model, inference_layout
    device, dtype = torch.device(s["device"]), getattr(torch, dtype)
    config = get_preset(s["llama"]["preset"], **s["llama"]["overrides"])
    torch.manual_seed(0)
    with torch.device(device):
        module = build_model(config).to(dtype).eval()
    folder = Path(tempfile.mkdtemp(dir=s["work"]))
    Model(module, config, synthetic_tokenizer(config.vocab_size)).save(folder / "hf", format="hf")
    hf = LlamaForCausalLM.from_pretrained(folder / "hf", dtype=dtype, attn_implementation="sdpa").to(device).eval()
    shutil.rmtree(folder)
    hf.generation_config.eos_token_id = None          # random weights: generate every token asked for
    hf.generation_config.pad_token_id = 0
    return inference_layout(module, device), hf, config


def streamed_bytes(module) -> int:
    """Bytes a decode step must read: every weight except embedding tables that no Linear shares (a
    lookup reads one row); the KV cache is left out (it is small at these lengths)."""
    import torch.nn as nn
    linear = {id(m.weight) for m in module.modules() if isinstance(m, nn.Linear)}
    lookup_only = {id(m.weight) for m in module.modules() if isinstance(m, nn.Embedding)} - linear
    return sum(p.numel() * p.element_size() for p in module.parameters() if id(p) not in lookup_only)


def decode_worker(s: dict) -> None:
    module, hf, config = llama_pair(s)
    bandwidth = copy_bandwidth() if s["device"] == "cuda" else None
    streamed = streamed_bytes(module)
    emit(["decode", "model"], {"params_M": round(sum(p.numel() for p in module.parameters()) / 1e6, 1),
                               "streamed_GB_per_step": round(streamed / 1e9, 3),
                               "copy_GBps": round(bandwidth / 1e9, 1) if bandwidth else None})
    for batch in s["batches"]:
        if time_left(s) < 20:
            emit(["decode", f"batch_{batch}"], {"skipped": f"budget: {time_left(s):.0f} s left in the part"})
            continue
        say(s, f"decoding, batch {batch}")
        emit(["decode", f"batch_{batch}"], decode_batch(s, module, hf, config, batch, bandwidth, streamed))


def decode_batch(s: dict, module, hf, config, batch: int, bandwidth: float | None, streamed: int) -> dict:
    """Greedy decoding of `new_tokens` after a `prompt`-token prompt, both frameworks alternating
    (common.alternate); the first call (compilation, graph capture) is timed apart."""
    import torch
    from common import alternate, timed

    from lmforge.generate import GenerationConfig, generate_ids
    device, N, P = torch.device(s["device"]), s["new_tokens"], s["prompt"]
    prompt = torch.randint(5, config.vocab_size, (batch, P), generator=torch.Generator().manual_seed(batch)).to(device)
    cfg = GenerationConfig(max_new_tokens=N, greedy=True, compile=s["compile"])
    hf_kwargs = dict(max_new_tokens=N, do_sample=False, attention_mask=torch.ones_like(prompt),
                     **({"cache_implementation": "static"} if s["compile"] else {}))
    ids: dict[str, list] = {}

    def ours():
        ids["lmforge"] = generate_ids(module, prompt.tolist(), cfg, eos_id=None)[0]

    def theirs():
        with torch.no_grad():
            ids["transformers"] = hf.generate(prompt, **hf_kwargs)[:, P:].tolist()
    first = {"lmforge": round(timed(ours, device), 1), "transformers": round(timed(theirs, device), 1)}
    ours(), theirs()
    rounds = alternate({"lmforge": lambda: batch * N / timed(ours, device),
                        "transformers": lambda: batch * N / timed(theirs, device)}, s["rounds"])
    best = {k: round(max(v), 1) for k, v in rounds.items()}
    out = {"batch": batch, "prompt": P, "new_tokens": N, "compile": s["compile"], "tokens_per_s": best,
           "ratio_lmforge_over_transformers": round(best["lmforge"] / best["transformers"], 3),
           "first_call_s": first, "rounds": {k: [round(x, 1) for x in v] for k, v in rounds.items()},
           "rows_equal_to_transformers": f"{sum(a == b for a, b in zip(ids['lmforge'], ids['transformers']))}/{batch}"}
    if bandwidth:
        limit = batch * bandwidth / streamed
        out.update(limit_tokens_per_s=round(limit, 1), lmforge_pct_of_limit=round(100 * best["lmforge"] / limit, 1),
                   transformers_pct_of_limit=round(100 * best["transformers"] / limit, 1))
    else:
        out["bandwidth_limit"] = needs_cuda(s, "the memory-bandwidth limit") or {"skipped": "no CUDA device"}
    return out


# ---- correctness -----------------------------------------------------------------------------------------
GREEDY_CHECKS = {"bfloat16": "greedy_vs_transformers", "float32": "greedy_vs_transformers_fp32"}   # dtype: key


def correctness_worker(s: dict) -> None:
    g = {**s["gpt"], "part": "correctness", "work": s["work"], "device": s["device"]}
    data = synthetic_data(g)
    runs = {}
    for dtype in ("float32", "bfloat16"):
        say(s, f"{g['steps']} steps in {dtype}")
        runs[dtype] = train_run(g, {"name": dtype, "steps": g["steps"], "log_interval": 1, "timed_after": 0,
                                    "dtype": dtype}, data)
    emit(["correctness", "bf16_vs_fp32_loss"], loss_agreement(runs))
    for dtype, key in GREEDY_CHECKS.items():
        if time_left(s) < 20:
            emit(["correctness", key], {"skipped": f"budget: {time_left(s):.0f} s left"})
            continue
        say(s, f"greedy decoding, {s['greedy_tokens']} tokens, lmforge and transformers, {dtype}")
        emit(["correctness", key], greedy_check(s, dtype))


def loss_agreement(runs: dict[str, dict], tolerance: float = 0.02) -> dict:
    """bf16 autocast against fp32 from the same start on the same batches: per step, and over the last
    10 steps (relative to fp32); passes when the latter is within `tolerance`."""
    a, b = runs["float32"].get("losses", []), runs["bfloat16"].get("losses", [])
    errors = {k: r["error"] for k, r in runs.items() if r.get("error")}
    if errors or not a or len(a) != len(b):
        return {"error": errors or f"loss rows: fp32 {len(a)}, bf16 {len(b)}"}
    end_a, end_b = statistics.mean(a[-10:]), statistics.mean(b[-10:])
    end_diff = abs(end_b - end_a) / abs(end_a)
    return {"steps": len(a), "fp32_first_last": [a[0], a[-1]], "bf16_first_last": [b[0], b[-1]],
            "max_step_rel_diff": round(max(abs(x - y) / abs(x) for x, y in zip(a, b)), 6),
            "last10_rel_diff": round(end_diff, 6), "tolerance": tolerance, "pass": end_diff <= tolerance,
            "fp32_losses": a, "bf16_losses": b}


def greedy_check(s: dict, dtype: str = "bfloat16") -> dict:
    """lmforge's greedy tokens against transformers' on the same weights in `dtype` (uncompiled both).
    Where they part, transformers' own gap between its top two logits says whether it was a near tie
    (bf16 rounding decides those) or a real difference; the prefill logits are compared too."""
    import torch

    from lmforge.generate import GenerationConfig, generate_ids
    module, hf, config = llama_pair(s, dtype)
    device, N = torch.device(s["device"]), s["greedy_tokens"]
    prompt = torch.randint(5, config.vocab_size, (1, s["prompt"]), generator=torch.Generator().manual_seed(1))
    ours = generate_ids(module, prompt.tolist(), GenerationConfig(max_new_tokens=N, greedy=True), eos_id=None)[0][0]
    prompt = prompt.to(device)
    with torch.no_grad():
        theirs = hf.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=N,
                             do_sample=False)[0, prompt.shape[1]:].tolist()
        a = module(prompt)[0, :, :config.vocab_size].float()
        b = hf(prompt).logits[0].float()
    out = {"tokens": N, "equal": ours == theirs, "lmforge": ours, "transformers": theirs,
           "prefill_logits_rel_error": round(float((a - b).norm() / b.norm()), 5)}
    first = next((i for i, (x, y) in enumerate(zip(ours, theirs)) if x != y), None)
    if first is not None:
        seq = torch.tensor([prompt[0].tolist() + ours[:first]], device=device)
        with torch.no_grad():
            top2 = hf(seq).logits[0, -1].float().topk(2).values
        out.update(first_difference=first, transformers_top2_gap=round(float(top2[0] - top2[1]), 4))
    return out


# ---- serve -----------------------------------------------------------------------------------------------
def serve_worker(s: dict) -> None:
    """`lmforge serve` (and `vllm serve` when there is one) on one random model of `preset`'s shape with
    a character tokenizer (serve_throughput.build_model: every request streams all its tokens)."""
    import serve_throughput as st
    work = Path(s["work"]) / "serve"
    work.mkdir()
    say(s, f"building a random {s['preset']} model")
    with building_on(s["device"]):
        st.build_model(work, s["preset"], s["context"])
    port = st.free_port()
    cmd = [sys.executable, "-m", "lmforge", "serve", str(work / "model"), "--port", str(port), "--device", s["device"],
           "--max-batch-size", str(max(s["clients"])), "--max-queue", str(2 * max(s["clients"]))]
    emit(["serve", "lmforge"], serve_levels(s, cmd, port, "model", {"ignore_eos": True}, dict(os.environ)))
    vllm, why = vllm_command(s)
    if vllm is None:
        emit(["serve", "vllm"], {"skipped": why})
        return
    port = st.free_port()
    cmd = [*vllm, "serve", str(work / "hf"), "--port", str(port), "--dtype", "bfloat16", "--served-model-name", "model",
           "--max-num-seqs", str(max(s["clients"]))]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}       # vLLM's own packages only
    emit(["serve", "vllm"], serve_levels(s, cmd, port, "model", {"ignore_eos": True}, env))


@contextlib.contextmanager
def building_on(device: str):
    """Build on the GPU in bf16 there (a 1B model builds in seconds and saves half the bytes)."""
    import torch
    if device != "cuda":
        yield
        return
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            yield
    finally:
        torch.set_default_dtype(old)


def serve_levels(s: dict, cmd: list[str], port: int, model: str, extra: dict, env: dict) -> dict:
    """Start the server, warm it up, then each concurrency level once: max(min_requests, 2 x clients)
    streaming requests of `tokens` tokens (serve_throughput.level)."""
    import asyncio

    import serve_throughput as st
    url = f"http://127.0.0.1:{port}"
    say(s, " ".join(cmd[:4]))
    proc = st.start(cmd, url, env, timeout=max(30.0, min(300.0, time_left(s) - 20)))
    if proc is None:
        return {"error": f"{Path(cmd[0]).name} {cmd[1] if len(cmd) > 1 else ''} did not start (see the log)"}
    out: dict = {}
    try:
        asyncio.run(st.level(url, model, 1, 2, 4, extra))
        for clients in s["clients"]:
            if time_left(s) < 15:
                out[f"clients_{clients}"] = {"skipped": f"budget: {time_left(s):.0f} s left in the part"}
                continue
            say(s, f"{clients} clients")
            row = asyncio.run(st.level(url, model, clients, max(s["min_requests"], 2 * clients), s["tokens"], extra))
            out[f"clients_{clients}"] = {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
    except Exception as e:              # a server that fails mid-run is reported, not fatal
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        stop(proc)
    return out


def stop(proc: subprocess.Popen) -> None:
    """Ask a server to stop; kill it if it has not within 20 s."""
    proc.terminate()
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=20)
    if proc.poll() is None:
        proc.kill()


WORKERS = {"env": env_worker, "train": train_worker, "nanogpt": nanogpt_worker, "decode": decode_worker,
           "correctness": correctness_worker, "memory": memory_worker, "serve": serve_worker}


# ============================================ the summary ==================================================
def summarise(r: dict) -> dict:
    """The headline figures and ratios of whatever was measured."""
    out: dict = {}
    train, memory, decode = r.get("train", {}), r.get("memory", {}), r.get("decode", {})
    ours, nano = train.get("lmforge", {}), train.get("nanogpt", {})
    out["train_tokens_per_s"] = {"lmforge": ours.get("tokens_per_s"), "nanogpt": nano.get("tokens_per_s")}
    out["train_mfu"] = {"lmforge": ours.get("mfu"), "nanogpt": nano.get("mfu")}
    out["train_lmforge_over_nanogpt"] = ratio(ours.get("tokens_per_s"), nano.get("tokens_per_s"))
    plain, ac, fsdp = (memory.get(k, {}) for k in ("plain", "activation_checkpointing", "fsdp"))
    out["fsdp_over_plain_tokens_per_s"] = ratio(fsdp.get("tokens_per_s"), plain.get("tokens_per_s"))
    out["ac_over_plain_tokens_per_s"] = ratio(ac.get("tokens_per_s"), plain.get("tokens_per_s"))
    out["peak_cuda_GiB"] = {k: r.get("peak_cuda_GiB") for k, r in
                            (("plain", plain), ("activation_checkpointing", ac), ("fsdp", fsdp))}
    for key, row in decode.items():
        if key.startswith("batch_") and "tokens_per_s" in row:
            out[f"decode_{key}"] = {"lmforge_over_transformers": row["ratio_lmforge_over_transformers"],
                                    "lmforge_pct_of_limit": row.get("lmforge_pct_of_limit")}
    correct = r.get("correctness", {})
    out["bf16_loss_pass"] = correct.get("bf16_vs_fp32_loss", {}).get("pass")
    out["greedy_equal"] = {dtype: correct.get(key, {}).get("equal") for dtype, key in GREEDY_CHECKS.items()}
    for server, rows in r.get("serve", {}).items():
        if isinstance(rows, dict) and not server.endswith("_job"):
            out[f"serve_{server}_tokens_per_s"] = {k: v.get("tokens_per_s") for k, v in rows.items()
                                                   if isinstance(v, dict)} or rows.get("skipped")
    return out


def ratio(a, b):
    return round(a / b, 3) if a and b else None


def print_summary(r: dict) -> None:
    print("\nsummary")
    for key, value in r["summary"].items():
        if value is not None and not (isinstance(value, dict) and all(v is None for v in value.values())):
            print(f"  {key:<34} {brief(value)}")      # (what was not measured is left out)
    for part in PARTS:
        for name, row in r.get(part, {}).items():
            if not isinstance(row, dict):
                continue
            why = row.get("skipped") or row.get("error") or row.get("timed_out") or (row.get("rc") and row.get("tail"))
            if why:
                print(f"  {part}/{name}: {'skipped' if 'skipped' in row else 'FAILED'}: {brief(why)}")


if __name__ == "__main__":
    main()
