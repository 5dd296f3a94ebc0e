"""The glass box through `lmforge serve`: vLLM's `prompt_logprobs` equal `lm.score`, every
inspection route answers what its Python call returns, bad bodies get one-line 400s naming the
field, inspections run between two decode steps (never more than one between two), and 16
greedy streams write what they write alone while inspections run beside them."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import httpx
import pytest
import torch

from .test_serve import CHROMIUM, PROMPTS, browser_page, random_decoder_dir, running_server, three_families


def plain(result) -> dict:
    """A result's `to_dict()` as it reads back from JSON."""
    return json.loads(json.dumps(result.to_dict()))


@pytest.fixture(scope="module")
def models(char_data, tmp_path_factory):
    return three_families(char_data, tmp_path_factory.mktemp("inspect-serve"), labels=["sports", "music"])


@pytest.fixture(scope="module")
def clients(models):
    from starlette.testclient import TestClient

    from lmforge.serve import ServeConfig
    from lmforge.serve.app import create_app
    with TestClient(create_app(models["decoder"], ServeConfig(model_dir="x", max_inspect_tokens=40))) as dec, \
            TestClient(create_app(models["seq2seq"], ServeConfig(model_dir="x"))) as s2s, \
            TestClient(create_app(models["encoder"], ServeConfig(model_dir="x"))) as enc:
        yield {"decoder": dec, "seq2seq": s2s, "encoder": enc}


def test_prompt_logprobs_equal_lm_score(models, clients):
    lm, http = models["decoder"], clients["decoder"]
    text = "def f(x): return x"
    scored = lm.score(text)["tokens"]
    ids = [lm.tokenizer.eos_id] + [t["id"] for t in scored]            # what `score` reads: <eos> first
    r = http.post("/v1/completions", json={"prompt": ids, "max_tokens": 2, "temperature": 0, "prompt_logprobs": 3})
    assert r.status_code == 200, r.text
    (choice,) = r.json()["choices"]
    got = choice["prompt_logprobs"]
    assert got[0] is None and len(got) == len(ids)
    with torch.no_grad():
        logp = lm.module(torch.tensor([ids]))[0, :-1].float().log_softmax(-1)     # (T-1, V) the oracle's
    for t, (position, want) in enumerate(zip(got[1:], scored)):
        first_id, first = next(iter(position.items()))                   # the prompt's own token first
        assert int(first_id) == want["id"] and first["decoded_token"] == want["token"]
        assert first["logprob"] == pytest.approx(want["logprob"], abs=1e-5)
        assert first["rank"] == 1 + int((logp[t] > logp[t, want["id"]]).sum())
        top = logp[t].topk(3)
        assert {int(i) for i, v in position.items() if v["rank"] <= 3} == set(top.indices.tolist())
        assert len(position) == 3 + (first["rank"] > 3)
        assert sorted(v["logprob"] for v in position.values() if v["rank"] <= 3) == \
            pytest.approx(sorted(top.values.tolist()), abs=1e-5)
    both = http.post("/v1/completions", json={"prompt": text, "max_tokens": 1, "temperature": 0, "n": 2,
                                              "prompt_logprobs": 0, "echo": True, "logprobs": 2}).json()
    for c in both["choices"]:
        assert all(p is None or len(p) == 1 for p in c["prompt_logprobs"])
        assert c["logprobs"]["token_logprobs"][1] == next(iter(c["prompt_logprobs"][1].values()))["logprob"]
        assert all(t is None or len(t) == 2 for t in c["logprobs"]["top_logprobs"])
    for body, words in [({"prompt_logprobs": 3, "stream": True}, "not available with 'stream'"),
                        ({"prompt_logprobs": 21}, "'prompt_logprobs' must be >= 0 and <= 20"),
                        ({"prompt_logprobs": "3"}, "'prompt_logprobs' must be an integer")]:
        bad = http.post("/v1/completions", json={"prompt": "x", **body})
        assert bad.status_code == 400 and words in bad.json()["error"]["message"], bad.text
        assert bad.json()["error"]["param"] == "prompt_logprobs"
    s2s = clients["seq2seq"].post("/v1/completions", json={"prompt": "ab", "prompt_logprobs": 1})
    assert s2s.status_code == 400 and "encoder-decoder" in s2s.json()["error"]["message"]


