"""The playground page (/) and the model views it draws: /attention (attention maps, of a text
within --max-inspect-tokens), /classify (a classifier's labels, or an encoder's similarities) and
/v1/models/{model}/card (the model card, `lmforge.card`). The first two run on the model between
decode steps (`ServerState.on_model`); the page's glass-box views call `routes_inspect.py`."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import shown
from .http import read_json
from .protocol import ApiError, input_texts
from .state import server_state


async def playground(request: Request) -> Response:
    return Response(server_state(request).page, media_type="text/html; charset=utf-8")


async def attention(request: Request) -> Response:
    state = server_state(request)
    body = await read_json(request)
    text = body.get("text")
    if not isinstance(text, str) or not text:
        raise ApiError("'text' must be a non-empty string", "text")
    state.check_inspected(text, "text")
    kind = body.get("kind", "auto")
    if not isinstance(kind, str):
        raise ApiError(f"'kind' must be a string (auto, self, cross, encoder or decoder), got {shown(kind)}", "kind")
    maps, tokens = await state.on_model(state.lm.attention_maps, text, kind=kind, with_tokens=True,
                                        max_tokens=state.settings.max_inspect_tokens)   # (cuts a seq2seq's target)
    layer = _layer(body, maps.shape[0] - 1)
    return JSONResponse({"layers": maps.shape[0], "heads": maps.shape[1], "layer": layer,
                         "queries": tokens[0], "keys": tokens[1],
                         "maps": [[[round(x, 4) for x in row] for row in head] for head in maps[layer].tolist()]})


def _layer(body: dict, last: int) -> int:
    value = body.get("layer", 0)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= last:
        raise ApiError(f"'layer' must be an integer from 0 to {last}, got {shown(value)}", "layer")
    return value


async def classify(request: Request) -> Response:
    state = server_state(request)
    body = await read_json(request)
    texts = input_texts(body)
    if state.config.labels:
        return JSONResponse({"kind": "labels", "results": await state.on_model(state.lm.classify, texts)})
    if state.config.family == "encoder":
        vectors = await state.on_model(state.lm.embed, texts)
        return JSONResponse({"kind": "similarity", "texts": texts, "similarity": (vectors @ vectors.T).tolist()})
    raise ApiError("/classify needs a classifier or an embedding (encoder) model", code="model_not_supported")


async def model_card(request: Request) -> Response:
    """The served model's card as Markdown (its README.md as lmforge would write it now; nothing is written)."""
    state = server_state(request)
    model = request.path_params["model"]
    if model != state.name:
        raise ApiError(f"model {model!r} is not served here; this server serves {state.name!r}", "model", status=404,
                       code="model_not_found")
    text = await run_in_threadpool(state.lm.card)          # reads files: off the event loop
    return JSONResponse({"id": state.name, "object": "model.card", "format": "markdown", "card": text})
