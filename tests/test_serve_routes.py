"""Every route of `lmforge serve` answers a fixed set of requests exactly as recorded: status,
content type and JSON (or the SSE events of a stream), ids and timestamps blanked and floats
rounded to 4 places. The record (`tests/data/serve_routes.json`) was taken from the server
before its frontend was reshaped, so the HTTP API stays byte-for-byte the same; a deliberate
change of the API records it again with `LMFORGE_RECORD_ROUTES=1 python -m pytest
tests/test_serve_routes.py` (and says so in its commit)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from .test_serve import random_decoder_dir, random_seq2seq_dir

RECORD = Path(__file__).parent / "data" / "serve_routes.json"
KEY = "route-key"

CHAT = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Hello"}]
DECODER_REQUESTS = [
    ("completion", "POST", "/v1/completions", {"prompt": "The ", "max_tokens": 8, "temperature": 0}),
    ("completion-batch-n", "POST", "/v1/completions",
     {"prompt": ["import os", "def f"], "max_tokens": 5, "temperature": 0.9, "seed": 7, "n": 2}),
    ("completion-ids", "POST", "/v1/completions", {"prompt": [10, 11, 12], "max_tokens": 4, "temperature": 0}),
    ("completion-stop", "POST", "/v1/completions",
     {"prompt": "x = ", "max_tokens": 20, "temperature": 0, "stop": ["Ht", "zz"]}),
    ("completion-logprobs", "POST", "/v1/completions",
     {"prompt": "Hello", "max_tokens": 4, "temperature": 0, "logprobs": 2}),
    ("completion-echo-logprobs", "POST", "/v1/completions",
     {"prompt": "Hello", "max_tokens": 3, "temperature": 0, "logprobs": 1, "echo": True}),
    ("completion-echo", "POST", "/v1/completions", {"prompt": "Hi", "max_tokens": 3, "temperature": 0, "echo": True}),
    ("completion-prompt-logprobs", "POST", "/v1/completions",
     {"prompt": "Hello", "max_tokens": 2, "temperature": 0, "prompt_logprobs": 2}),
    ("completion-sampling-filters", "POST", "/v1/completions",
     {"prompt": "for", "max_tokens": 6, "temperature": 0.7, "top_p": 0.9, "top_k": 20, "min_p": 0.05,
      "repetition_penalty": 1.3, "seed": 3, "no_repeat_ngram_size": 2}),
    ("completion-json-mode", "POST", "/v1/completions",
     {"prompt": "{", "max_tokens": 12, "temperature": 0, "response_format": {"type": "json_object"}}),
    ("completion-length", "POST", "/v1/completions", {"prompt": "a" * 90, "max_tokens": 50, "temperature": 0}),
    ("completion-ignore-eos", "POST", "/v1/completions",
     {"prompt": "ab", "max_tokens": 3, "temperature": 0, "ignore_eos": True}),
    ("completion-stream", "STREAM", "/v1/completions",
     {"prompt": "The ", "max_tokens": 6, "temperature": 0, "stream": True,
      "stream_options": {"include_usage": True}}),
    ("completion-stream-logprobs-echo", "STREAM", "/v1/completions",
     {"prompt": ["ab", "cd"], "max_tokens": 3, "temperature": 0, "stream": True, "logprobs": 1, "echo": True}),
    ("chat", "POST", "/v1/chat/completions", {"messages": CHAT, "max_tokens": 8, "temperature": 0}),
    ("chat-logprobs", "POST", "/v1/chat/completions",
     {"messages": CHAT, "max_completion_tokens": 3, "temperature": 0, "logprobs": True, "top_logprobs": 2}),
    ("chat-n-seed", "POST", "/v1/chat/completions",
     {"messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}], "max_tokens": 4,
      "temperature": 1.0, "seed": 11, "n": 2}),
    ("chat-stream", "STREAM", "/v1/chat/completions",
     {"messages": CHAT, "max_tokens": 5, "temperature": 0, "stream": True, "logprobs": True,
      "stream_options": {"include_usage": True}}),
    ("models", "GET", "/v1/models", None),
    ("model-card", "GET", "/v1/models/dec/card", None),
    ("model-card-unknown", "GET", "/v1/models/gpt-4/card", None),
    ("tokenize", "POST", "/tokenize", {"prompt": "Hello there", "return_token_strs": True}),
    ("tokenize-raw", "POST", "/tokenize", {"prompt": "Hello", "add_special_tokens": False}),
    ("tokenize-chat", "POST", "/tokenize", {"messages": CHAT}),
    ("detokenize", "POST", "/detokenize", {"tokens": [10, 11, 12, 13]}),
    ("tokenizer-info", "GET", "/tokenizer_info", None),
    ("health", "GET", "/health", None),
    ("attention", "POST", "/attention", {"text": "a cat", "layer": 1}),
    ("classify-decoder", "POST", "/classify", {"input": "a cat"}),
    ("inspect-lens", "POST", "/inspect/lens", {"text": "a cat", "top_k": 2}),
    ("inspect-dla", "POST", "/inspect/dla", {"text": "a cat", "answer": "t", "wrong": "a"}),
    ("inspect-patch", "POST", "/inspect/patch", {"text": "abcab", "corrupted": "xbcab", "answer": "c", "wrong": "d"}),
    ("inspect-attribute", "POST", "/inspect/attribute", {"text": "a cat", "steps": 4}),
    ("inspect-heads", "POST", "/inspect/heads", {"seq_len": 6, "seed": 1}),
    ("embeddings-decoder", "POST", "/v1/embeddings", {"input": "a cat"}),
    # mistakes: one 4xx each, in OpenAI's error shape
    ("no-key", "NOKEY", "/v1/completions", {"prompt": "x"}),
    ("bad-json", "RAW", "/v1/completions", '{"prompt": "x", '),
    ("not-utf8", "RAW", "/v1/completions", b'\xff\xfe{"prompt": "x"}'),
    ("not-object", "RAW", "/v1/completions", '["a list"]'),
    ("huge-body", "RAW", "/v1/completions", '{"prompt": "' + "a" * (3 << 20) + '"}'),
    ("bad-prompt", "POST", "/v1/completions", {"prompt": 5}),
    ("empty-prompt-list", "POST", "/v1/completions", {"prompt": []}),
    ("bad-max-tokens", "POST", "/v1/completions", {"prompt": "x", "max_tokens": -3}),
    ("bad-max-tokens-type", "POST", "/v1/completions", {"prompt": "x", "max_tokens": "ten"}),
    ("bad-temperature", "POST", "/v1/completions", {"prompt": "x", "temperature": 3}),
    ("bad-top-p", "POST", "/v1/completions", {"prompt": "x", "top_p": 0}),
    ("bad-min-p", "POST", "/v1/completions", {"prompt": "x", "min_p": 2}),
    ("bad-repetition-penalty", "POST", "/v1/completions", {"prompt": "x", "repetition_penalty": 0}),
    ("bad-seed", "POST", "/v1/completions", {"prompt": "x", "seed": 1.5}),
    ("bad-n", "POST", "/v1/completions", {"prompt": "x", "n": 99}),
    ("bad-logprobs", "POST", "/v1/completions", {"prompt": "x", "logprobs": 50}),
    ("bad-stream", "POST", "/v1/completions", {"prompt": "x", "stream": "yes"}),
    ("bad-stream-options", "POST", "/v1/completions", {"prompt": "x", "stream_options": 3}),
    ("bad-stop", "POST", "/v1/completions", {"prompt": "x", "stop": [1]}),
    ("too-many-stops", "POST", "/v1/completions", {"prompt": "x", "stop": ["a", "b", "c", "d", "e"]}),
    ("bad-ngram", "POST", "/v1/completions", {"prompt": "x", "no_repeat_ngram_size": -1}),
    ("bad-response-format", "POST", "/v1/completions", {"prompt": "x", "response_format": {"type": "xml"}}),
    ("prompt-too-long", "POST", "/v1/completions", {"prompt": "x" * 200}),
    ("token-outside-vocab", "POST", "/v1/completions", {"prompt": [1, 99999]}),
    ("chat-empty", "POST", "/v1/chat/completions", {"messages": []}),
    ("chat-bad-role", "POST", "/v1/chat/completions", {"messages": [{"role": "wizard", "content": "hi"}]}),
    ("chat-bad-content", "POST", "/v1/chat/completions", {"messages": [{"role": "user", "content": 3}]}),
    ("chat-bad-part", "POST", "/v1/chat/completions",
     {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}),
    ("chat-not-object", "POST", "/v1/chat/completions", {"messages": ["hi"]}),
    ("chat-top-logprobs-alone", "POST", "/v1/chat/completions",
     {"messages": CHAT, "top_logprobs": 2}),
    ("tokenize-nothing", "POST", "/tokenize", {}),
    ("detokenize-bad", "POST", "/detokenize", {"tokens": ["a"]}),
    ("detokenize-outside", "POST", "/detokenize", {"tokens": [99999]}),
    ("attention-no-text", "POST", "/attention", {"text": ""}),
    ("attention-bad-layer", "POST", "/attention", {"text": "a cat", "layer": 9}),
    ("prompt-logprobs-stream", "POST", "/v1/completions", {"prompt": "x", "prompt_logprobs": 1, "stream": True}),
    ("inspect-too-long", "POST", "/inspect/lens", {"text": "x" * 200}),
    ("inspect-bad-steps", "POST", "/inspect/attribute", {"text": "x", "steps": 5000}),
    ("inspect-answer-two-tokens", "POST", "/inspect/dla", {"text": "x", "answer": "ab"}),
]
SEQ2SEQ_REQUESTS = [
    ("s2s-completion", "POST", "/v1/completions", {"prompt": "Hello world", "max_tokens": 8, "temperature": 0}),
    ("s2s-stream", "STREAM", "/v1/completions",
     {"prompt": ["a", "zzz"], "max_tokens": 5, "temperature": 0, "stream": True}),
    ("s2s-chat", "POST", "/v1/chat/completions", {"messages": CHAT, "max_tokens": 6, "temperature": 0}),
    ("s2s-chat-ends-with-assistant", "POST", "/v1/chat/completions",
     {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}),
    ("s2s-echo-logprobs", "POST", "/v1/completions", {"prompt": "x", "echo": True, "logprobs": 1, "max_tokens": 2}),
    ("s2s-empty-prompt", "POST", "/v1/completions", {"prompt": "  "}),
    ("s2s-tokenize", "POST", "/tokenize", {"prompt": "zzz", "return_token_strs": True}),
    ("s2s-models", "GET", "/v1/models", None),
    ("s2s-attention-cross", "POST", "/attention", {"text": "ab", "kind": "cross"}),
    ("s2s-attention-encoder", "POST", "/attention", {"text": "ab", "kind": "encoder", "layer": 1}),
    ("s2s-prompt-logprobs", "POST", "/v1/completions", {"prompt": "x", "prompt_logprobs": 1}),
    ("s2s-inspect-lens", "POST", "/inspect/lens", {"text": "ab", "target": "cd", "top_k": 2}),
    ("s2s-inspect-heads", "POST", "/inspect/heads", {"seq_len": 4, "kind": "cross"}),
]
ENCODER_REQUESTS = [
    ("enc-embeddings", "POST", "/v1/embeddings", {"input": ["a cat", "a dog"]}),
    ("enc-embeddings-bad", "POST", "/v1/embeddings", {"input": []}),
    ("enc-classify", "POST", "/classify", {"input": ["a cat", "a dog"]}),
    ("enc-classify-bad", "POST", "/classify", {"input": 3}),
    ("enc-attention", "POST", "/attention", {"text": "a cat"}),
    ("enc-inspect-attribute", "POST", "/inspect/attribute", {"text": "a cat", "method": "gxi"}),
    ("enc-inspect-patch", "POST", "/inspect/patch", {"text": "ab", "corrupted": "cd", "answer": "a", "wrong": "b"}),
    ("enc-completion", "POST", "/v1/completions", {"prompt": "x"}),
    ("enc-chat", "POST", "/v1/chat/completions", {"messages": CHAT}),
    ("enc-tokenizer-info", "GET", "/tokenizer_info", None),
    ("enc-model-card", "GET", "/v1/models/enc/card", None),
]


def normalised(value, key: str | None = None):
    """Ids and timestamps blanked (they differ per run), floats rounded to 4 places."""
    if isinstance(value, dict):
        return {k: normalised(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [normalised(v) for v in value]
    if key == "id" and isinstance(value, str):
        return value.split("-")[0] + "-ID"
    if key == "created" and isinstance(value, int):
        return "CREATED"
    if isinstance(value, float):
        return round(value, 4)
    return value


def answer(http, method: str, path: str, body) -> dict:
    headers = {"Authorization": f"Bearer {KEY}"}
    if method == "GET":
        r = http.get(path, headers=headers)
    elif method == "NOKEY":
        r = http.post(path, json=body)
    elif method == "RAW":
        r = http.post(path, content=body.encode() if isinstance(body, str) else body,
                      headers={**headers, "Content-Type": "application/json"})
    else:
        r = http.post(path, json=body, headers=headers)
    out = {"status": r.status_code, "content_type": r.headers.get("content-type"),
           "retry_after": r.headers.get("retry-after")}
    if method == "STREAM":
        events = [line[len("data: "):] for line in r.text.split("\n\n") if line.startswith("data: ")]
        out["events"] = [e if e == "[DONE]" else normalised(json.loads(e)) for e in events]
    else:
        out["json"] = normalised(r.json())
    return out


def served(lm, requests, **settings) -> dict:
    from starlette.testclient import TestClient

    from lmforge.serve import ServeConfig
    from lmforge.serve.app import create_app
    with TestClient(create_app(lm, ServeConfig(model_dir="x", **settings))) as http:
        return {name: answer(http, method, path, body) for name, method, path, body in requests}


@pytest.fixture(scope="module")
def answers(char_data, tmp_path_factory) -> dict:
    from lmforge.api import Model, load
    from lmforge.config import get_preset
    from lmforge.model import build_model
    from lmforge.tokenizers import Tokenizer
    tmp = tmp_path_factory.mktemp("routes")
    decoder = load(random_decoder_dir(tmp / "dec", char_data), device="cpu")
    seq2seq = load(random_seq2seq_dir(tmp / "s2s", char_data), device="cpu")
    tokenizer = Tokenizer.load(char_data)
    torch.manual_seed(0)
    config = get_preset("bert-tiny", vocab_size=tokenizer.vocab_size, labels=["sports", "music"])
    encoder = Model(build_model(config).eval(), config, tokenizer)
    return {**served(decoder, DECODER_REQUESTS, api_key=KEY, model_name="dec"),
            **served(seq2seq, SEQ2SEQ_REQUESTS, api_key=KEY, model_name="s2s"),
            **served(encoder, ENCODER_REQUESTS, api_key=KEY, model_name="enc")}


def test_every_route_answers_as_recorded(answers):
    if os.environ.get("LMFORGE_RECORD_ROUTES"):
        RECORD.parent.mkdir(exist_ok=True)
        RECORD.write_text(json.dumps(answers, indent=1, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
    recorded = json.loads(RECORD.read_text(encoding="utf-8"))
    assert sorted(answers) == sorted(recorded)
    for name in recorded:
        assert answers[name] == recorded[name], name


def test_the_record_covers_every_route_and_answers_something():
    """The record is not vacuous: every route is in it, with successes and errors."""
    recorded = json.loads(RECORD.read_text(encoding="utf-8"))
    paths = {path for _, _, path, _ in DECODER_REQUESTS + SEQ2SEQ_REQUESTS + ENCODER_REQUESTS}
    assert paths >= {"/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/v1/models", "/tokenize",
                     "/detokenize", "/tokenizer_info", "/attention", "/classify", "/health", "/inspect/lens",
                     "/inspect/dla", "/inspect/patch", "/inspect/attribute", "/inspect/heads"}
    statuses = [a["status"] for a in recorded.values()]
    assert statuses.count(200) >= 25 and {400, 401, 413} <= set(statuses)
    assert recorded["completion"]["json"]["choices"][0]["text"]                     # a real generation
    assert len(recorded["completion-stream"]["events"]) >= 6
