"""`create_app`: the routes of `lmforge serve` (Starlette), its `ServerState` on `app.state.server`,
and the lifespan that starts and stops the scheduler.

Routes: /v1/completions, /v1/chat/completions, /v1/embeddings, /v1/models, /v1/models/{model}/card
(a bearer key when one is set), /tokenize, /detokenize, /tokenizer_info (vLLM's shapes), /health,
/metrics (Prometheus), / (the playground) and the playground's /attention and /classify, and the
glass box's /inspect/lens, /inspect/dla, /inspect/patch, /inspect/attribute, /inspect/heads.
Generation goes through one `Scheduler` (continuous batching); other model work (inspections,
attention maps, embeddings, classification) is a job the scheduler runs between two decode steps.
"""

from __future__ import annotations

import asyncio
import contextlib

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.routing import Route

from . import routes_inspect as inspect, routes_openai as openai, routes_page as page, routes_tokenizer as tokenizer
from .config import ServeConfig
from .http import endpoint, http_error
from .replies import Mailbox
from .state import ServerState

ROUTES = [    # (path, method, route function)
    ("/v1/completions", "POST", openai.completions),
    ("/v1/chat/completions", "POST", openai.chat_completions),
    ("/v1/embeddings", "POST", openai.embeddings),
    ("/v1/models", "GET", openai.models),
    ("/v1/models/{model}/card", "GET", page.model_card),
    ("/tokenize", "POST", tokenizer.tokenize),
    ("/detokenize", "POST", tokenizer.detokenize),
    ("/tokenizer_info", "GET", tokenizer.tokenizer_info),
    ("/attention", "POST", page.attention),
    ("/classify", "POST", page.classify),
    ("/inspect/lens", "POST", inspect.lens),
    ("/inspect/dla", "POST", inspect.dla),
    ("/inspect/patch", "POST", inspect.patch),
    ("/inspect/attribute", "POST", inspect.attribute),
    ("/inspect/heads", "POST", inspect.heads),
    ("/health", "GET", tokenizer.health),
    ("/", "GET", page.playground),
]


def create_app(lm, args: ServeConfig) -> Starlette:
    """The server for a loaded `lmforge.Model`."""
    state = ServerState.of(lm, args)
    routes = [Route(path, endpoint(fn, path), methods=[method]) for path, method, fn in ROUTES]
    routes.append(Route("/metrics", tokenizer.metrics, methods=["GET"]))     # not counted in itself

    @contextlib.asynccontextmanager
    async def lifespan(app):
        state.mailbox = Mailbox(asyncio.get_running_loop())     # the loop that serves the requests
        if state.scheduler is not None:
            state.scheduler.start()
        yield
        if state.scheduler is not None:
            state.scheduler.shutdown()

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})
    app.state.server = state
    return app
