"""What every route shares: `endpoint` wraps a route function (the API key on /v1/*, every
answer counted by route and status, and every failure answered in OpenAI's error shape — a
mistake in the request as a 4xx naming it, anything else as a 500, never plain text), and
`read_json` reads a body within the server's limits: its size, the time it may take to arrive,
how deep it nests, text that is Unicode."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
from typing import Awaitable, Callable

from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

from ..errors import LmforgeError
from .protocol import ApiError
from .state import ServerState, server_state

Route = Callable[[Request], Awaitable[Response]]
log = logging.getLogger("lmforge.serve")

MAX_DEPTH = 32        # nesting of a request body (the deepest request we take: body > messages > [i] > content > [j])
# Errors a request's content raises in code that reads it (a library given what no request should
# hold): the client's doing, so a 400 and one line in the log, not a traceback.
REQUEST_ERRORS = (RecursionError, UnicodeError, OverflowError)


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
        except ClientDisconnect:               # it left while sending its body: nobody to answer
            return error_response(state, ApiError("the client disconnected", status=400), path)
        except REQUEST_ERRORS as e:
            log.warning("400 on %s %s: the request holds what the server cannot read: %s: %s", request.method,
                        path, type(e).__name__, e)
            return error_response(state, ApiError(f"the request holds what the server cannot read "
                                                  f"({type(e).__name__}: {e})"), path)
        except Exception as e:                  # a bug: the client still gets OpenAI's shape, the log a traceback
            log.exception("500 on %s %s", request.method, path)
            return error_response(state, ApiError(f"internal error ({type(e).__name__}); the server's log has the "
                                                  f"details", status=500, kind="server_error"), path)
        state.metrics.requests.labels(path, str(response.status_code)).inc()
        return response
    return answer


async def http_error(request: Request, e: HTTPException) -> Response:
    """Starlette's own answers (no such route: 404, a route without that method: 405) in
    OpenAI's error shape."""
    what = {404: f"no route {request.url.path}", 405: f"{request.url.path} does not take {request.method}"}
    message = what.get(e.status_code, e.detail)
    body = ApiError(message, status=e.status_code, code="not_found" if e.status_code == 404 else None).body()
    return JSONResponse(body, status_code=e.status_code, headers=e.headers)


async def read_json(request: Request) -> dict:
    """The request's JSON object; 413 past the body limit (--max-body-mb), 408 when it does not
    arrive whole within --body-timeout, 400 when it is not UTF-8 JSON holding an object, nests
    deeper than MAX_DEPTH or holds text that is not Unicode (a lone surrogate escape)."""
    state = server_state(request)
    limit = state.max_body
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and (len(declared) > 18 or int(declared) > limit):
        raise ApiError(f"request body of {declared} bytes is over the limit of {limit} bytes (--max-body-mb)",
                       status=413)
    timeout = state.settings.body_timeout
    try:
        async with asyncio.timeout(timeout):
            raw = await _body(request, limit)
    except TimeoutError:
        raise ApiError(f"request body did not arrive within {timeout:g} s (--body-timeout)", status=408,
                       code="timeout") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ApiError(f"request body is not UTF-8 ({e.reason} at byte {e.start})") from None
    body = _parse(text)
    if not isinstance(body, dict):
        raise ApiError("request body must be a JSON object")
    if text.count("[") + text.count("{") > MAX_DEPTH or _SURROGATE_ESCAPE.search(text):
        _check_values(body)                 # (a walk only when the text could hold either)
    return body


async def _body(request: Request, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(f"request body is over the limit of {limit} bytes (--max-body-mb)", status=413)
        chunks.append(chunk)
    return b"".join(chunks)


def _parse(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ApiError(f"request body is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise ApiError(f"request body nests deeper than {MAX_DEPTH} levels") from None
    except ValueError:                  # an integer of thousands of digits, past Python's limit on converting one
        raise ApiError(f"request body holds a number of more than {sys.get_int_max_str_digits()} digits; no field "
                       f"takes one") from None


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _check_values(body: dict) -> None:
    """Depth and Unicode, walked without recursion; the top-level field is named."""
    stack = [(key, value, 2) for key, value in body.items()] + [(key, key, 1) for key in body]
    while stack:
        top, value, depth = stack.pop()
        if isinstance(value, str) and _SURROGATE.search(value):
            problem = "holds text that is not valid Unicode (an unpaired surrogate escape such as \\ud800)"
        elif isinstance(value, (list, dict)) and depth > MAX_DEPTH:
            problem = f"nests deeper than {MAX_DEPTH} levels"
        else:
            if isinstance(value, (list, dict)):
                stack.extend((top, item, depth + 1) for item in
                             ([*value.keys(), *value.values()] if isinstance(value, dict) else value))
            continue
        name = top.encode("utf-8", "backslashreplace").decode("utf-8")        # a key may hold a surrogate too
        raise ApiError(f"'{name}' {problem}", name)
