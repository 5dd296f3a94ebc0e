"""From the scheduler's thread to a request on the event loop: the server's `Mailbox`, and a
`Reply` — the events of one request's sequences, read in one of two ways: `collect` (the whole
answer, for a plain JSON response) or `stream` (chunks as the events arrive, for server-sent
events). One reader for both, as llama.cpp's server has one response reader."""

from __future__ import annotations

import asyncio
import threading
from typing import AsyncIterator, Callable

from .events import Event, Failed, Token
from .protocol import ApiError
from .responses import sse


class Mailbox:
    """Hands scheduler events (scheduler thread) to request queues (the event loop's thread).
    Events posted while a delivery is pending ride along with it, so one decode step of 16
    sequences wakes the event loop once, not 16 times."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self._pending: list[tuple[asyncio.Queue, Event]] = []
        self._lock = threading.Lock()

    def post(self, queue: asyncio.Queue, event: Event) -> None:
        with self._lock:
            self._pending.append((queue, event))
            first = len(self._pending) == 1
        if first:
            self.loop.call_soon_threadsafe(self._deliver)

    def _deliver(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        for queue, event in batch:
            queue.put_nowait(event)


class Reply:
    """The events of one request's sequences (`emit` is their callback), and the two ways to
    read them. `seqs` are set once the request's sequences are made; whatever way the reply
    ends (done, client gone, error), `cancel_unfinished` frees the rows still held."""

    def __init__(self, mailbox: Mailbox, scheduler) -> None:
        self.mailbox, self.scheduler = mailbox, scheduler
        self.queue: asyncio.Queue = asyncio.Queue()
        self.seqs: list = []

    def emit(self, event: Event) -> None:
        self.mailbox.post(self.queue, event)

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
        left = len(self.seqs)
        try:
            while left:
                try:
                    event = await asyncio.wait_for(self.queue.get(), timeout=1.0)
                except asyncio.TimeoutError:
                    if await is_disconnected():
                        raise asyncio.CancelledError from None
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
        while left:
            out = []
            for event in await self._next_batch():
                if isinstance(event, Token):
                    if event.text or event.logprob is not None:
                        out.append(on_token(event.seq, event.text, event.logprob))
                elif isinstance(event, Failed):
                    left -= 1
                    out.append(sse({"error": {"message": f"generation failed: {event.message}",
                                              "type": "server_error", "param": None, "code": None}}))
                else:
                    left -= 1
                    out.append(on_finish(event.seq))
            if out:
                yield "".join(out)
