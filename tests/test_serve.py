"""`lmforge serve`: the real server (uvicorn in a subprocess on 127.0.0.1) driven by the official
`openai` client and by raw HTTP for what a client library would refuse to send."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

openai = pytest.importorskip("openai")
httpx = pytest.importorskip("httpx")

KEY = "test-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def random_decoder_dir(out: Path, tokenizer_dir: Path, preset: str = "gpt-tiny", context_length: int = 96) -> Path:
    """A random model on the char tokenizer, its head sharpened so that greedy choices are
    never near ties (the text varies from token to token, unlike a barely trained model's) and
    special and byte tokens never the greedy choice (the lengths asked for are the lengths produced,
    one character per token)."""
    from lmforge.api import Model
    from lmforge.config import get_preset
    from lmforge.model import build_model
    from lmforge.tokenizers import Tokenizer
    tokenizer = Tokenizer.load(tokenizer_dir)
    torch.manual_seed(0)
    config = get_preset(preset, vocab_size=tokenizer.vocab_size, context_length=context_length, tie_embeddings=False)
    module = build_model(config).eval()
    with torch.no_grad():
        module.lm_head.weight.mul_(5.0)
        module.transformer.tok_emb.weight.mul_(5.0)
        unwanted = [i for i in range(tokenizer.vocab_size)            # special and byte-fallback tokens
                    if i in tokenizer.special_ids or tokenizer.id_to_token(i).startswith("<0x")]
        module.lm_head.weight[unwanted] = 0.0                         # logit 0: never the best of ~100
    Model(module, config, tokenizer).save(out)
    return out


@contextlib.contextmanager
def running_server(model_dir: Path, *extra: str):
    """`lmforge serve` in a subprocess; yields its base URL once /health answers."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("LMFORGE_API_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "lmforge", "serve", str(model_dir), "--port", str(port),
                             "--device", "cpu", *extra], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the server exited:\n{proc.stdout.read()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            if time.time() > deadline:
                raise RuntimeError("the server did not start within 90 s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, char_data) -> Path:
    return random_decoder_dir(tmp_path_factory.mktemp("serve") / "randgpt", char_data)


@pytest.fixture(scope="module")
def server(model_dir):
    with running_server(model_dir, "--api-key", KEY, "--max-batch-size", "16", "--max-queue", "64") as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server + "/v1", api_key=KEY, max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def lm(model_dir):
    from lmforge.api import load
    return load(model_dir, device="cpu")


def cli_generate(model_dir: Path, prompt: str, *flags: str) -> str:
    """The text `lmforge generate --json` writes for one prompt."""
    from lmforge.cli import main
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["generate", str(model_dir), prompt, "--json", "--device", "cpu", *flags]) == 0
    return json.loads(out.getvalue().strip().splitlines()[-1])["text"]


PROMPTS = ["The ", "import os", "def f(x):", "Hello, world", "class A", "for i in", "# a comment", "x = [1, 2",
           "return", "while True", "print(", "try:", "if a", "lambda", "with open", "yield"]


def test_completion_equals_lmforge_generate(client, model_dir):
    r = client.completions.create(model="randgpt", prompt="The ", max_tokens=12, temperature=0)
    text = r.choices[0].text
    assert text == cli_generate(model_dir, "The ", "--max-new-tokens", "12", "--greedy")
    assert len(set(text)) > 2                                   # a real, varied continuation
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 12
    assert r.usage.prompt_tokens == 4 and r.model == "randgpt"


def test_chat_and_streaming_with_usage(client):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour"}]
    whole = client.chat.completions.create(model="randgpt", messages=messages, max_tokens=10, temperature=0)
    reply = whole.choices[0].message
    assert reply.role == "assistant" and whole.choices[0].finish_reason in ("stop", "length")
    chunks = list(client.chat.completions.create(model="randgpt", messages=messages, max_tokens=10, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == reply.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].choices == [] and chunks[-1].usage.total_tokens == whole.usage.total_tokens


def test_stop_strings(client):
    full = client.completions.create(model="m", prompt="import os", max_tokens=16, temperature=0).choices[0].text
    stop = full[5:7]
    cut = client.completions.create(model="m", prompt="import os", max_tokens=16, temperature=0, stop=[stop, "@@"])
    assert cut.choices[0].text == full[: full.index(stop)] and cut.choices[0].finish_reason == "stop"


def test_seeded_sampling_reproduces_and_n(client, model_dir):
    kw = dict(model="m", prompt="Hello, world", max_tokens=12, temperature=1.0)
    a = client.completions.create(seed=7, **kw).choices[0].text
    assert a == client.completions.create(seed=7, **kw).choices[0].text
    assert a == cli_generate(model_dir, "Hello, world", "--max-new-tokens", "12", "--temperature", "1.0",
                             "--seed", "7")
    assert a != client.completions.create(seed=8, **kw).choices[0].text
    two = client.completions.create(seed=7, n=2, **kw)
    assert [c.index for c in two.choices] == [0, 1] and two.choices[0].text == a
    assert two.choices[0].text != two.choices[1].text and two.usage.completion_tokens == 24


def test_min_p_and_json_mode_as_lmforge_generate(client, model_dir):
    kw = dict(model="m", prompt="x = ", max_tokens=10, temperature=1.0, seed=3)
    got = client.completions.create(extra_body={"min_p": 0.2}, **kw).choices[0].text
    assert got == cli_generate(model_dir, "x = ", "--max-new-tokens", "10", "--temperature", "1.0", "--seed", "3",
                               "--min-p", "0.2")
    reply = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "JSON please"}],
                                           max_tokens=30, temperature=0, response_format={"type": "json_object"})
    text = reply.choices[0].message.content
    assert text.lstrip().startswith("{")
    constrained = client.completions.create(model="m", prompt="data:", max_tokens=30, temperature=0,
                                            extra_body={"response_format": {"type": "json_object"}}).choices[0].text
    assert constrained == cli_generate(model_dir, "data:", "--max-new-tokens", "30", "--greedy", "--json-mode")
    if reply.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(text), dict)
    with pytest.raises(openai.BadRequestError, match="min_p"):
        client.completions.create(extra_body={"min_p": 1.5}, **kw)


