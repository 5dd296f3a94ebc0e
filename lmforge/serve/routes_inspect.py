"""The glass box over HTTP: /inspect/lens, /inspect/dla, /inspect/patch, /inspect/attribute and
/inspect/heads (attention maps are the playground's /attention, `routes_page.py`).

Each route is the `lmforge.Model` method of the same name (`lmforge.inspect`) on the fields of
its body, answered with the result's `to_dict()` — the JSON `lmforge inspect TOOL --json`
prints. It runs as a job between two decode steps (`ServerState.on_model`): a running batch
waits for one inspection, then takes its next step. What bounds that wait is checked first, with
a 400 naming the field: a text of more than --max-inspect-tokens tokens, integrated gradients of
more than MAX_STEPS points, more than MAX_TOP_K tokens per lens cell.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import LmforgeError
from ..inspect.heads import KINDS as FAMILY_KINDS
from ..inspect.prompts import encode, single_token
from ..options import bounds
from .http import read_json
from .protocol import ApiError, field
from .state import ServerState, server_state

MAX_TOP_K = 20       # lens: tokens per layer and position (the answer holds layers x tokens x top_k of them)
MAX_STEPS = 256      # integrated gradients: points of the path integral (a forward and a backward each)
MAX_BATCH = 64       # integrated gradients: points per forward pass
METHODS = ("ig", "gxi")


def _one_token(state: ServerState, body: dict, name: str, required: bool = True) -> str | None:
    """A field that must be one token of the generated side (an answer to look for)."""
    value = state.inspected(body, name, required, target_side=True)
    if value is not None:
        try:
            single_token(state.out_tokenizer, value, f"'{name}'")
        except LmforgeError as e:
            raise ApiError(str(e), name) from None
    return value


def _choice(body: dict, name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = body.get(name, default)
    if value not in allowed:
        raise ApiError(f"'{name}' must be one of {', '.join(allowed)}, got {value!r}", name)
    return value


def _target(state: ServerState, body: dict) -> str | None:
    """An encoder-decoder's decoder text (default: its greedy translation); others have none."""
    return state.inspected(body, "target", required=False, target_side=True) if state.seq2seq else None


async def _answer(state: ServerState, fn, *args, **kwargs) -> Response:
    return JSONResponse((await state.on_model(fn, *args, **kwargs)).to_dict())


async def lens(request: Request) -> Response:
    state = server_state(request)
    body = await read_json(request)
    text = state.inspected(body, "text")
    top_k = field(body, "top_k", 5, int, bounds(1, MAX_TOP_K))
    return await _answer(state, state.lm.logit_lens, text, _target(state, body), top_k=top_k)


async def dla(request: Request) -> Response:
    state = server_state(request)
    body = await read_json(request)
    text = state.inspected(body, "text")
    answer, wrong = _one_token(state, body, "answer"), _one_token(state, body, "wrong", required=False)
    position = field(body, "position", -1, int)
    if not state.seq2seq:                       # (an encoder-decoder's length is its translation's: checked later)
        n = len(encode(state.lm, text))
        if not -n <= position < n:
            raise ApiError(f"'position' must be from {-n} to {n - 1} (the text has {n} tokens), got {position}",
                           "position")
    return await _answer(state, state.lm.dla, text, answer, wrong, position, _target(state, body))


async def patch(request: Request) -> Response:
    state = server_state(request)
    body = await read_json(request)
    clean, corrupted = state.inspected(body, "text"), state.inspected(body, "corrupted")
    answer, wrong = _one_token(state, body, "answer"), _one_token(state, body, "wrong")
    if state.config.family == "decoder" and len(encode(state.lm, clean)) != len(encode(state.lm, corrupted)):
        raise ApiError(f"'corrupted' must have as many tokens as 'text': {len(encode(state.lm, corrupted))} and "
                       f"{len(encode(state.lm, clean))}", "corrupted")
    return await _answer(state, state.lm.patch, clean, corrupted, answer, wrong)


async def attribute(request: Request) -> Response:
    state = server_state(request)
    body = await read_json(request)
    text = state.inspected(body, "text")
    labels = state.config.labels
    target = (body.get("target") if labels else _one_token(state, body, "target", required=False))
    if labels and target is not None and target not in labels:
        raise ApiError(f"'target' must be a label of this classifier ({', '.join(labels)}), got {target!r}", "target")
    method = _choice(body, "method", "ig", METHODS)
    steps = field(body, "steps", 50, int, bounds(2, MAX_STEPS))
    batch_size = field(body, "batch_size", 16, int, bounds(1, MAX_BATCH))
    return await _answer(state, state.lm.attribute, text, target=target, method=method, steps=steps,
                         batch_size=batch_size)


async def heads(request: Request) -> Response:
    state = server_state(request)
    body = await read_json(request)
    longest = max(2, (state.inspect_limit - 2) // 2)         # the random tokens, twice, and the specials
    seq_len = field(body, "seq_len", None, int, bounds(2, longest))
    if seq_len is None and min(50, (state.config.context_length - 2) // 2) > longest:
        seq_len = longest                                   # (the tool's default, cut to the server's limit)
    seed = field(body, "seed", 0, int, bounds(0))
    alphabet = state.inspected(body, "alphabet", required=False)
    kind = _choice(body, "kind", "auto", ("auto", *FAMILY_KINDS[state.config.family]))
    return await _answer(state, state.lm.head_scores, seq_len=seq_len, seed=seed, alphabet=alphabet, kind=kind)