def test_every_inspection_route_equals_its_python_call(models, clients):
    dec, http = models["decoder"], clients["decoder"]
    calls = [
        ("/inspect/lens", {"text": "The cat sat", "top_k": 3}, lambda: dec.logit_lens("The cat sat", top_k=3)),
        ("/inspect/dla", {"text": "The cat", "answer": "a", "wrong": "e", "position": 3},
         lambda: dec.dla("The cat", "a", "e", 3)),
        ("/inspect/patch", {"text": "abcab", "corrupted": "xbcab", "answer": "c", "wrong": "d"},
         lambda: dec.patch("abcab", "xbcab", "c", "d")),
        ("/inspect/attribute", {"text": "hello wor", "method": "gxi"},
         lambda: dec.attribute("hello wor", method="gxi")),
        ("/inspect/attribute", {"text": "hello wor", "target": "l", "steps": 8, "batch_size": 3},
         lambda: dec.attribute("hello wor", target="l", steps=8, batch_size=3)),
        ("/inspect/heads", {"seq_len": 12, "seed": 3}, lambda: dec.head_scores(seq_len=12, seed=3)),
    ]
    for path, body, python in calls:
        r = http.post(path, json=body)
        assert r.status_code == 200, (path, r.text)
        assert r.json() == plain(python()), path
    maps, (queries, _) = dec.attention_maps("a cat", with_tokens=True)
    attn = http.post("/attention", json={"text": "a cat", "layer": 1}).json()
    assert attn["queries"] == queries and torch.allclose(torch.tensor(attn["maps"]), maps[1], atol=1e-4)
    enc = models["encoder"]
    r = clients["encoder"].post("/inspect/attribute", json={"text": "a cat", "target": "music", "steps": 4})
    assert r.json() == plain(enc.attribute("a cat", target="music", steps=4)) and r.json()["target"] == "music"
    assert clients["encoder"].post("/inspect/lens", json={"text": "a cat"}).json() == plain(enc.logit_lens("a cat"))
    s2s = models["seq2seq"]
    r = clients["seq2seq"].post("/inspect/lens", json={"text": "ab", "target": "cd"})
    assert r.json() == plain(s2s.logit_lens("ab", "cd"))
    r = clients["seq2seq"].post("/inspect/heads", json={"seq_len": 5, "kind": "cross"})
    assert r.json() == plain(s2s.head_scores(seq_len=5, kind="cross"))


@pytest.mark.parametrize("path, body, param, words", [
    ("/inspect/lens", {"text": "x" * 41}, "text", "'text' has 41 tokens; inspections here take at most 40"),
    ("/inspect/lens", {}, "text", "'text' must be a non-empty string"),
    ("/inspect/lens", {"text": "ab", "top_k": 50}, "top_k", "'top_k' must be >= 1 and <= 20"),
    ("/inspect/dla", {"text": "ab", "answer": "xy"}, "answer", "'answer' 'xy' must be one token; it is 2"),
    ("/inspect/dla", {"text": "ab", "answer": "x", "position": 2}, "position", "'position' must be from -2 to 1"),
    ("/inspect/patch", {"text": "abc", "corrupted": "ab", "answer": "x", "wrong": "y"}, "corrupted",
     "'corrupted' must have as many tokens as 'text'"),
    ("/inspect/patch", {"text": "abc", "corrupted": "abd", "answer": "x"}, "wrong", "'wrong' must be a non-empty"),
    ("/inspect/attribute", {"text": "ab", "steps": 1000}, "steps", "'steps' must be >= 2 and <= 256"),
    ("/inspect/attribute", {"text": "ab", "method": "shap"}, "method", "'method' must be one of ig, gxi"),
    ("/inspect/attribute", {"text": "ab", "batch_size": 0}, "batch_size", "'batch_size' must be >= 1"),
    ("/inspect/heads", {"seq_len": 30}, "seq_len", "'seq_len' must be >= 2 and <= 19"),
    ("/inspect/heads", {"kind": "cross"}, "kind", "'kind' must be one of auto, self"),
    ("/attention", {"text": "y" * 41}, "text", "'text' has 41 tokens"),
])
def test_bad_inspection_bodies_get_a_400_naming_the_field(clients, path, body, param, words):
    r = clients["decoder"].post(path, json=body)
    assert r.status_code == 400 and r.json()["error"]["param"] == param, r.text
    assert words in r.json()["error"]["message"] and "\n" not in r.json()["error"]["message"]


