"""The settings of `lmforge serve` (cheap to import, for the CLI)."""

from __future__ import annotations

from dataclasses import dataclass

from ..options import at_least, bounds, device_name, option, validate


@dataclass
class ServeConfig:
    model_dir: str = option(None, "model directory to serve", positional=True)
    host: str = option("127.0.0.1", "address to bind (127.0.0.1: this machine only)")
    port: int = option(8000, "port to listen on", check=bounds(0, 65535))
    api_key: str | None = option(None, "clients must send 'Authorization: Bearer KEY' on /v1/* (default: the "
                                       "LMFORGE_API_KEY environment variable; none: no key)")
    max_batch_size: int = option(16, "sequences decoded together (rows of the batched KV cache)", check=at_least(1))
    max_queue: int = option(64, "sequences that may wait for a row; beyond that requests get 503 at once",
                            check=at_least(1))
    max_body_mb: float = option(2.0, "largest request body accepted, in MB (larger ones get 413)", check=at_least(0))
    body_timeout: float = option(30.0, "seconds a client has to send a request's whole body (a slower one gets 408)",
                                 check=bounds(0.0, low_open=True))
    max_stream_backlog: int = option(1024, "stream events a client may leave unread (it reads too slowly) before its "
                                           "request is cancelled: bounds the memory one slow reader holds",
                                     check=bounds(1))
    shutdown_timeout: float = option(10.0, "on SIGTERM or Ctrl-C: seconds the running requests get to finish; then "
                                           "they end (a stream with a last chunk and [DONE])", check=bounds(0.0))
    max_inspect_tokens: int = option(256, "longest text, in tokens, the inspection routes (/inspect/*, /attention) "
                                          "take (longer: 400); one runs between two decode steps, so this bounds "
                                          "how long a running batch waits for it", check=at_least(1))
    model_name: str | None = option(None, "the model id clients see (default: the directory's name)")
    compile: bool | None = option(None, "decode with the compiled step (CPU, decoders: one running row; an "
                                        "int8/int4 model up to 8, padded to 1, 2, 4 or 8); --no-compile: never",
                                  unset="as `lmforge generate`: on a CPU, a row count compiles once it has "
                                        "decoded eagerly for 5 s")
    device: str = option("auto", "auto, cpu or cuda", check=device_name)
    dtype: str = option("auto", "auto, float32, bfloat16")

    def __post_init__(self) -> None:
        validate(self)
