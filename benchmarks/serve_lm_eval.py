"""lm-eval scores a model through `lmforge serve`: a small multiple-choice task made from a
local file, run by lm-eval's `local-completions` model against the server (echo + logprobs
requests), and the same items scored by lmforge's own `Model.loglikelihood`. The accuracies
must agree.

    pip install "lm-eval[api]"              # not a test dependency
    python benchmarks/serve_lm_eval.py runs/quickstart --items 40

Items come from the Python documentation corpus lmforge's quickstart uses: the context is a
sentence without its last two words, the choices are those two words and the last two words of
three other sentences.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

from common import scratch_dir


def make_items(n: int, fits, seed: int = 0) -> list[dict]:
    """n items whose context + " " + choice `fits` the model's context."""
    from lmforge.quickstart import pydoc_corpus
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", pydoc_corpus()[:400_000])]
    sentences = [" ".join(s.split()) for s in sentences if 8 <= len(s.split()) <= 20 and s.isascii()]
    rng = random.Random(seed)
    rng.shuffle(sentences)
    items = []
    for s in sentences:
        if len(items) == n:
            break
        words = s.split()
        context, gold = " ".join(words[:-2]), " ".join(words[-2:])
        others = [" ".join(o.split()[-2:]) for o in rng.sample(sentences, 3)]
        choices = [gold] + [o for o in others if o != gold][:3]
        rng.shuffle(choices)
        if all(fits(context + " " + c) for c in choices):
            items.append({"context": context, "choices": choices, "label": choices.index(gold)})
    return items


TASK = """task: lmforge_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: label
metric_list:
  - metric: acc
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model_dir")
    p.add_argument("--items", type=int, default=40)
    args = p.parse_args()
    import httpx
    import lm_eval
    from lm_eval.tasks import TaskManager

    import lmforge
    work = scratch_dir("serve-lm-eval-")
    lm = lmforge.load(args.model_dir, device="cpu")
    items = make_items(args.items, lambda text: len(lm.tokenizer.encode(text)) < lm.config.context_length - 1)
    (work / "items.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    (work / "lmforge_mc.yaml").write_text(TASK.format(data=work / "items.jsonl"))

    t0 = time.perf_counter()
    own = []
    for item in items:                          # lm-eval joins context and choice with one space
        scores = [lm.loglikelihood(item["context"], " " + c)[0] for c in item["choices"]]
        own.append(max(range(len(scores)), key=scores.__getitem__))
    own_acc = sum(o == i["label"] for o, i in zip(own, items)) / len(items)
    own_s = time.perf_counter() - t0

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "lmforge", "serve", args.model_dir, "--port", str(port),
                               "--device", "cpu"], env={**os.environ}, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        t0 = time.perf_counter()
        out = lm_eval.simple_evaluate(
            model="local-completions",
            model_args={"model": Path(args.model_dir).name, "base_url": f"http://127.0.0.1:{port}/v1/completions",
                        "tokenizer_backend": "huggingface", "tokenizer": str(Path(args.model_dir).resolve()),
                        "num_concurrent": 4, "max_retries": 1},
            tasks=["lmforge_mc"], task_manager=TaskManager(include_path=str(work)), log_samples=True)
        served_s = time.perf_counter() - t0
    finally:
        server.terminate()
        server.wait(timeout=30)
    served_acc = out["results"]["lmforge_mc"]["acc,none"]
    samples = sorted(out["samples"]["lmforge_mc"], key=lambda s: s["doc_id"])
    served = [max(range(len(s["resps"])), key=lambda j: s["resps"][j][0][0]) for s in samples]
    agree = sum(a == b for a, b in zip(served, own))
    print(f"{len(items)} items, 4 choices each, model {args.model_dir}")
    print(f"lm-eval local-completions through lmforge serve: accuracy {served_acc:.4f} ({served_s:.1f} s)")
    print(f"lmforge Model.loglikelihood:                      accuracy {own_acc:.4f} ({own_s:.1f} s)")
    print(f"same choice on {agree} of {len(items)} items; accuracies {'equal' if served_acc == own_acc else 'DIFFER'}")


if __name__ == "__main__":
    main()
