"""`lmforge serve` under uvicorn: its log lines, and a shutdown with a bound.

On SIGTERM (or Ctrl-C) the server stops accepting connections, new generation requests on open
ones get 503, and the running requests get `--shutdown-timeout` seconds to finish; whatever is
still running then ends at the next token boundary with finish_reason "cancelled" (a stream
gets its last chunk and [DONE], a whole answer its text so far), and uvicorn gets
`CLOSE_MARGIN` more seconds to close the connections before it cuts them. The log says when the
shutdown starts and how it ended, one line each.
"""

from __future__ import annotations

import copy

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from .app import create_app
from .config import ServeConfig
from .state import ServerState

CLOSE_MARGIN = 2     # seconds for the connections to close after the last request ended


class _Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state: ServerState):
        super().__init__(config)
        self.state = state

    async def shutdown(self, sockets=None) -> None:
        for server in getattr(self, "servers", []):
            server.close()                    # no new connections while the running requests finish
        await self.state.drain(self.state.settings.shutdown_timeout, lambda: self.force_exit)
        await super().shutdown(sockets)


def log_config() -> dict:
    """uvicorn's logging, with lmforge's own lines (`lmforge.serve`) formatted like its."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["lmforge"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def run(lm, args: ServeConfig) -> None:
    """Serve `lm` until SIGTERM or Ctrl-C (see the module's docstring for how it stops)."""
    app = create_app(lm, args)
    config = uvicorn.Config(app, host=args.host, port=args.port, log_level="info", access_log=False,
                            log_config=log_config(), timeout_graceful_shutdown=CLOSE_MARGIN)
    _Server(config, app.state.server).run()