def test_logprobs(client):
    r = client.completions.create(model="m", prompt="def f(x):", max_tokens=6, temperature=0, logprobs=3)
    lp = r.choices[0].logprobs
    assert "".join(lp.tokens) == r.choices[0].text and len(lp.token_logprobs) == 6
    for chosen, top in zip(lp.token_logprobs, lp.top_logprobs):
        assert len(top) == 3 and chosen == pytest.approx(max(top.values()))      # greedy took the best
    echoed = client.completions.create(model="m", prompt="def f(x):", max_tokens=1, temperature=0, logprobs=1,
                                       echo=True).choices[0]
    assert echoed.text.startswith("def f(x):") and echoed.logprobs.token_logprobs[0] is None
    assert len(echoed.logprobs.tokens) == len("def f(x):") + 1
    chat = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}], max_tokens=4,
                                          temperature=0, logprobs=True, top_logprobs=2)
    content = chat.choices[0].logprobs.content
    assert len(content) == chat.usage.completion_tokens and all(len(t.top_logprobs) == 2 for t in content)


def test_models_tokenizer_routes_and_auth(client, server):
    assert [m.id for m in client.models.list()] == ["randgpt"]
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server + "/v1", api_key="wrong", max_retries=0).models.list()
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model="m", prompt="x", temperature=5)
    assert e.value.body["param"] == "temperature" and "<= 2" in e.value.body["message"]
    with pytest.raises(openai.BadRequestError, match="encoder"):
        client.embeddings.create(model="m", input="a text")
    ids = httpx.post(server + "/tokenize", json={"prompt": "abc"}).json()
    assert ids["count"] == 3 and httpx.post(server + "/detokenize", json={"tokens": ids["tokens"]}).json() == \
        {"prompt": "abc"}
    assert httpx.get(server + "/tokenizer_info").json()["model_max_length"] == 96
    assert httpx.get(server + "/health").json() == {"status": "ok"}     # no key needed