def test_other_families_get_a_clear_400(clients):
    dla = clients["encoder"].post("/inspect/dla", json={"text": "a cat", "answer": "a"})
    assert dla.status_code == 400 and "pre-norm decoders" in dla.json()["error"]["message"]
    label = clients["encoder"].post("/inspect/attribute", json={"text": "a cat", "target": "jazz"})
    assert label.status_code == 400 and label.json()["error"]["param"] == "target"
    patch = clients["seq2seq"].post("/inspect/patch", json={"text": "ab", "corrupted": "cd", "answer": "a",
                                                            "wrong": "b"})
    assert patch.status_code == 400 and "decoder models" in patch.json()["error"]["message"]


def test_at_most_one_job_runs_between_two_decode_steps(models):
    """A batch decoding beside 6 queued jobs: each job sees the batch at least one step further on
    (never two jobs without a step between them; more steps when a job took longer than a step)."""
    from lmforge.generate import GenerationConfig
    from lmforge.serve.scheduler import Scheduler, Sequence
    lm = models["decoder"]
    scheduler = Scheduler(lm.module, lm.tokenizer, max_batch=4).start()
    try:
        seen, done = [], threading.Event()
        seq = Sequence(lm.tokenizer.encode("x"), GenerationConfig(max_new_tokens=40, greedy=True),
                       lambda e: done.set() if type(e).__name__ == "Finish" else None)
        scheduler.submit([seq])
        while not seq.out_ids:
            time.sleep(0.001)
        futures = [scheduler.between_steps(lambda: seen.append(len(seq.out_ids)) or len(seen)) for _ in range(6)]
        assert [f.result(timeout=30) for f in futures] == [1, 2, 3, 4, 5, 6]
        assert done.wait(30) and len(seq.out_ids) == 40
        assert all(b > a for a, b in zip(seen, seen[1:])), seen          # a step between any two jobs
        failing = scheduler.between_steps(lambda: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            failing.result(timeout=30)
        assert scheduler.between_steps(lambda: torch.is_grad_enabled()).result(timeout=30)   # attribution's gradients
    finally:
        scheduler.shutdown()


def test_jobs_take_at_most_half_of_a_running_batchs_time():
    """After a job of t seconds, the next one waits until a running batch has had t seconds; with
    no batch it runs at once."""
    from lmforge.serve.jobs import Jobs
    jobs = Jobs()
    first = jobs.add(lambda: time.sleep(0.2) or "slept")
    jobs.run(jobs.take(batch_running=True))
    assert first.result() == "slept"
    second = jobs.add(lambda: "next")
    assert jobs.take(batch_running=True) is None                   # the batch's turn now
    time.sleep(0.25)
    jobs.run(jobs.take(batch_running=True))
    assert second.result() == "next"
    jobs.add(lambda: "at once")
    assert jobs.take(batch_running=False) is not None


def test_16_streams_equal_their_solo_outputs_while_inspections_run(char_data, tmp_path):
    model = random_decoder_dir(tmp_path / "dec", char_data)
    lengths = [6 + 2 * i for i in range(16)]
    with running_server(model) as url:
        def complete(i: int, stream: bool) -> str:
            body = {"prompt": PROMPTS[i], "max_tokens": lengths[i], "temperature": 0, "stream": stream}
            if not stream:
                return httpx.post(url + "/v1/completions", json=body, timeout=60).json()["choices"][0]["text"]
            with httpx.stream("POST", url + "/v1/completions", json=body, timeout=60) as r:
                events = [line[6:] for line in r.iter_lines() if line.startswith("data: {")]
            return "".join(c["text"] for e in events for c in json.loads(e)["choices"])
        solo = [complete(i, False) for i in range(16)]
        got, inspected, errors = [None] * 16, [], []
        streaming = threading.Event()

        def stream(i: int) -> None:
            try:
                got[i] = complete(i, True)
            except Exception as e:          # counted below: there must be none
                errors.append(e)

        def inspect() -> None:
            bodies = [("/inspect/lens", {"text": "The cat sat"}), ("/inspect/heads", {"seq_len": 10}),
                      ("/inspect/attribute", {"text": "abc", "steps": 4}), ("/attention", {"text": "a b"})]
            while not streaming.is_set() or len(inspected) < 4:
                path, body = bodies[len(inspected) % len(bodies)]
                inspected.append(httpx.post(url + path, json=body, timeout=60).status_code)
        threads = [threading.Thread(target=stream, args=(i,)) for i in range(16)] + [threading.Thread(target=inspect)]
        for t in threads:
            t.start()
        for t in threads[:16]:
            t.join()
        streaming.set()
        threads[-1].join()
    assert errors == [] and got == solo
    assert set(inspected) == {200} and len(inspected) >= 4


DOCS = Path(__file__).resolve().parents[1] / "docs"


def shoot(page, selector: str, name: str, tmp_path: Path) -> None:
    """A screenshot of one view: into tmp_path, or into docs/ with LMFORGE_DOCS_SCREENSHOTS=1 (how
    docs/serving.md's pictures are taken)."""
    out = (DOCS if os.environ.get("LMFORGE_DOCS_SCREENSHOTS") else tmp_path) / name
    page.locator(selector).screenshot(path=str(out))
    assert out.stat().st_size > 3_000


def run_view(page, tab: str, button: str, out: str, **fills: str) -> None:
    page.click(f"#tab-{tab}")
    for field, value in fills.items():
        page.fill(f"#{field.replace('_', '-')}", value)
    page.click(button)
    page.wait_for_selector(f"#{out}[data-ready='true']", timeout=30_000)
    assert 'class="error"' not in page.inner_html(f"#{out}"), page.inner_text(f"#{out}")


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (/usr/bin/chromium); "
                                                   ".ci/run installs it with apt-get")
