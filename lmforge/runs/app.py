"""`create_app`: the routes of `lmforge runs` (Starlette), the `RunsFolder` on `app.state.runs`.

    GET /                                    the page (static/index.html)
    GET /api/runs                            a summary of every run, newest first
    GET /api/run?run=ID                      a run's settings (train_config.yaml) and model (config.json)
    GET /api/rows?run=ID&since=N&file=F      the metrics rows written after byte N (see reading.py)
    GET /health                              {"status": "ok"}

A run's id is its path under the folder; one that is not a run inside it (an absolute path,
'..', a symlink out of the folder) gets 404, like one that does not exist. Routes are plain
functions: Starlette runs them in its thread pool, so reading a long file does not hold up the
other requests.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .reading import RunsFolder


def _folder(request: Request) -> RunsFolder:
    return request.app.state.runs


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message}}, status_code=status)


def _run_id(request: Request) -> tuple[str, Path | None]:
    run_id = request.query_params.get("run", "")
    return run_id, _folder(request).run_dir(run_id)


def page(request: Request) -> Response:
    return Response(request.app.state.page, media_type="text/html; charset=utf-8")


def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def runs(request: Request) -> Response:
    folder = _folder(request)
    return JSONResponse({"folder": str(folder.root), "runs": folder.runs()})


def run(request: Request) -> Response:
    run_id, path = _run_id(request)
    if path is None:
        return _error(404, f"no run {run_id!r} in {_folder(request).root}")
    return JSONResponse({"id": run_id, "settings": _folder(request).settings(run_id),
                         "model": _folder(request).model(run_id)})


def rows(request: Request) -> Response:
    run_id, path = _run_id(request)
    if path is None:
        return _error(404, f"no run {run_id!r} in {_folder(request).root}")
    since = request.query_params.get("since", "0")
    if not (since.isascii() and since.isdigit()):
        return _error(400, f"'since' must be a byte offset (a whole number >= 0), got {since!r}")
    return JSONResponse(_folder(request).rows(run_id, int(since), request.query_params.get("file") or None))


ROUTES = [    # (path, route function); every route is GET
    ("/", page),
    ("/health", health),
    ("/api/runs", runs),
    ("/api/run", run),
    ("/api/rows", rows),
]


def create_app(directory: str | Path) -> Starlette:
    """The runs page for the runs under `directory` (a ConfigError when it is not a folder)."""
    app = Starlette(routes=[Route(path, fn, methods=["GET"]) for path, fn in ROUTES])
    app.state.runs = RunsFolder(directory)
    app.state.page = resources.files(__package__).joinpath("static", "index.html").read_bytes()
    return app
