"""Model work that is not generation — inspections, attention maps, embeddings — as jobs the
scheduler's thread runs at a step boundary (`Scheduler.between_steps`): one job between two
decode steps, so a running batch waits for one job, then takes its next step, and a job never
waits for the batch to finish. Between steps the batch's KV-cache views are gone, so a job's
forward is the model's plain one, and no other thread touches the model (hook contexts are not
thread-safe).

Jobs share the model's time with a running batch: after a job of t seconds the next one waits
until the batch has decoded for t seconds too, so a stream of inspections takes at most half of
a batch's time (without it, a client sending inspections back to back slowed 16 streams 9.9x:
one step between two inspections). Without a batch a job runs at once."""

from __future__ import annotations

import collections
import time
from concurrent.futures import Future
from typing import Callable

import torch


class Jobs:
    """A queue of (fn, future); not locked itself: the scheduler holds its condition around
    `add`, `__bool__` and `take`."""

    def __init__(self) -> None:
        self._queue: collections.deque[tuple[Callable, Future]] = collections.deque()
        self._next = 0.0                # perf_counter time before which a running batch keeps the model

    def add(self, fn: Callable) -> Future:
        future: Future = Future()
        self._queue.append((fn, future))
        return future

    def __bool__(self) -> bool:
        return bool(self._queue)

    def take(self, batch_running: bool) -> tuple[Callable, Future] | None:
        """The next job, if it is its turn (a running batch has had as long as the last job took)."""
        if not self._queue or (batch_running and time.perf_counter() < self._next):
            return None
        return self._queue.popleft()

    def run(self, job: tuple[Callable, Future] | None) -> None:
        """`fn()` with autograd on (the scheduler's thread has it off; input attribution needs
        it), its result or exception set on the future."""
        if job is None or not job[1].set_running_or_notify_cancel():
            return
        fn, future = job
        t0 = time.perf_counter()
        try:
            with torch.enable_grad():
                future.set_result(fn())
        except Exception as e:          # the job's caller hears of it; the scheduler goes on
            future.set_exception(e)
        end = time.perf_counter()
        self._next = end + (end - t0)

    def fail_all(self, message: str) -> None:
        while self._queue:
            _, future = self._queue.popleft()
            if future.set_running_or_notify_cancel():
                future.set_exception(RuntimeError(message))
