"""Property-based tests (Hypothesis): no request crashes the server, no flag or option value
crashes a verb, and a number is refused alike wherever it is given.

Requests are generated for every route from its schema below — each field's valid values,
its edges, values of the wrong type, and the numbers no option means (NaN, ±inf, integers past
64 bits, 1e-300, ...), in bodies that are sometimes valid JSON but unreasonable (nested 10,000
deep, a number of 5,000 digits, an unpaired surrogate, a duplicate key, a huge array) or not a
request at all. The decoding fields' schema is `GenerationConfig` itself (each field's type and
check), read through `openai_fields.FIELDS`. Every answer must be below 500, every 4xx in
OpenAI's error shape, every stream free of error events and ended by [DONE], and the server
healthy after each (its rows free, its queue empty). The same number classes drive every verb's
numeric flags (exit code 2 and one line, never a traceback; the classes always refused naming
the flag) and every options class of the package.

The examples are bounded for the suite; `LMFORGE_PROPERTY_EXAMPLES=N` runs N per route (a long,
randomised run: see docs/serving.md, "Under pressure").
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import io
import json
import math
import os
import time
import typing

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lmforge.errors import LmforgeError
from lmforge.generate import GenerationConfig
from lmforge.options import INT64_MAX, INT64_MIN, bounds

from .test_serve import three_families

LONG = int(os.environ.get("LMFORGE_PROPERTY_EXAMPLES", "0"))


def examples(n: int):
    """Hypothesis settings: `n` examples in the suite (derandomised: the same every run), or the
    long run's number, randomised."""
    return settings(max_examples=LONG or n, deadline=None, derandomize=not LONG, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])


# ---- values: each field's good ones, and bad ones ----------------------------------------------------------
NO_NUMBER = [math.nan, math.inf, -math.inf, 2 ** 63, 2 ** 64, -(2 ** 63) - 1, 10 ** 30, -(10 ** 30)]
ODD = [0, -1, 1, -0.0, 1e-300, -1e-300, 1e300, 5e-324, 2 ** 63 - 1, 2 ** 64 - 1, 0.5, 1.0000000000000002]
WRONG_TYPE = [True, False, "7", "", None, [], [1], {"a": 1}, "nan"]
VOCAB = 300           # below the test tokenizer's vocabulary (ids past it are bad values)
texts = st.text(max_size=30) | st.sampled_from(["", " ", "<eos><pad>", "\x00", "é" * 50, "x" * 300, "{", "\n",
                                                "\U0001F600"])
anything = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | texts,
                        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
                        max_leaves=6)


def numbers(tp: type, check=None) -> tuple[st.SearchStrategy, st.SearchStrategy]:
    """(good, bad) values of a number field: inside its check's range and at its edges; past its
    edges, the numbers no option means, tiny and huge ones, and values of other types."""
    low, high = getattr(check, "low", None), getattr(check, "high", None)
    if tp is int:
        lo = INT64_MIN if low is None else math.ceil(low)
        hi = INT64_MAX if high is None else min(int(high), 2 ** 64 - 1)
        good = st.integers(max(lo, 0), min(hi, max(lo, 0) + 40)) | st.integers(lo, hi) | st.sampled_from([lo, hi])
        edges = [lo - 1, hi + 1]
    else:
        lo = -1e6 if low is None else low
        hi = 1e6 if high is None else high
        good = st.floats(lo, hi, allow_nan=False, allow_infinity=False, exclude_min=getattr(check, "low_open", False))
        edges = [math.nextafter(lo, -math.inf), math.nextafter(hi, math.inf)]
    return good, st.sampled_from(edges + NO_NUMBER + ODD + WRONG_TYPE)


def of(good: st.SearchStrategy, *bad: object) -> tuple[st.SearchStrategy, st.SearchStrategy]:
    return good, st.sampled_from(WRONG_TYPE) | anything | (st.sampled_from(bad) if bad else st.nothing())


BOOL = of(st.booleans(), 0, 1, "true")
ids = st.integers(0, VOCAB - 1)
bad_ids = st.lists(st.integers(-2, VOCAB - 1) | st.sampled_from([10 ** 6, 10 ** 30, -(2 ** 63) - 1, True, 1.5]),
                   min_size=1, max_size=8)
part = st.fixed_dictionaries({"type": st.just("text"), "text": texts})
message = st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]),
                                 "content": texts | st.lists(part, min_size=1, max_size=2)})
