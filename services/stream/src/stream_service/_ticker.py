"""``Ticker``: one clock for every ``/ticker`` stream, fanned out with :class:`flowno_io.Topic`.

Each tick is encoded once (``event: tick``, ``id: <seq>``, JSON data) and published to the topic;
every subscriber's :class:`~flowno_io.Subscription` hands the same bytes to its
``EventSourceResponse``. The clock task runs only while someone subscribes, on a fixed schedule
(``start + n * interval``), so ticks do not drift with load.

Example:
    >>> from flowno import EventLoop
    >>> ticker = Ticker(0.01)
    >>> async def main():
    ...     return [tick.split(b"\\n")[:2] async for tick in ticker.ticks(max_ticks=2)]
    >>> EventLoop().run_until_complete(main(), join=True)
    [[b'event: tick', b'id: 1'], [b'event: tick', b'id: 2']]
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from datetime import UTC, datetime
from time import monotonic, time

from flowno import spawn

from flowno_io import ServerSentEvent, Subscription, Topic, sleep

__all__ = ["TICKER_BUFFER", "Ticker"]

#: Ticks a subscriber may fall behind before it skips the oldest (``Topic``'s ``drop_oldest``).
TICKER_BUFFER = 16


class Ticker:
    """A shared clock: every subscriber receives the same ``tick`` events, encoded once.

    Each tick's data is ``{"seq", "time", "unix_ms", "subscribers"}``; ``seq`` counts from 1 for
    the life of the process and is also the event ``id``.

    Args:
        interval: seconds between ticks.

    Raises:
        ValueError: ``interval`` is not positive.
    """

    def __init__(self, interval: float) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0, not {interval}")
        self.interval = interval
        self.seq = 0
        self.topic: Topic[bytes] = Topic(max_buffer=TICKER_BUFFER, overflow="drop_oldest")
        self._running = False

    @property
    def subscribers(self) -> int:
        """Streams subscribed right now."""
        return self.topic.subscribers

    async def subscribe(self) -> Subscription[bytes]:
        """A subscription to the encoded ticks from the next one on (the clock starts if stopped).

        Given as it is to an :class:`~flowno_io.EventSourceResponse`, the stream waits between
        ticks without a task and each tick is sent straight from the fan-out; close it to leave.
        """
        subscription = self.topic.subscribe()
        if not self._running:
            self._running = True
            await spawn(self._run())
        return subscription

    async def ticks(self, max_ticks: int | None = None) -> AsyncGenerator[bytes, None]:
        """The encoded ticks from the next one on: ``max_ticks`` of them, or until closed."""
        subscription = await self.subscribe()
        try:
            sent = 0
            async for tick in subscription:
                yield tick
                sent += 1
                if max_ticks is not None and sent >= max_ticks:
                    return
        finally:
            subscription.close()

    async def _run(self) -> None:
        started = monotonic()
        ticks = 0
        try:
            while self.topic.subscribers > 0:
                ticks += 1
                delay = started + ticks * self.interval - monotonic()
                if delay > 0:
                    await sleep(delay)
                else:  # fell behind (a long stall): start a fresh schedule rather than burst
                    started = monotonic()
                    ticks = 0
                self.publish_tick()
        finally:
            self._running = False

    def publish_tick(self) -> int:
        """Publish the next tick now; how many subscribers got it."""
        self.seq += 1
        now = time()
        data = {
            "seq": self.seq,
            "time": datetime.fromtimestamp(now, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "unix_ms": int(now * 1000),
            "subscribers": self.topic.subscribers,
        }
        return self.topic.publish(ServerSentEvent(data, event="tick", id=str(self.seq)).encode())
