"""Timers on the flowno event loop, built only from its public ``sleep`` and ``spawn``.

Flowno 0.1.19 cannot wake a task early: a task parked on a socket wakes only when the socket is
ready, and a sleeping task cannot be cancelled. So a timeout here does not wake the waiter
directly. A :class:`Timer` runs a plain callback when it expires, and the callback makes the thing
the waiter sleeps on ready: ``socket.shutdown()`` for a socket wait (see ``io/socket_stream.py``), or
``Event.set()`` for an event wait (return the ``Event`` from the callback).

One :class:`Clock` task per event loop keeps a heap of armed timers. It ticks at most every
``TICK`` seconds (so a timer fires up to ``TICK`` late), and exits after ``LINGER`` seconds with no
armed timer, so ``EventLoop.run_until_complete`` can finish. Timers are re-armed in place: moving a
deadline later costs one attribute write, and the heap holds at most a couple of entries per timer,
so a keep-alive connection that re-arms on every request creates no garbage.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import weakref
from collections.abc import Callable
from time import monotonic

from flowno import Event, spawn

from .flowno_compat import running_loop, sleep

__all__ = ["COMPACT_SLACK", "LINGER", "TICK", "Clock", "StreamDeadline", "Timer", "get_clock"]

logger = logging.getLogger("flowno_io")

#: Longest the clock task sleeps between checks; timers fire up to this late.
TICK = 0.05
#: Heap entries allowed beyond twice the armed timers before the heap drops its dead entries, so
#: timers disarmed long before their deadline (a connection closed after one request) do not pile
#: up — nor keep what their callbacks reference alive — until that deadline.
COMPACT_SLACK = 1024
#: How long the clock task stays alive with nothing armed before it exits.
LINGER = 0.25


class Timer:
    """A re-armable timer owned by a :class:`Clock`.

    Example:
        >>> from flowno import EventLoop, sleep
        >>> fired = []
        >>> async def main():
        ...     timer = get_clock().timer(lambda: fired.append("boom"))
        ...     await timer.arm(0.01)
        ...     await sleep(0.2)
        >>> EventLoop().run_until_complete(main())
        >>> fired
        ['boom']
    """

    __slots__ = ("__weakref__", "_callback", "_clock", "_entry_seq", "_entry_time", "deadline")

    def __init__(self, clock: Clock, callback: Callable[[], object]) -> None:
        self._clock = clock
        self._callback = callback
        # The one live heap entry of this timer (older entries are stale and skipped).
        self._entry_time: float | None = None
        self._entry_seq = -1
        #: Monotonic time when the timer fires, or ``None`` while disarmed.
        self.deadline: float | None = None

    async def arm(self, delay: float) -> None:
        """Fire ``delay`` seconds from now (re-arming replaces the previous deadline)."""
        await self.arm_at(monotonic() + delay)

    async def arm_at(self, deadline: float) -> None:
        """Fire at the monotonic time ``deadline``."""
        if not self.set_deadline(deadline):
            await self._clock._start()

    def set_deadline(self, deadline: float) -> bool:
        """Arm without waiting; False when the clock task must still be started (``arm_at`` does).

        The hot path of socket waits: no coroutine is created while the clock runs.
        """
        clock = self._clock
        if self.deadline is None:
            clock._armed += 1
        self.deadline = deadline
        if self._entry_time is None or deadline < self._entry_time:
            # A later deadline reuses the queued entry (it is re-queued when it pops); an earlier one
            # needs a new entry, which makes the old one stale.
            clock._push(self, deadline)
        return clock._running

    def disarm(self) -> None:
        """Stop the timer if armed (its heap entry is dropped lazily, or by a compaction)."""
        if self.deadline is not None:
            self.deadline = None
            clock = self._clock
            clock._armed -= 1
            if len(clock._heap) > 2 * clock._armed + COMPACT_SLACK:
                clock._compact()


class Clock:
    """The per-loop timer service; get it with :func:`get_clock`."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Timer]] = []
        self._seq = itertools.count()
        self._armed = 0
        self._running = False

    def _push(self, timer: Timer, deadline: float) -> None:
        seq = next(self._seq)
        timer._entry_time = deadline
        timer._entry_seq = seq
        heapq.heappush(self._heap, (deadline, seq, timer))

    def _compact(self) -> None:
        """Drop stale and disarmed entries (amortized O(1) per disarm)."""
        live = []
        for entry in self._heap:
            timer = entry[2]
            if entry[1] != timer._entry_seq:
                continue
            if timer.deadline is None:
                timer._entry_time = None
                continue
            live.append(entry)
        heapq.heapify(live)
        self._heap[:] = live  # in place: _fire_due may be iterating over this very list

    def timer(self, callback: Callable[[], object]) -> Timer:
        """A new, disarmed timer that runs ``callback()`` when it expires.

        If the callback returns a flowno ``Event``, the clock sets it (waking its waiters).
        """
        return Timer(self, callback)

    @property
    def armed(self) -> int:
        """How many timers are armed now."""
        return self._armed

    async def _start(self) -> None:
        self._running = True
        await spawn(self._run())

    def _fire_due(self, now: float) -> list[Event]:
        heap = self._heap
        events: list[Event] = []
        while heap and heap[0][0] <= now:
            _, seq, timer = heapq.heappop(heap)
            if seq != timer._entry_seq:
                continue  # stale entry
            timer._entry_time = None
            deadline = timer.deadline
            if deadline is None:
                continue
            if deadline > now:
                # Re-armed later since it was queued: queue it again at its new deadline.
                self._push(timer, deadline)
            else:
                timer.deadline = None
                self._armed -= 1
                try:
                    result = timer._callback()
                except Exception:
                    logger.exception("timer callback failed")
                    continue
                if isinstance(result, Event):
                    events.append(result)
        return events

    async def _run(self) -> None:
        idle_since: float | None = None
        try:
            while True:
                now = monotonic()
                for event in self._fire_due(now):
                    await event.set()
                if self._armed == 0:
                    if idle_since is None:
                        idle_since = now
                    elif now - idle_since >= LINGER:
                        return
                else:
                    idle_since = None
                delay = TICK
                if self._heap:
                    delay = min(TICK, max(0.0, self._heap[0][0] - now))
                await sleep(delay)
        finally:
            self._running = False
            if self._armed == 0:
                for _, _, timer in self._heap:
                    timer._entry_time = None
                self._heap.clear()


