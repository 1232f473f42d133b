"""An SSE response over ``HttpServer``'s streaming protocol, and a shared clock fanned out to streams.

``HttpServer`` sends any handler result that has ``async send(writer)`` as a streaming response
(``writer.write_head()``, ``writer.write()``, ``writer.end()``, chunked framing). Until the
library's own ``EventSourceResponse`` and fan-out helper land, :class:`EventStreamResponse` and
:class:`Ticker` are the small versions this service needs.

* :class:`EventStreamResponse` sends ``text/event-stream`` from an async iterator of encoded
  events. It ends the stream (cleanly, with the last chunk) at the next event once the server is
  shutting down, so clients reconnect with ``Last-Event-ID``, and it always closes its iterator
  (so subscriptions end).
* :class:`Ticker` is one clock for every subscriber: each tick is encoded once and handed to
  every subscriber through a chain of slots (a slot is filled, then its ``Event`` wakes all the
  subscribers parked on it). A subscriber that was busy writing when a tick came finds it
  already filled, so no subscriber skips a tick; a subscriber holds only the slots it has not
  sent yet. The clock task runs only while someone subscribes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator
from datetime import UTC, datetime
from time import monotonic, time
from typing import Any

from flowno import Event, sleep, spawn

from flowno_io import Headers, ServerSentEvent

__all__ = ["EventStreamResponse", "Ticker"]

logger = logging.getLogger(__name__)


class EventStreamResponse:
    """A ``text/event-stream`` response whose events come from ``chunks`` (already encoded).

    Args:
        chunks: encoded events (``ServerSentEvent(...).encode()``), sent as they come.
        status: the status code.
        end_on_shutdown: stop at the next event once the server is closing.
    """

    def __init__(
        self, chunks: AsyncIterator[bytes], *, status: int = 200, end_on_shutdown: bool = True
    ) -> None:
        self.chunks = chunks
        self.status = status
        self.end_on_shutdown = end_on_shutdown
        self.headers = Headers(
            {
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )

    async def send(self, writer: Any) -> None:
        """Send the head, then every event, then the end of the body (``HttpServer`` calls this)."""
        try:
            await writer.write_head(self.status, self.headers)
            if writer.head_only:
                return
            async for chunk in self.chunks:
                await writer.write(chunk)
                if self.end_on_shutdown and writer.server.closing:
                    break  # (no farewell comment: some clients, httpx-sse among them, dispatch it)
            await writer.end()
        finally:
            aclose = getattr(self.chunks, "aclose", None)
            if aclose is not None:
                await aclose()


class _Slot:
    """One tick to come: ``data`` is set, then ``filled`` wakes every subscriber waiting on it."""

    __slots__ = ("data", "filled", "next")

    def __init__(self) -> None:
        self.filled = Event()
        self.data = b""
        self.next: _Slot | None = None


class Ticker:
    """A shared clock: every subscriber receives the same ``tick`` events, encoded once.

    Each tick is ``event: tick``, ``id: <seq>`` and JSON data ``{"seq", "time", "unix_ms",
    "subscribers"}``; ``seq`` counts from 1 for the life of the process.

    Args:
        interval: seconds between ticks.
    """

    def __init__(self, interval: float) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0, not {interval}")
        self.interval = interval
        self.seq = 0
        self.subscribers = 0
        self._pending = _Slot()
        self._running = False

    async def subscribe(self, max_ticks: int | None = None) -> AsyncGenerator[bytes, None]:
        """The encoded ticks from the next one on (``max_ticks`` of them, or until closed)."""
        self.subscribers += 1
        try:
            if not self._running:
                self._running = True
                await spawn(self._run())
            slot = self._pending
            sent = 0
            while max_ticks is None or sent < max_ticks:
                await slot.filled.wait()
                yield slot.data
                sent += 1
                next_slot = slot.next
                if next_slot is None:  # cannot happen: the clock links a slot before filling it
                    return
                slot = next_slot
        finally:
            self.subscribers -= 1

    async def _run(self) -> None:
        started = monotonic()
        ticks = 0
        try:
            while self.subscribers > 0:
                ticks += 1
                delay = started + ticks * self.interval - monotonic()
                if delay > 0:
                    await sleep(delay)
                else:
                    started = monotonic()  # we fell behind (a long stall): start a fresh schedule
                    ticks = 0
                await self._tick()
        finally:
            self._running = False

    async def _tick(self) -> None:
        self.seq += 1
        now = time()
        data = {
            "seq": self.seq,
            "time": datetime.fromtimestamp(now, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "unix_ms": int(now * 1000),
            "subscribers": self.subscribers,
        }
        slot = self._pending
        slot.next = self._pending = _Slot()
        slot.data = ServerSentEvent(data, event="tick", id=str(self.seq)).encode()
        await slot.filled.set()