def test_the_playgrounds_glass_box_views_in_a_browser(char_data, tmp_path, models):
    """Chromium drives the lens, attribution, patching and heads views against a real server (a
    decoder; then a classifier for attribution), and each view shows what the route answers."""
    dec = models["decoder"]
    model = random_decoder_dir(tmp_path / "dec", char_data)
    with running_server(model) as url, browser_page(url + "/") as (page, requested):
        page.wait_for_function("document.getElementById('model-name').textContent.includes('dec')")
        run_view(page, "lens", "#lens-go", "lens-out")
        lens = dec.logit_lens("The cat sat on the mat")
        cells = page.query_selector_all("#lens-out td")
        assert len(cells) == len(lens.layers) * len(lens.tokens)
        assert cells[0].inner_text() == lens.top_tokens[-1][0][0].replace(" ", "␣")[:6]     # the output row on top
        cells[0].hover()
        assert page.inner_text("#tip").count("\n") >= 5                   # the top 5, and the next token's rank
        shoot(page, "#view-lens", "playground-lens.png", tmp_path)
        run_view(page, "attribution", "#attr-go", "attr-out", attr_text="hello wor")
        assert len(page.query_selector_all("#attr-tokens .tok")) == len(dec.attribute("hello wor").tokens)
        assert "integrated gradients" in page.inner_text("#attr-head")
        run_view(page, "patching", "#patch-go", "patch-out")
        patch = dec.patch("abcab", "xbcab", "c", "d")
        assert len(page.query_selector_all("#patch-out td")) == patch.resid.numel() + patch.heads.numel()
        assert page.query_selector_all("#patch-out td")[0].inner_text() == f"{float(patch.resid[0, 0]):.2f}"
        shoot(page, "#view-patching", "playground-patching.png", tmp_path)
        run_view(page, "heads", "#heads-go", "heads-out")
        assert len(page.query_selector_all("#heads-out table")) == 3           # previous token, induction, entropy
        shoot(page, "#view-heads", "playground-heads.png", tmp_path)
        assert all(u.startswith(url) for u in requested)                     # nothing from the internet
    classifier = tmp_path / "topics"
    models["encoder"].save(classifier)
    with running_server(classifier) as url, browser_page(url + "/") as (page, _):
        page.wait_for_function("document.getElementById('model-name').textContent.includes('encoder')")
        run_view(page, "attribution", "#attr-go", "attr-out", attr_text="a cat sat", attr_target="music")
        tokens = page.query_selector_all("#attr-tokens .tok")
        assert [t.inner_text() for t in tokens] == models["encoder"].attribute("a cat sat").tokens
        assert "'music'" not in page.inner_text("#attr-head") and '"music"' in page.inner_text("#attr-head")
        assert page.is_hidden("#tab-patching")                                # a classifier cannot be patched
        shoot(page, "#view-attribution", "playground-attribution.png", tmp_path)
