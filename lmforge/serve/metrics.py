"""Prometheus metrics of one server (`GET /metrics`), in a registry of their own so two
servers in one process (tests) never share counters."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("lmforge_requests", "HTTP requests answered, by route and status code",
                                ["route", "status"], registry=r)
        self.prompt_tokens = Counter("lmforge_prompt_tokens", "prompt tokens prefilled", registry=r)
        self.generated_tokens = Counter("lmforge_generated_tokens", "tokens generated", registry=r)
        self.finished = Counter("lmforge_finished_sequences", "sequences that ended, by reason: stop, length, "
                                "cancelled (the client went away) or error", ["reason"], registry=r)
        self.queue_depth = Gauge("lmforge_queue_depth", "sequences waiting for a batch row", registry=r)
        self.running = Gauge("lmforge_running_sequences", "sequences in the running batch", registry=r)
        self.batch_size = Histogram("lmforge_batch_occupancy", "running sequences per decode step",
                                    buckets=(1, 2, 4, 8, 12, 16, 24, 32, 64), registry=r)
        self.time_to_first_token = Histogram("lmforge_time_to_first_token_seconds",
                                             "from a request's arrival to its first generated token",
                                             buckets=LATENCY_BUCKETS, registry=r)
        self.decode_steps = Counter("lmforge_decode_steps", "decode steps, by step: eager, or compiled (a CPU: "
                                    "`lmforge serve --compile`, or the default once a row count has decoded "
                                    "eagerly for 5 s)", ["step"], registry=r)
        self.token_latency = Histogram("lmforge_time_per_output_token_seconds",
                                       "duration of one decode step (one token for every running sequence)",
                                       buckets=LATENCY_BUCKETS, registry=r)

    def text(self) -> bytes:
        return generate_latest(self.registry)
