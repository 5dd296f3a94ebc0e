"""`lmforge serve`: an OpenAI-compatible server with continuous batching and a playground page.

    lmforge serve runs/my-model --port 8000         # then: openai.OpenAI(base_url="http://127.0.0.1:8000/v1")

The package, top to bottom (a module imports only those below it; `lint-imports` holds it):

    server.py               uvicorn: the log, a shutdown within --shutdown-timeout
    app.py                  create_app: the routes, the server's state on app.state, the lifespan
    routes_openai.py        /v1/completions, /v1/chat/completions, /v1/embeddings, /v1/models
    routes_tokenizer.py     /tokenize, /detokenize, /tokenizer_info, /health, /metrics
    routes_page.py          the playground page and its model views: /attention, /classify, the model card
    routes_inspect.py       the glass box: /inspect/lens, /dla, /patch, /attribute, /heads (lmforge.inspect)
    http.py                 one route wrapper (API key, errors in OpenAI's shape, counts), reading bodies
                            (within a size, a time, a depth)
    state.py                ServerState: the model, the scheduler, the limits and the metrics of one server
    replies.py              scheduler events to a request (Mailbox), read whole or streamed (Reply)
    openai_fields.py        OpenAI's request fields onto the decoding options (GenerationConfig)
    protocol.py · responses.py · prompts.py   request shapes · answer shapes · request text to prompt ids
    scheduler.py            continuous batching over one KV cache
    picker.py · events.py · rows.py · jobs.py · metrics.py · config.py   per-sequence token choice ·
                            scheduler events · the batched KV cache · model work run between two
                            decode steps · Prometheus metrics · the settings (ServeConfig)
"""

from __future__ import annotations

import os
import warnings

from .config import ServeConfig

__all__ = ["ServeConfig", "serve"]


def serve(args: ServeConfig) -> None:
    """Load the model and run the server until SIGTERM or Ctrl-C."""
    from ..api import load
    from .server import run
    if args.api_key is None:
        args.api_key = os.environ.get("LMFORGE_API_KEY") or None
    if args.host not in ("127.0.0.1", "localhost", "::1") and not args.api_key:
        warnings.warn(f"serving on {args.host} without an API key: anyone who can reach this machine can use the "
                      f"model; pass --api-key KEY (or set LMFORGE_API_KEY)", stacklevel=2)
    lm = load(args.model_dir, device=args.device, dtype=args.dtype)
    run(lm, args)
