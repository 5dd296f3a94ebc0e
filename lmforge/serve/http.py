"""What every route shares: `endpoint` wraps a route function (the API key on /v1/*, mistakes
answered in OpenAI's error shape, every answer counted by route and status), and `read_json`
reads a body within the size limit."""

from __future__ import annotations

import json
from typing import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..errors import LmforgeError
from .protocol import ApiError
from .state import ServerState, server_state

Route = Callable[[Request], Awaitable[Response]]


def error_response(state: ServerState, e: ApiError, path: str) -> JSONResponse:
    state.metrics.requests.labels(path, str(e.status)).inc()
    headers = {"Retry-After": "1"} if e.status == 503 else None
    return JSONResponse(e.body(), status_code=e.status, headers=headers)


def endpoint(fn: Route, path: str) -> Route:
    """`fn` as the route of `path`."""
    async def answer(request: Request) -> Response:
        state = server_state(request)
        try:
            key = state.settings.api_key
            if key and path.startswith("/v1/") and request.headers.get("authorization", "") != f"Bearer {key}":
                raise ApiError("missing or wrong API key: send 'Authorization: Bearer KEY' with the key the server "
                               "was started with", status=401, kind="authentication_error", code="invalid_api_key")
            response = await fn(request)
        except ApiError as e:
            return error_response(state, e, path)
        except LmforgeError as e:
            return error_response(state, ApiError(str(e)), path)
        state.metrics.requests.labels(path, str(response.status_code)).inc()
        return response
    return answer


async def read_json(request: Request) -> dict:
    """The request's JSON object; 413 past the body limit (--max-body-mb), 400 when it is not UTF-8
    JSON holding an object."""
    limit = server_state(request).max_body
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(f"request body of {int(declared)} bytes is over the limit of {limit} bytes "
                       f"(--max-body-mb)", status=413)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(f"request body is over the limit of {limit} bytes (--max-body-mb)", status=413)
        chunks.append(chunk)
    try:
        text = b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as e:
        raise ApiError(f"request body is not UTF-8 ({e.reason} at byte {e.start})") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as e:
        raise ApiError(f"request body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    if not isinstance(body, dict):
        raise ApiError("request body must be a JSON object")
    return body
