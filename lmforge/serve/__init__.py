"""`lmforge serve`: an OpenAI-compatible server with continuous batching and a playground page.

    lmforge serve runs/my-model --port 8000         # then: openai.OpenAI(base_url="http://127.0.0.1:8000/v1")

The settings live here (cheap to import, for the CLI); the app is in `app.py`, the batching in
`scheduler.py`.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

from ..errors import LmforgeError
from ..options import option


@dataclass
class ServeArgs:
    model_dir: str = option(None, "model directory to serve", positional=True)
    host: str = option("127.0.0.1", "address to bind (127.0.0.1: this machine only)")
    port: int = option(8000, "port to listen on")
    api_key: str | None = option(None, "clients must send 'Authorization: Bearer KEY' on /v1/* (default: the "
                                       "LMFORGE_API_KEY environment variable; none: no key)")
    max_batch_size: int = option(16, "sequences decoded together (rows of the batched KV cache)")
    max_queue: int = option(64, "sequences that may wait for a row; beyond that requests get 503 at once")
    max_body_mb: float = option(2.0, "largest request body accepted, in MB (larger ones get 413)")
    model_name: str | None = option(None, "the model id clients see (default: the directory's name)")
    device: str = option("auto", "auto, cpu or cuda")
    dtype: str = option("auto", "auto, float32, bfloat16")

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise LmforgeError(f"--max-batch-size {self.max_batch_size} must be at least 1")
        if self.max_queue < 1:
            raise LmforgeError(f"--max-queue {self.max_queue} must be at least 1")


def serve(args: ServeArgs) -> None:
    """Load the model and run the server until interrupted."""
    import uvicorn

    from ..api import load
    from .app import create_app
    if args.api_key is None:
        args.api_key = os.environ.get("LMFORGE_API_KEY") or None
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        warnings.warn(f"serving on {args.host} without an API key: anyone who can reach this machine can use the "
                      f"model; pass --api-key KEY (or set LMFORGE_API_KEY)", stacklevel=2)
    lm = load(args.model_dir, device=args.device, dtype=args.dtype)
    uvicorn.run(create_app(lm, args), host=args.host, port=args.port, log_level="info", access_log=False)