MESSAGES = (st.lists(message, max_size=3).map(lambda m: m + [{"role": "user", "content": "hi"}]),
            st.sampled_from(WRONG_TYPE) | anything | st.lists(st.fixed_dictionaries({}, optional={
                "role": st.sampled_from(["wizard", "", 1, None, "user"]),
                "content": anything | st.lists(st.fixed_dictionaries({"type": st.sampled_from(["image_url", 3]),
                                                                      "text": anything}), max_size=2)}), max_size=3))
PROMPT = (texts.filter(str.strip) | st.lists(texts, min_size=1, max_size=3) | st.lists(ids, min_size=1, max_size=20)
          | st.lists(st.lists(ids, min_size=1, max_size=8), min_size=1, max_size=3),
          of(st.nothing(), [], [[]], 5, [1, "a"])[1] | bad_ids | st.lists(bad_ids, min_size=1, max_size=2))
INPUT = of(texts | st.lists(texts, min_size=1, max_size=4), [], [1], [["a"]])
TEXT = of(texts.filter(str.strip), "", " ")
ONE_TOKEN = of(st.sampled_from(list("abcdexyz ")), "ab", "")          # an answer: one token (a label: "a", "b")


def decoding_schema(chat: bool) -> dict[str, tuple]:
    """The decoding fields of a completions or chat request, from the options type itself."""
    from lmforge.options import _base_type
    from lmforge.serve.openai_fields import _SHAPED, FIELDS
    hints = typing.get_type_hints(GenerationConfig)
    option = {f.name: f for f in dataclasses.fields(GenerationConfig)}
    schema = {}
    for field in FIELDS:
        tp, _ = _base_type(hints[field.option])
        if field.name not in _SHAPED and tp in (int, float):
            schema[field.name] = numbers(tp, option[field.option].metadata["check"])
        elif field.name not in _SHAPED and tp is bool:
            schema[field.name] = BOOL
    logprobs = numbers(int, option["logprobs"].metadata["check"])
    schema.update(stop=of(texts | st.lists(texts, max_size=4), ["a"] * 5, [1]),
                  response_format=of(st.fixed_dictionaries({"type": st.sampled_from(["text", "json_object"])}),
                                     {"type": "xml"}, ["json_object"]),
                  logprobs=BOOL if chat else logprobs, top_logprobs=logprobs,
                  max_completion_tokens=numbers(int, bounds(1)), n=numbers(int, bounds(1, 8)), stream=BOOL,
                  stream_options=of(st.fixed_dictionaries({}, optional={"include_usage": st.booleans()}),
                                    {"include_usage": "yes"}))
    return schema


SCHEMAS = {      # route -> (required fields, optional fields), each field (good values, bad values)
    "/v1/completions": ({"prompt": PROMPT}, {**decoding_schema(chat=False), "echo": BOOL,
                                             "prompt_logprobs": numbers(int, bounds(0, 20))}),
    "/v1/chat/completions": ({"messages": MESSAGES}, decoding_schema(chat=True)),
    "/tokenize": ({}, {"prompt": of(texts), "messages": MESSAGES, "add_special_tokens": BOOL,
                       "return_token_strs": BOOL}),
    "/detokenize": ({"tokens": of(st.lists(ids, max_size=20), ["a"])}, {}),
    "/attention": ({"text": of(texts.filter(str.strip))}, {"layer": numbers(int, bounds(0, 1)),
                                                           "kind": of(st.sampled_from(["auto"]), "self", "cross",
                                                                      "encoder", "decoder", "x")}),
    "/classify": ({"input": INPUT}, {}),
    "/v1/embeddings": ({"input": INPUT}, {}),
    "/inspect/lens": ({"text": TEXT}, {"top_k": numbers(int, bounds(1, 20)), "target": TEXT}),
    "/inspect/dla": ({"text": TEXT, "answer": ONE_TOKEN}, {"wrong": ONE_TOKEN, "position": numbers(int, bounds(-1, 0)),
                                                          "target": TEXT}),
    "/inspect/patch": ({"text": of(st.just("abcab"), "abc"), "corrupted": of(st.just("xbcab"), "ab", "abcab"),
                        "answer": of(st.just("c"), "ab"), "wrong": of(st.just("d"), "c")}, {}),
    "/inspect/attribute": ({"text": TEXT}, {"target": ONE_TOKEN, "steps": numbers(int, bounds(2, 16)),
                                            "method": of(st.sampled_from(["ig", "gxi"]), "shap"),
                                            "batch_size": numbers(int, bounds(1, 64))}),
    "/inspect/heads": ({}, {"seq_len": numbers(int, bounds(2, 46)), "seed": numbers(int, bounds(0)), "alphabet": TEXT,
                            "kind": of(st.sampled_from(["auto"]), "self", "cross", "encoder", "decoder", "x")}),
}


