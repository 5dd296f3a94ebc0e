"""`lmforge runs`: a page of the training runs under a folder — their settings, curves, samples
and warnings, updated while they train, two or more overlaid — read from the runs' files only,
so runs copied over from another machine show the same.

    lmforge runs runs/ --port 8100                # then open http://127.0.0.1:8100/

The package, top to bottom:

    app.py          create_app: the page and its JSON routes (/api/runs, /api/run, /api/rows)
    reading.py      RunsFolder: finding runs, their summaries and settings, metrics.jsonl by byte offset
    static/         index.html: the page (one file: its charts are inline SVG, nothing from the internet)
"""

from __future__ import annotations

import warnings
from pathlib import Path

from .app import create_app
from .reading import RunsFolder

__all__ = ["RunsFolder", "create_app", "serve_runs"]

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def serve_runs(directory: str | Path = "runs", host: str = "127.0.0.1", port: int = 8100) -> None:
    """Serve the runs page for the runs under `directory` until interrupted."""
    import uvicorn
    app = create_app(directory)
    if host not in LOCAL_HOSTS:
        warnings.warn(f"serving on {host}: anyone who can reach this machine can read the runs' settings and "
                      f"samples", stacklevel=2)
    address = f"[{host}]" if ":" in host else host
    print(f"lmforge runs: {len(app.state.runs.runs())} run(s) in {directory}, at http://{address}:{port}/", flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
