"""``Topic``: one producer, many subscribers, each with a bounded buffer (fan-out for SSE).

``publish()`` never waits: it appends the item to every subscriber's buffer and wakes the ones
that wait, with no loop round trip per subscriber. A subscriber that falls ``max_buffer`` items
behind is handled by its overflow policy instead of growing memory:

* ``"drop_oldest"``: the oldest buffered item is dropped (the subscriber skips ahead;
  ``subscription.dropped`` counts the losses);
* ``"disconnect"``: the subscription ends (``subscription.overflowed`` is True), e.g. so that an
  SSE client reconnects and resumes from its ``Last-Event-ID``.

Call everything on the event loop's thread.

Example:
    >>> from flowno import EventLoop, sleep, spawn
    >>> topic = Topic(max_buffer=2)
    >>> async def reader(subscription):
    ...     return [item async for item in subscription]
    >>> async def main():
    ...     fast = await spawn(reader(topic.subscribe()))
    ...     slow = topic.subscribe()  # never read until the end: keeps only the 2 newest
    ...     await sleep(0)
    ...     for n in range(5):
    ...         topic.publish(n)
    ...         await sleep(0)
    ...     topic.close()
    ...     return await fast.join(), [item async for item in slow], slow.dropped
    >>> EventLoop().run_until_complete(main(), join=True)
    ([0, 1, 2, 3, 4], [3, 4], 3)
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import Generic, Literal, Protocol, TypeVar

from ..io.wakeup import Wakeup

__all__ = ["DEFAULT_SUBSCRIBER_BUFFER", "OverflowPolicy", "Subscription", "Topic"]

T = TypeVar("T")

OverflowPolicy = Literal["drop_oldest", "disconnect"]

#: Items a subscriber may fall behind before its overflow policy applies. 64 events of a few
#: hundred bytes each is tens of KiB per subscriber: 1,000 SSE clients stay within a few tens of MiB.
DEFAULT_SUBSCRIBER_BUFFER = 64

_POLICIES = ("drop_oldest", "disconnect")


class CloseListener(Protocol):
    """What a subscription tells when it closes (a streaming response running without a task)."""

    def on_body_closed(self) -> None: ...


class Subscription(Generic[T]):
    """One subscriber's view of a :class:`Topic`: an async iterator of the items published.

    Iteration ends when the topic is closed (after the buffered items), when the subscription is
    closed, or when the ``"disconnect"`` policy dropped it. Use it as a context manager (``with``
    or ``async with``) or close it, so the topic forgets it.

    Attributes:
        dropped: items lost to the ``"drop_oldest"`` policy.
        overflowed: True once the ``"disconnect"`` policy ended the subscription.
    """

    __slots__ = (
        "_buffer",
        "_closed",
        "_direct",
        "_on_close",
        "_topic",
        "_waiting",
        "_wakeup",
        "dropped",
        "max_buffer",
        "overflow",
        "overflowed",
    )

    def __init__(self, topic: Topic[T], max_buffer: int, overflow: OverflowPolicy) -> None:
        self._topic: Topic[T] | None = topic
        # Made at the first item that must wait here: a deque costs ~760 bytes even empty, and a
        # subscriber served by direct delivery (an SSE stream) rarely buffers anything.
        self._buffer: deque[T] | None = None
        self._wakeup = Wakeup()
        self._closed = False
        self.max_buffer = max_buffer
        self.overflow = overflow
        self.dropped = 0
        self.overflowed = False
        self._waiting = False
        # Set by a streaming response that iterates this subscription: called with an item while
        # the reader waits and nothing is buffered; True when it delivered the item itself.
        self._direct: Callable[[T], bool] | None = None
        # Set by a streaming response that runs without a task while it waits (see streaming.py):
        # told once when the subscription closes, as nobody waits on the wakeup flag then (the
        # stream itself: no bound method per subscriber).
        self._on_close: CloseListener | None = None

    def _offer(self, item: T) -> None:
        if self._waiting and not self._buffer and self._direct is not None and self._direct(item):
            return
        self._enqueue(item)

    def _enqueue(self, item: T) -> None:
        """Buffer ``item`` (its overflow policy applies) and wake the reader."""
        buffer = self._buffer
        if buffer is None:
            buffer = self._buffer = deque()
        elif len(buffer) >= self.max_buffer:
            if self.overflow == "disconnect":
                self.overflowed = True
                self._buffer = None
                self.close()
                return
            buffer.popleft()
            self.dropped += 1
        buffer.append(item)
        self._wakeup.set()

    def push(self, item: T) -> None:
        """Give ``item`` to this subscriber alone, as if published to it (a greeting before the
        topic's items, a replay of what a reconnecting client missed); the overflow policy
        applies. Nothing happens once the subscription is closed.

        The subscription stays a bare :class:`Subscription`, so an
        :class:`~flowno_io.EventSourceResponse` over it still waits without a task.
        """
        if not self._closed:
            self._offer(item)

    @property
    def closed(self) -> bool:
        """True once closed (by :meth:`close`, the topic's close, or the overflow policy)."""
        return self._closed

    def __len__(self) -> int:
        """Items buffered and not yet taken."""
        return len(self._buffer) if self._buffer is not None else 0

    def get_nowait(self) -> T | None:
        """The next buffered item, or ``None`` when none is buffered."""
        buffer = self._buffer
        return buffer.popleft() if buffer else None

    def __aiter__(self) -> Subscription[T]:
        return self

    async def __anext__(self) -> T:
        buffer = self._buffer
        while not buffer:
            if self._closed:
                raise StopAsyncIteration
            self._waiting = True
            try:
                await self._wakeup.wait()
            finally:
                self._waiting = False
            buffer = self._buffer
        return buffer.popleft()

    def close(self) -> None:
        """Leave the topic; a waiting iteration ends (after the items already buffered)."""
        if self._topic is not None:
            self._topic._subscriptions.discard(self)
            self._topic = None
        self._closed = True
        self._wakeup.set()
        listener = self._on_close
        if listener is not None:
            self._on_close = None
            listener.on_body_closed()

    async def aclose(self) -> None:
        """Async form of :meth:`close` (async iterators are closed with ``aclose``)."""
        self.close()

    def __enter__(self) -> Subscription[T]:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Subscription[T]:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class Topic(Generic[T]):
    """Fan-out of published items to every current subscriber.

    Args:
        max_buffer: default per-subscriber buffer, in items (at least 1).
        overflow: default policy for a subscriber whose buffer is full.

    Raises:
        ValueError: ``max_buffer < 1`` or an unknown policy.

    Example (Server-Sent Events to every client, encoded once):
        >>> from flowno_io import Topic
        >>> from flowno_io import EventSourceResponse, ServerSentEvent
        >>> news: Topic[bytes] = Topic(overflow="disconnect")
        >>> def subscribe(request):
        ...     return EventSourceResponse(news.subscribe())
        >>> news.publish(ServerSentEvent("hello", event="news").encode())  # no subscribers yet
        0
    """

    def __init__(
        self, *, max_buffer: int = DEFAULT_SUBSCRIBER_BUFFER, overflow: OverflowPolicy = "drop_oldest"
    ) -> None:
        _check(max_buffer, overflow)
        self.max_buffer = max_buffer
        self.overflow: OverflowPolicy = overflow
        self._subscriptions: set[Subscription[T]] = set()
        self._closed = False

    def subscribe(
        self, *, max_buffer: int | None = None, overflow: OverflowPolicy | None = None
    ) -> Subscription[T]:
        """A new subscription that receives every item published from now on.

        Args:
            max_buffer: this subscriber's buffer (default: the topic's).
            overflow: this subscriber's policy (default: the topic's).
        """
        max_buffer = self.max_buffer if max_buffer is None else max_buffer
        overflow = self.overflow if overflow is None else overflow
        _check(max_buffer, overflow)
        subscription = Subscription(self, max_buffer, overflow)
        if self._closed:
            subscription.close()
        else:
            self._subscriptions.add(subscription)
        return subscription

    def publish(self, item: T) -> int:
        """Give ``item`` to every subscriber, without waiting; returns how many got it.

        Raises:
            RuntimeError: the topic is closed.
        """
        if self._closed:
            raise RuntimeError("publish() on a closed Topic")
        subscriptions = list(self._subscriptions)
        got = len(subscriptions)
        # Subscription._offer inlined: at 19,000 subscribers a tick is one tight loop of sends.
        # Only _enqueue's "disconnect" policy loses an item, so only that path counts losses
        # (a second pass over every subscriber cost ~10 % of the loop's Python work).
        for subscription in subscriptions:
            direct = subscription._direct
            if direct is None or not subscription._waiting or subscription._buffer or not direct(item):
                subscription._enqueue(item)
                if subscription.overflowed:
                    got -= 1
        return got

    def close(self) -> None:
        """End the topic: subscribers get what they have buffered, then their iteration ends."""
        self._closed = True
        for subscription in list(self._subscriptions):
            subscription.close()

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed

    @property
    def subscribers(self) -> int:
        """Current subscribers."""
        return len(self._subscriptions)


def _check(max_buffer: int, overflow: str) -> None:
    if max_buffer < 1:
        raise ValueError(f"max_buffer must be at least 1, not {max_buffer}")
    if overflow not in _POLICIES:
        raise ValueError(f"overflow must be one of {_POLICIES}, not {overflow!r}")