# ---- bodies: valid JSON that is unreasonable, or not a request at all -----------------------------------
def _with(text: str, field: str, raw: str) -> str:
    """`text` (a JSON object) with `field` set to the raw JSON `raw` (a duplicate key: the last wins)."""
    return (text[:-1] + ", " if text != "{}" else "{") + json.dumps(field) + ": " + raw + "}"


UNREASONABLE = {
    "deep": lambda text, field: _with(text, field, "[" * 10_000 + "]" * 10_000),
    "deep-33": lambda text, field: _with(text, field, "[" * 33 + "]" * 33),
    "digits": lambda text, field: _with(text, field, "9" * 5000),
    "float-digits": lambda text, field: _with(text, field, "0." + "1" * 5000),
    "surrogate": lambda text, field: _with(text, field, '"a\\ud800b"'),
    "surrogate-key": lambda text, field: _with(text, "\ud800", "1"),
    "huge-array": lambda text, field: _with(text, field, "[" + ",".join(["0"] * 200_000) + "]"),
    "long-string": lambda text, field: _with(text, field, json.dumps("ab" * 400_000)),
    "nan": lambda text, field: _with(text, field, "NaN"),
    "not-object": lambda text, field: "[" + text + "]",
    "truncated": lambda text, field: text[: len(text) // 2],
    "empty": lambda text, field: "",
}
MODES = ["valid", "valid", "one bad field", "any", "unreasonable"]


@st.composite
def request_bodies(draw, path: str) -> bytes:
    """A body for `path`: valid (two in five), with one bad field, with any field bad, or a valid
    one made unreasonable."""
    required, optional = SCHEMAS[path]
    mode = draw(st.sampled_from(MODES))
    fields = {**required, **{k: v for k, v in optional.items() if draw(st.integers(0, 3)) == 0}}
    bad = {draw(st.sampled_from(sorted(fields)))} if fields and mode == "one bad field" else set()
    body = {k: draw(bad_ if k in bad or (mode == "any" and draw(st.booleans())) else good)
            for k, (good, bad_) in fields.items()}
    text = json.dumps(body, allow_nan=True)
    if mode == "unreasonable":
        field = draw(st.sampled_from(sorted({*required, *optional} or {"x"})))
        text = UNREASONABLE[draw(st.sampled_from(sorted(UNREASONABLE)))](text, field)
    return text.encode("utf-8", "surrogatepass")


# ---- the servers ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def servers(char_data, tmp_path_factory):
    """A decoder, an encoder-decoder and an encoder (a classifier), each behind its own app."""
    from starlette.testclient import TestClient

    from lmforge.serve import ServeConfig
    from lmforge.serve.app import create_app
    models = three_families(char_data, tmp_path_factory.mktemp("properties"), labels=["a", "b"])
    with contextlib.ExitStack() as stack:
        out = {}
        for family, lm in models.items():
            app = create_app(lm, ServeConfig(model_dir="x", max_batch_size=4, max_queue=16))
            out[family] = (stack.enter_context(TestClient(app)), app.state.server)
        yield out


ERROR_KEYS = {"message", "type", "param", "code"}


def failed_sequences(state) -> float:
    return state.metrics.finished.labels("error")._value.get()


def check_answer(r, state, failed_before: float) -> None:
    """Below 500; a 4xx in OpenAI's error shape; a stream ended by [DONE] without error events;
    then a healthy server: /health answers and every row and queue place is free again."""
    assert r.status_code < 500, r.text[:500]
    if r.status_code >= 400:
        error = r.json()["error"]
        assert set(error) == ERROR_KEYS and isinstance(error["message"], str) and error["message"], error
        assert isinstance(error["type"], str) and (error["param"] is None or isinstance(error["param"], str))
    elif r.headers["content-type"].startswith("text/event-stream"):
        events = [e[len("data: "):] for e in r.text.split("\n\n") if e.startswith("data: ")]
        assert events[-1] == "[DONE]" and not any('"error"' in e[:10] for e in events), r.text[-500:]
        [json.loads(e) for e in events[:-1]]
    else:
        r.json()
    healthy(state)
    assert failed_sequences(state) == failed_before             # no sequence failed in the scheduler


def healthy(state) -> None:
    scheduler = state.scheduler
    deadline = time.monotonic() + 5
    while scheduler is not None and (scheduler.running or scheduler.queue_depth):
        assert time.monotonic() < deadline, (scheduler.running, scheduler.queue_depth)
        time.sleep(0.005)


ROUTES = [("decoder", "/v1/completions", 40), ("decoder", "/v1/chat/completions", 30),
          ("decoder", "/tokenize", 15), ("decoder", "/detokenize", 10), ("decoder", "/attention", 10),
          ("decoder", "/classify", 5), ("seq2seq", "/v1/completions", 15), ("seq2seq", "/v1/chat/completions", 10),
          ("seq2seq", "/tokenize", 5), ("seq2seq", "/attention", 8), ("encoder", "/v1/embeddings", 10),
          ("encoder", "/classify", 10), ("encoder", "/attention", 5), ("encoder", "/v1/completions", 5),
          ("decoder", "/inspect/lens", 8), ("decoder", "/inspect/dla", 8), ("decoder", "/inspect/patch", 6),
          ("decoder", "/inspect/attribute", 6), ("decoder", "/inspect/heads", 6), ("seq2seq", "/inspect/lens", 5),
          ("encoder", "/inspect/attribute", 6)]


REFUSED = {("decoder", "/classify"), ("encoder", "/v1/completions")}     # what that family does not serve


@pytest.mark.parametrize("family, path, n", ROUTES, ids=[f"{f}{p}" for f, p, _ in ROUTES])
def test_no_generated_request_gets_a_5xx_or_leaves_the_server_unwell(servers, family, path, n):
    http, state = servers[family]
    statuses = []

    @examples(n)
    @given(body=request_bodies(path))
    def one(body):
        failed = failed_sequences(state)
        r = http.post(path, content=body, headers={"Content-Type": "application/json"})
        statuses.append(r.status_code)
        check_answer(r, state, failed)
    one()
    assert (200 in statuses) == ((family, path) not in REFUSED), statuses      # the model was reached
    assert http.get("/health").json() == {"status": "ok"}


@examples(20)
@given(method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]),
       path=st.sampled_from(["/v1/completions", "/v1/models", "/health", "/metrics", "/", "/tokenizer_info",
                             "/v1/nope", "/x/../health", "/%00"]) | st.text(alphabet="/abcv1%", max_size=12))
