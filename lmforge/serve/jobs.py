"""Model work that is not generation — inspections, attention maps, embeddings — as jobs the
scheduler's thread runs at a step boundary (`Scheduler.between_steps`): one job between two
decode steps, so a running batch waits for one job, then takes its next step, and a job never
waits for the batch to finish. Between steps the batch's KV-cache views are gone, so a job's
forward is the model's plain one, and no other thread touches the model (hook contexts are not
thread-safe)."""

from __future__ import annotations

import collections
from concurrent.futures import Future
from typing import Callable

import torch


class Jobs:
    """A queue of (fn, future); not locked itself: the scheduler holds its condition around
    `add`, `__bool__` and `take`."""

    def __init__(self) -> None:
        self._queue: collections.deque[tuple[Callable, Future]] = collections.deque()

    def add(self, fn: Callable) -> Future:
        future: Future = Future()
        self._queue.append((fn, future))
        return future

    def __bool__(self) -> bool:
        return bool(self._queue)

    def take(self) -> tuple[Callable, Future] | None:
        return self._queue.popleft() if self._queue else None

    @staticmethod
    def run(job: tuple[Callable, Future] | None) -> None:
        """`fn()` with autograd on (the scheduler's thread has it off; input attribution needs
        it), its result or exception set on the future."""
        if job is None or not job[1].set_running_or_notify_cancel():
            return
        fn, future = job
        try:
            with torch.enable_grad():
                future.set_result(fn())
        except Exception as e:          # the job's caller hears of it; the scheduler goes on
            future.set_exception(e)

    def fail_all(self, message: str) -> None:
        while self._queue:
            _, future = self._queue.popleft()
            if future.set_running_or_notify_cancel():
                future.set_exception(RuntimeError(message))