def test_16_concurrent_streams_equal_their_solo_outputs(client, lm):
    lengths = [4 + 2 * i for i in range(16)]          # they finish at different steps: rows leave and are reused
    solo = [client.completions.create(model="m", prompt=p, max_tokens=n, temperature=0).choices[0].text
            for p, n in zip(PROMPTS, lengths)]
    longest = lm.generate(PROMPTS, max_new_tokens=max(lengths), greedy=True)   # one character per token
    assert solo == [text[:n] for text, n in zip(longest, lengths)]
    got, errors = [None] * 16, []

    def one(i: int) -> None:
        try:
            stream = client.completions.create(model="m", prompt=PROMPTS[i], max_tokens=lengths[i], temperature=0,
                                               stream=True)
            got[i] = "".join(c.choices[0].text for c in stream if c.choices)
        except Exception as e:        # counted below: there must be none
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and got == solo


@pytest.mark.slow
def test_the_compiled_cpu_step_serves_the_same_text(model_dir, lm):
    """`lmforge serve --compile`: one stream alone (the compiled step of one row), then three
    together (two or three rows: eager), give the text eager decoding gives; /metrics counts both."""
    lengths = [9, 14, 20]
    expect = [text[:n] for text, n in zip(lm.generate(PROMPTS[:3], max_new_tokens=20, greedy=True), lengths)]
    with running_server(model_dir, "--compile", "--max-batch-size", "4") as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=120)
        alone = client.completions.create(model="m", prompt=PROMPTS[0], max_tokens=lengths[0], temperature=0)
        got = [None] * 3

        def one(i: int) -> None:
            stream = client.completions.create(model="m", prompt=PROMPTS[i], max_tokens=lengths[i], temperature=0,
                                               stream=True)
            got[i] = "".join(c.choices[0].text for c in stream if c.choices)
        threads = [threading.Thread(target=one, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert alone.choices[0].text == expect[0] and got == expect
        assert metric(url, 'lmforge_decode_steps_total{step="compiled"}') >= lengths[0] - 1
        assert metric(url, 'lmforge_decode_steps_total{step="eager"}') > 0


def _post(server, path, content, headers=None):
    return httpx.post(server + path, content=content, timeout=30,
                      headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json",
                               **(headers or {})})


@pytest.mark.parametrize("body, status, words", [
    (b'{"prompt": "x", ', 400, "not valid JSON"),
    (b'\xff\xfe{"prompt": "x"}', 400, "not UTF-8"),
    (b'["a list"]', 400, "JSON object"),
    (json.dumps({"prompt": 5}).encode(), 400, "'prompt' must be"),
    (json.dumps({"prompt": "x", "max_tokens": -3}).encode(), 400, "'max_tokens' must be >= 1"),
    (json.dumps({"prompt": "x", "max_tokens": "ten"}).encode(), 400, "'max_tokens' must be an integer"),
    (json.dumps({"prompt": "x", "n": 99}).encode(), 400, "'n' must be >= 1 and <= 8"),
    (json.dumps({"prompt": "x", "stream": "yes"}).encode(), 400, "'stream' must be true or false"),
    (json.dumps({"prompt": "x", "no_repeat_ngram_size": -1}).encode(), 400, "'no_repeat_ngram_size' must be >= 0"),
    (json.dumps({"prompt": "x" * 200}).encode(), 400, "the model's context is 96"),
])
def test_bad_completion_requests(server, body, status, words):
    r = _post(server, "/v1/completions", body)
    assert r.status_code == status and words in r.json()["error"]["message"], r.text
    assert set(r.json()["error"]) == {"message", "type", "param", "code"}


@pytest.mark.parametrize("messages, words", [
    ([], "non-empty list"),
    ([{"role": "wizard", "content": "hi"}], "messages[0].role is 'wizard'"),
    ([{"role": "user", "content": 3}], "messages[0].content must be a string"),
])
def test_bad_chat_requests(server, messages, words):
    r = _post(server, "/v1/chat/completions", json.dumps({"messages": messages}).encode())
    assert r.status_code == 400 and words in r.json()["error"]["message"]


def test_huge_body_refused(server):
    r = _post(server, "/v1/completions", b'{"prompt": "' + b"a" * (10 << 20) + b'"}')
    assert r.status_code == 413 and "limit" in r.json()["error"]["message"]


def metric(url: str, name: str) -> float:
    """One sample of the server's /metrics (0 when it has not been counted yet)."""
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def test_a_client_that_hangs_up_mid_stream_frees_its_rows_at_once(char_data, tmp_path):
    """8 sequences of 3,000 tokens each (seconds of work) are cancelled by closing the socket
    after the first chunk: the rows are free well before they could have finished, /metrics
    counts 8 cancelled sequences, and the server goes on answering."""
    model = random_decoder_dir(tmp_path / "long", char_data, context_length=3072)
    with running_server(model) as url:
        with httpx.stream("POST", url + "/v1/completions", timeout=30,
                          json={"prompt": "x", "max_tokens": 3000, "n": 8, "temperature": 0, "stream": True}) as s:
            lines = s.iter_lines()
            assert next(lines).startswith("data: ")           # generation is under way; hang up
            hung_up = time.time()
        while metric(url, "lmforge_running_sequences") > 0 or \
                metric(url, 'lmforge_finished_sequences_total{reason="cancelled"}') < 8:
            assert time.time() < hung_up + 5, "the disconnected client's rows were not freed"
            time.sleep(0.02)
        freed_after = time.time() - hung_up
        written = metric(url, "lmforge_generated_tokens_total")
        assert written < 8 * 3000 / 4, f"{written} tokens were written for a client that had gone"
        r = httpx.post(url + "/v1/completions", json={"prompt": "x", "max_tokens": 4, "temperature": 0}, timeout=30)
        assert r.status_code == 200 and r.json()["choices"][0]["finish_reason"] == "length"
        assert metric(url, 'lmforge_finished_sequences_total{reason="length"}') == 1
        print(f"rows freed {freed_after:.2f} s after the hang-up, {written:.0f} tokens written")


def test_100_requests_against_a_queue_of_64(server):
    async def flood():
        async with httpx.AsyncClient(timeout=120, headers={"Authorization": f"Bearer {KEY}"}) as c:
            return await asyncio.gather(*(c.post(server + "/v1/completions",
                                                 json={"prompt": PROMPTS[i % 16], "max_tokens": 40})
                                          for i in range(100)))
    responses = asyncio.run(flood())
    codes = [r.status_code for r in responses]
    assert set(codes) <= {200, 503} and codes.count(503) >= 1 and codes.count(200) >= 64
    busy = next(r for r in responses if r.status_code == 503)
    assert "busy" in busy.json()["error"]["message"] and busy.headers["retry-after"] == "1"
    ok = _post(server, "/v1/completions", json.dumps({"prompt": "x", "max_tokens": 2}).encode())
    assert ok.status_code == 200                                        # still serving
    metrics = httpx.get(server + "/metrics").text
    assert 'lmforge_requests_total{route="/v1/completions",status="503"}' in metrics
    assert 'lmforge_requests_total{route="/v1/completions",status="400"}' in metrics
    assert "lmforge_time_to_first_token_seconds_bucket" in metrics and "lmforge_generated_tokens_total" in metrics


CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run"]


@contextlib.contextmanager
def browser_page(url: str, width: int = 1200, height: int = 800):
    """Debian's Chromium (through Playwright) open at `url`; yields the page and the list of URLs it
    requests (to check that nothing comes from the internet)."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            requested = []
            page.on("request", lambda r: requested.append(r.url))
            page.goto(url)
            yield page, requested
        finally:
            browser.close()


@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not installed (/usr/bin/chromium); "
                                                   ".ci/run installs it with apt-get")
def test_playground_in_a_browser(server, tmp_path):
    with browser_page(server + "/") as (page, requested):
        page.fill("#api-key", KEY)
        page.dispatch_event("#api-key", "change")
        page.wait_for_function("document.getElementById('model-name').textContent.includes('randgpt')")
        page.fill("#temperature", "0")
        page.fill("#max_tokens", "24")
        page.fill("#prompt", "Hello")
        page.click("#send")
        page.wait_for_selector(".msg.assistant[data-done='true']", timeout=30_000)
        reply = page.inner_text(".msg.assistant .content")
        assert len(reply) > 0 and "error" not in page.inner_html(".msg.assistant")
        page.click("#tab-tokens")
        tokens = page.query_selector_all("#tokens .tok")
        assert len(tokens) == 24 and "".join(t.inner_text() for t in tokens).strip() == reply.strip()
        tokens[0].hover()
        assert page.inner_text("#tip").count("\n") == 5                # p of the token + 5 alternatives
        page.click("#tab-attention")
        page.fill("#attn-text", "The cat sat")
        page.click("#attn-show")
        page.wait_for_selector("#attn-grid[data-ready='true']")
        assert len(page.query_selector_all("#attn-grid canvas")) == 2   # all heads of layer 0
        page.select_option("#attn-head", "1")
        page.wait_for_function("document.querySelectorAll('#attn-grid canvas').length === 1")
        page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)
        assert (tmp_path / "playground.png").stat().st_size > 10_000
        assert all(u.startswith(server) for u in requested)              # nothing from the internet


def random_seq2seq_dir(out: Path, tokenizer_dir: Path) -> Path:
    """A random encoder-decoder on the char tokenizer whose output depends on its source (the
    cross attention strengthened), with special and byte tokens never the greedy choice."""
    from lmforge.api import Model
    from lmforge.config import get_preset
    from lmforge.model import build_model
    from lmforge.tokenizers import Tokenizer
    tokenizer = Tokenizer.load(tokenizer_dir)
    torch.manual_seed(0)
    config = get_preset("seq2seq-tiny", vocab_size=tokenizer.vocab_size, context_length=64, tie_embeddings=False)
    module = build_model(config).eval()
    with torch.no_grad():
        module.lm_head.weight.mul_(5.0)
        for block in module.decoder.blocks:
            block.cross_attn.kv.weight.mul_(3.0)
            block.cross_attn.out.weight.mul_(3.0)
        unwanted = [i for i in range(tokenizer.vocab_size)
                    if i in tokenizer.special_ids or tokenizer.id_to_token(i).startswith("<0x")]
        module.lm_head.weight[unwanted] = 0.0
    Model(module, config, tokenizer).save(out)
    return out


def three_families(tokenizer_dir: Path, out: Path, labels: list[str]) -> dict:
    """Loaded random models of each family on the char tokenizer: a decoder (context 96), an
    encoder-decoder and a bert-tiny classifier of `labels` (context 32)."""
    from lmforge.api import Model, load
    from lmforge.config import get_preset
    from lmforge.model import build_model
    from lmforge.tokenizers import Tokenizer
    tokenizer = Tokenizer.load(tokenizer_dir)
    torch.manual_seed(0)
    config = get_preset("bert-tiny", vocab_size=tokenizer.vocab_size, labels=labels, context_length=32)
    return {"decoder": load(random_decoder_dir(out / "dec", tokenizer_dir), device="cpu"),
            "seq2seq": load(random_seq2seq_dir(out / "s2s", tokenizer_dir), device="cpu"),
            "encoder": Model(build_model(config).eval(), config, tokenizer)}


def test_encoder_decoder_translates_through_the_server(char_data, tmp_path):
    """An encoder-decoder batched continuously: 6 concurrent streamed greedy requests with sources
    of different lengths, each equal to `translate(num_beams=1)` alone; the chat route translates
    the last user message; what an encoder-decoder cannot do gets a 400."""
    from lmforge.api import load
    model = random_seq2seq_dir(tmp_path / "s2s", char_data)
    texts = ["Hello world", "a", "The quick brown fox jumps", "def f(x): return x", "zzz", "import os; print(1)"]
    lm = load(model, device="cpu")
    want = lm.translate(texts, num_beams=1, max_new_tokens=20)
    assert len(set(want)) >= 4                                   # the sources matter
    with running_server(model) as url:
        client = openai.OpenAI(base_url=url + "/v1", api_key="none", max_retries=0, timeout=60)
        got, errors = [None] * len(texts), []

        def one(i: int) -> None:
            try:
                stream = client.completions.create(model="s2s", prompt=texts[i], max_tokens=20, temperature=0,
                                                   stream=True)
                got[i] = "".join(c.choices[0].text for c in stream if c.choices)
            except Exception as e:                               # pragma: no cover - reported below
                errors.append(repr(e))
        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(texts))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [] and got == want
        reply = client.chat.completions.create(model="s2s", max_tokens=20, temperature=0, messages=[
            {"role": "system", "content": "translate"}, {"role": "user", "content": texts[2]}])
        assert reply.choices[0].message.content == want[2] and reply.choices[0].finish_reason == "length"
        source = httpx.post(url + "/tokenize", json={"prompt": "zzz"}).json()["tokens"]
        assert source == lm.tokenizer.encode("zzz") + [lm.tokenizer.eos_id]       # what the encoder is given
        with pytest.raises(openai.BadRequestError, match="encoder-decoder reads its prompt"):
            client.completions.create(model="s2s", prompt="x", echo=True, logprobs=1, max_tokens=2)
        with pytest.raises(openai.BadRequestError, match="last user message"):
            client.chat.completions.create(model="s2s", messages=[{"role": "user", "content": "a"},
                                                                  {"role": "assistant", "content": "b"}])


@pytest.mark.parametrize("labels", [[], ["sports", "music"]])
def test_encoder_models_embed_classify_and_refuse_generation(char_data, labels):
    """An encoder served in-process (Starlette's test client): embeddings, the playground's
    similarity / label probabilities and attention, and a clear 400 for generation."""
    from starlette.testclient import TestClient

    from lmforge.api import Model
    from lmforge.config import get_preset
    from lmforge.model import build_model
    from lmforge.serve import ServeConfig
    from lmforge.serve.app import create_app
    from lmforge.tokenizers import Tokenizer
    tokenizer = Tokenizer.load(char_data)
    torch.manual_seed(0)
    config = get_preset("bert-tiny", vocab_size=tokenizer.vocab_size, labels=labels)
    lm = Model(build_model(config).eval(), config, tokenizer)
    with TestClient(create_app(lm, ServeConfig(model_dir="x", model_name="enc"))) as http:
        r = http.post("/v1/embeddings", json={"input": ["a cat", "a dog"]})
        assert r.status_code == 200
        got = torch.tensor([d["embedding"] for d in r.json()["data"]])
        torch.testing.assert_close(got, lm.embed(["a cat", "a dog"]), atol=1e-5, rtol=1e-5)
        out = http.post("/classify", json={"input": ["a cat", "a dog"]}).json()
        if labels:
            assert out["kind"] == "labels" and out["results"] == lm.classify(["a cat", "a dog"])
        else:
            assert out["kind"] == "similarity" and out["similarity"][0][0] == pytest.approx(1.0, abs=1e-5)
        attn = http.post("/attention", json={"text": "a cat", "layer": 1}).json()
        assert attn["layers"] == 2 and len(attn["maps"]) == 2 and attn["keys"][0] == "<bos>"
        bad = http.post("/v1/completions", json={"prompt": "x"})
        assert bad.status_code == 400 and "needs a decoder" in bad.json()["error"]["message"]
        assert "lmforge playground" in http.get("/").text