def test_any_method_on_any_path_is_answered_in_openais_shape(servers, method, path):
    http, state = servers["decoder"]
    r = http.request(method, "/" + path.lstrip("/"))
    assert r.status_code < 500
    if r.status_code >= 400:
        assert set(r.json()["error"]) == ERROR_KEYS


# ---- the CLI verbs' numeric flags ---------------------------------------------------------------------------
ARGS = {"prepare": ["no-such.txt"], "train": ["--data", "no-such-data"], "finetune": ["no-such-model", "--data", "d"],
        "distill": ["--data", "no-such-data"], "generate": ["no-such-model", "x"], "eval": ["no-such-model", "--text", "no-such.txt"],
        "score": ["no-such-model", "x"], "merge-lora": ["no-such-model", "o"], "chat": ["no-such-model"],
        "quantize": ["no-such-model", "o"], "classify": ["no-such-model", "x"], "translate": ["no-such-model", "x"],
        "import": ["no-such-model", "o"], "export": ["no-such-model", "o"], "embed": ["no-such-model", "x"],
        "attention": ["no-such-model", "x"], "serve": ["no-such-model"], "quickstart": ["--out", "q"]}


def numeric_flags() -> list[tuple[str, str, type]]:
    import argparse

    from lmforge.cli.core import build_parser
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return [(verb, a.option_strings[-1], a.type) for verb, p in sub.choices.items() if verb in ARGS
            for a in p._actions if a.option_strings and a.type in (int, float)]


FLAGS = numeric_flags()


