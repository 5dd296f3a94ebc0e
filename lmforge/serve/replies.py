"""From the scheduler's thread to a request on the event loop: the server's `Mailbox`, and a
`Reply` — the events of one request's sequences, read in one of two ways: `collect` (the whole
answer, for a plain JSON response) or `stream` (chunks as the events arrive, for server-sent
events). One reader for both, as llama.cpp's server has one response reader.

Back-pressure: the scheduler never waits for a client (it decodes everyone's next token at
once). A stream whose client reads slowly stops taking events once its socket's buffers are
full, and they wait in its Reply; past `max_backlog` unread events the request is cancelled
(its rows are freed at the next step) and the stream ends with an error event, so one slow
reader holds a bounded amount of memory and never slows the others.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import AsyncIterator, Callable

from .events import Event, Failed, Finish, Token
from .protocol import ApiError
from .responses import sse


class Mailbox:
    """Hands scheduler events (scheduler thread) to request queues (the event loop's thread).
    Events posted while a delivery is pending ride along with it, so one decode step of 16
    sequences wakes the event loop once, not 16 times."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._pending: list[tuple[Reply, Event]] = []
        self._lock = threading.Lock()

    def post(self, reply: "Reply", event: Event) -> None:
        with self._lock:
            self._pending.append((reply, event))
            first = len(self._pending) == 1
        if first:
            self.loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        for reply, event in batch:
            reply.deliver(event)


_BEHIND = object()          # in a stream's queue: its reader fell `max_backlog` events behind


class Reply:
    """The events of one request's sequences (`emit` is their callback), and the two ways to
    read them. `seqs` are set once the request's sequences are made; whatever way the reply
    ends (done, client gone, error), `cancel_unfinished` frees the rows still held."""

    def __init__(self, mailbox: Mailbox, scheduler, max_backlog: int | None = None) -> None:
        self.mailbox, self.scheduler, self.max_backlog = mailbox, scheduler, max_backlog
        self.queue: asyncio.Queue = asyncio.Queue()
        self.seqs: list = []
        self.streaming = self.behind = False

    def emit(self, event: Event) -> None:
        """(The scheduler's thread.)"""
        self.mailbox.post(self, event)

    def deliver(self, event: Event) -> None:
        """(The event loop.) Queue an event for the reader; a stream's reader that is too far
        behind gets its request cancelled instead, and nothing more."""
        if self.behind:
            return
        if self.streaming and self.max_backlog is not None and self.queue.qsize() >= self.max_backlog:
            self.behind = True
            self.cancel_unfinished()
            event = _BEHIND
        self.queue.put_nowait(event)

    def cancel_unfinished(self) -> None:
        self.scheduler.cancel([s for s in self.seqs if s.finish_reason is None])

    async def _next_batch(self) -> list[Event]:
        """The next event and every other one already waiting (one write to the client for all)."""
        events = [await self.queue.get()]
        while not self.queue.empty():
            events.append(self.queue.get_nowait())
        return events

    async def collect(self, is_disconnected: Callable) -> tuple[dict[int, str], dict[int, list]]:
        """Wait for every sequence to finish: ({choice index: text}, {choice index: logprob
        entries}); the sequences are cancelled if the client leaves (`await is_disconnected()`)."""
        texts = {s.index: "" for s in self.seqs}
        entries: dict[int, list] = {s.index: [] for s in self.seqs}
        left, checked = len(self.seqs), time.monotonic()
        try:
            while left:
                try:
                    event = await asyncio.wait_for(self.queue.get(), timeout=1.0)
                except asyncio.TimeoutError:
                    event = None
                if time.monotonic() - checked >= 1.0:       # once a second, tokens flowing or not
                    if await is_disconnected():
                        raise asyncio.CancelledError from None
                    checked = time.monotonic()
                if event is None:
                    continue
                s = event.seq
                if isinstance(event, Token):
                    texts[s.index] += event.text
                    if event.logprob is not None:
                        entries[s.index].append(event.logprob)
                elif isinstance(event, Failed):
                    raise ApiError(f"generation failed: {event.message}", status=500, kind="server_error")
                else:
                    left -= 1
                    texts[s.index] = s.picker.text       # decoded whole, as `lmforge generate` gives it
        finally:
            if left:
                self.scheduler.cancel(self.seqs)
        return texts, entries

    async def stream(self, on_token: Callable, on_finish: Callable) -> AsyncIterator[str]:
        """Server-sent-event text until every sequence has finished; the events that arrived
        together go out in one write. `on_token(seq, text, logprob entry)` and `on_finish(seq)`
        render one chunk each; a failure becomes an error event in OpenAI's shape."""
        left = len(self.seqs)
        self.streaming = True
        while left:
            out = []
            for event in await self._next_batch():
                if event is _BEHIND:                    # the request was cancelled: nothing more comes
                    left = 0
                    out.append(_error_event(f"the client read the stream too slowly: {self.max_backlog} events were "
                                            f"waiting unread (--max-stream-backlog), so the request was cancelled",
                                            "invalid_request_error", "stream_backlog_exceeded"))
                    break
                if isinstance(event, Token):
                    if event.text or event.logprob is not None:
                        out.append(on_token(event.seq, event.text, event.logprob))
                    continue
                left -= 1
                out.append(on_finish(event.seq) if isinstance(event, Finish)
                           else _error_event(f"generation failed: {event.message}"))
            if out:
                yield "".join(out)


def _error_event(message: str, kind: str = "server_error", code: str | None = None) -> str:
    """An error inside a stream (its status line has gone already), in OpenAI's error shape."""
    return sse({"error": {"message": message, "type": kind, "param": None, "code": code}})
