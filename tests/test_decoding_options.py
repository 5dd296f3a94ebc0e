"""One decoding options type (`GenerationConfig`) with one validation path: `lmforge generate`,
the Python API and the server refuse the same bad values with the same words (each surface
names the field as its user spelled it), and the server's table of OpenAI fields covers every
option."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch

from lmforge.cli import main
from lmforge.errors import OptionError
from lmforge.generate import GenerationConfig

# (option, the server's field, the CLI's flag, a bad value)
BAD = [
    ("max_new_tokens", "max_tokens", "--max-new-tokens", 0),
    ("temperature", "temperature", "--temperature", 2.5),
    ("temperature", "temperature", "--temperature", math.inf),
    ("top_k", "top_k", "--top-k", -2),
    ("top_p", "top_p", "--top-p", 1.5),
    ("top_p", "top_p", "--top-p", 0.0),
    ("min_p", "min_p", "--min-p", 1.5),
    ("repetition_penalty", "repetition_penalty", "--repetition-penalty", -1.0),
    ("logprobs", "logprobs", "--logprobs", 21),
    ("no_repeat_ngram_size", "no_repeat_ngram_size", "--no-repeat-ngram-size", -1),
]


@pytest.fixture(scope="module")
def http(char_data):
    from starlette.testclient import TestClient

    from lmforge.api import Model
    from lmforge.config import get_preset
    from lmforge.model import build_model
    from lmforge.serve import ServeConfig
    from lmforge.serve.app import create_app
    from lmforge.tokenizers import Tokenizer
    tokenizer = Tokenizer.load(char_data)
    torch.manual_seed(0)
    config = get_preset("gpt-tiny", vocab_size=tokenizer.vocab_size, context_length=32)
    with TestClient(create_app(Model(build_model(config).eval(), config, tokenizer), ServeConfig(model_dir="x"))) as c:
        yield c


@pytest.mark.parametrize("option, field, flag, value", BAD)
def test_every_surface_refuses_a_bad_value_with_the_same_words(option, field, flag, value, http, capsys):
    with pytest.raises(OptionError) as api:
        GenerationConfig(**{option: value})
    assert api.value.field == option and api.value.value == value
    problem = api.value.problem
    assert main(["generate", "no-such-model", "x", flag, str(value)]) == 2                   # before any work
    assert capsys.readouterr().err.strip() == f"lmforge generate: error: {option}={value!r} {problem}"
    r = http.post("/v1/completions", content=json.dumps({"prompt": "x", field: value}))    # inf: Infinity
    assert r.status_code == 400
    assert r.json()["error"] == {"message": f"'{field}' {problem}, got {value!r}", "type": "invalid_request_error",
                                 "param": field, "code": None}


def test_types_are_checked_on_every_surface(http):
    with pytest.raises(OptionError, match="max_new_tokens='ten' must be an integer"):
        GenerationConfig(max_new_tokens="ten")
    with pytest.raises(OptionError, match="ignore_eos=1 must be true or false"):
        GenerationConfig(ignore_eos=1)
    r = http.post("/v1/completions", json={"prompt": "x", "seed": 1.5})
    assert r.json()["error"]["message"] == "'seed' must be an integer, got 1.5"
    r = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}],
                                                "logprobs": True, "top_logprobs": 99})
    assert r.json()["error"]["message"] == "'top_logprobs' must be >= 0 and <= 20, got 99"      # named as sent


def test_the_openai_table_covers_every_option_once():
    from lmforge.serve.openai_fields import FIELDS, NOT_SERVED, SAME
    options = {f.name for f in dataclasses.fields(GenerationConfig)}
    served = {f.option for f in FIELDS}
    assert served | set(NOT_SERVED) == options and not served & set(NOT_SERVED)
    for f in FIELDS:                       # a default that differs from GenerationConfig's says why
        assert f.default is SAME or f.note, f.name
        if f.default is not SAME:
            assert f.default != getattr(GenerationConfig(), f.option)


def test_the_server_defaults_are_openais(http):
    from lmforge.serve.openai_fields import decoding_options
    completion, chat = decoding_options({}, chat=False), decoding_options({}, chat=True)
    assert completion.temperature == chat.temperature == 1.0 != GenerationConfig().temperature
    assert completion.max_new_tokens == 16 and chat.max_new_tokens > 10**6      # chat: up to the context
    assert decoding_options({"top_k": -1}, chat=False).top_k is None             # vLLM's "no filter"
    assert decoding_options({"stop": "\n"}, chat=False).stop == ["\n"]
    assert decoding_options({"response_format": {"type": "json_object"}}, chat=False).json_mode