def flag_values(tp: type) -> st.SearchStrategy:
    return (st.sampled_from(NO_NUMBER + ODD) | (st.integers() if tp is int else st.floats())
            | st.sampled_from(["-inf", "1e999", "9" * 5000, "0x10", "1_000", " 7", "", "1.5", "seven"])).map(str)


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """`lmforge.cli.main` with its parser built once (building it takes 70 ms), run in an empty directory."""
    from lmforge.cli import core
    parser = core.build_parser()
    cwd = os.getcwd()
    os.chdir(tmp_path_factory.mktemp("cli"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(core, "build_parser", lambda: parser)
        yield core.main
    os.chdir(cwd)


def no_number(value: str, tp: type, flag: str) -> bool:
    """A value argparse reads as a number that no option of that flag means (a seed's range is
    0..2**64-1)."""
    try:
        x = tp(value)
    except ValueError:
        return False
    top = 2 ** 64 - 1 if "seed" in flag else INT64_MAX
    return not math.isfinite(x) if isinstance(x, float) else not INT64_MIN <= x <= top


@examples(300)
@given(data=st.data())
def test_numeric_flags_give_one_line_never_a_traceback(cli, data):
    verb, flag, tp = data.draw(st.sampled_from(FLAGS))
    value = data.draw(flag_values(tp))
    if verb == "quickstart" and not no_number(value, tp, flag):
        return                                  # a value it takes would start the whole quickstart
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            rc = cli([verb, *ARGS[verb], flag, value])
        except SystemExit as e:                 # argparse: the value is no number of that type
            rc = e.code
    lines = [line for line in err.getvalue().splitlines() if line.strip() and not line.startswith("usage:")
             and not line.startswith(" ")]
    assert rc == 2 and "Traceback" not in err.getvalue(), err.getvalue()
    assert "error:" in lines[-1], err.getvalue()
    if no_number(value, tp, flag):
        name = flag.lstrip("-").replace("-", "_")
        assert name in lines[-1] or flag in lines[-1], lines[-1]


# ---- every options class --------------------------------------------------------------------------------
MAY_BE_NEGATIVE = {"layer", "head", "top_k", "position"}      # -1: the last layer or position; no top-k filter


def option_fields() -> list[tuple[type, str, type, bool, object]]:
    """(class, field, int or float, whether None is a setting, its check) for every number field
    of every options class."""
    import pkgutil

    import lmforge
    from lmforge.options import _base_type, _field_types
    out, seen = [], set()
    for info in pkgutil.walk_packages(lmforge.__path__, "lmforge."):
        if info.name.endswith("__main__"):
            continue
        for cls in vars(importlib.import_module(info.name)).values():
            if isinstance(cls, type) and dataclasses.is_dataclass(cls) and cls.__module__.startswith("lmforge") \
                    and cls not in seen and any("help" in f.metadata for f in dataclasses.fields(cls)):
                seen.add(cls)
                hints = _field_types(cls)
                for f in dataclasses.fields(cls):
                    tp, optional = _base_type(hints.get(f.name))
                    if tp in (int, float) and "help" in f.metadata:
                        out.append((cls, f.name, tp, optional, f.metadata.get("check")))
    return out


OPTION_FIELDS = option_fields()


def test_the_option_fields_are_found():
    names = {(cls.__name__, name) for cls, name, *_ in OPTION_FIELDS}
    assert len(names) >= 60 and {("GenerationConfig", "seed"), ("TrainConfig", "seed"),
                                 ("ModelOverridesConfig", "d_model"), ("ServeConfig", "port")} <= names


@examples(400)
@given(data=st.data())
def test_every_option_refuses_alike_and_only_with_a_clear_error(data):
    cls, name, tp, optional, check = data.draw(st.sampled_from(OPTION_FIELDS))
    good, bad = numbers(tp, check)
    value = data.draw(good | bad)
    try:
        cls(**{name: value})
    except LmforgeError as e:
        assert name in str(e) or name.replace("_", "-") in str(e), str(e)
        return
    # taken: then it is a number of the field's type that the code can hold (or None where None is a setting)
    if value is None:
        assert optional, f"{cls.__name__}.{name} takes None"
        return
    assert not isinstance(value, bool) and isinstance(value, tp if tp is int else (int, float)), value
    assert math.isfinite(value) and (tp is float or INT64_MIN <= value <= 2 ** 64 - 1), value
    if tp is int and name not in MAY_BE_NEGATIVE:
        assert value >= 0, f"{cls.__name__}.{name} takes {value}: a count, or a rule it lacks"


@pytest.mark.parametrize("cls, name, tp, optional, check", OPTION_FIELDS,
                         ids=[f"{c.__name__}.{n}" for c, n, *_ in OPTION_FIELDS])
def test_no_option_takes_a_number_no_option_means(cls, name, tp, optional, check):
    for value in [math.nan, math.inf, -math.inf, 2 ** 64 + 1, -(2 ** 63) - 1]:
        if tp is int and isinstance(value, float):
            continue
        with pytest.raises(LmforgeError, match=name):
            cls(**{name: value})