_clocks: weakref.WeakKeyDictionary[object, Clock] = weakref.WeakKeyDictionary()


def get_clock() -> Clock:
    """The :class:`Clock` of the running flowno event loop (one per loop).

    Raises:
        RuntimeError: when called outside a running flowno ``EventLoop``.
    """
    loop = running_loop("flowno_io's clock")
    clock = _clocks.get(loop)
    if clock is None:
        clock = _clocks[loop] = Clock()
    return clock


class StreamDeadline:
    """The deadline of a stream's waits (a mixin): when it passes, the stream shuts itself down.

    A task parked on the stream then wakes up, sees :attr:`timed_out`, and raises its timeout; the
    stream is dead after that (as in httpcore: a timed-out HTTP/1.1 connection cannot be reused).
    The class using it calls ``StreamDeadline.__init__`` and has a ``shutdown()``.
    """

    __slots__ = ("_expired", "_timer")

    def __init__(self) -> None:
        self._timer: Timer | None = None
        self._expired = False

    #: Provided by the stream: shut both directions down (a parked task wakes up).
    shutdown: Callable[[], None]

    def _on_deadline(self) -> None:
        self._expired = True
        self.shutdown()

    async def _arm(self, deadline: float) -> None:
        timer = self._timer
        if timer is None:
            timer = self._timer = get_clock().timer(self._on_deadline)
        if not timer.set_deadline(deadline):
            await timer.arm_at(deadline)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.disarm()

    @property
    def timed_out(self) -> bool:
        """True once a deadline expired on this stream (it is then unusable)."""
        return self._expired
