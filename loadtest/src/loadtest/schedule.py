"""Open-loop arrival schedule: when each request *should* start, independent of responses.

Request ``i`` of a phase is due at ``start + i / rate``. Workers claim due requests in order and
measure each one's latency from its due time, not from when it actually went out, so time spent
waiting for a free worker (because earlier responses were slow) counts against the server, as it
would for real users arriving at that rate. This is the coordinated-omission correction of
HdrHistogram and wrk2.

A claim is refused once the send window has closed (``start + duration``, or the last due time
plus one interval when only a count bounds the phase): requests still unclaimed then are
*unsent*, and :meth:`ArrivalSchedule.behind` tells how far behind the schedule the phase was when
its time was up.

Example:
    >>> schedule = ArrivalSchedule(rate=10, start=100.0, duration=1.0)
    >>> schedule.planned, schedule.window_end
    (10, 101.0)
    >>> schedule.claim(now=100.0), schedule.due(1)
    (0, 100.1)
    >>> [schedule.claim(now=100.95) for _ in range(3)]
    [1, 2, 3]
    >>> schedule.claim(now=101.0) is None          # time is up: 6 requests never went out
    True
    >>> schedule.unsent, round(schedule.behind(), 3)
    (6, 0.6)
"""

from __future__ import annotations

import math

__all__ = ["ArrivalSchedule", "planned_requests"]


def planned_requests(rate: float, duration: float | None, count: int | None) -> int:
    """How many arrivals a phase plans: due times ``i / rate`` before ``duration``, at most ``count``.

    Raises:
        ValueError: a non-positive rate, or neither a duration nor a count.

    Example:
        >>> planned_requests(2.5, 1.0, None), planned_requests(100, 10, 50), planned_requests(3, None, 7)
        (3, 50, 7)
    """
    if not rate > 0:
        raise ValueError("rate must be positive")
    if duration is None and count is None:
        raise ValueError("an open-loop phase needs a duration or a count")
    planned = math.inf
    if duration is not None:
        # i / rate < duration  <=>  i < rate * duration (rounded so 9.9999999 does not become 10)
        planned = math.ceil(round(rate * duration, 9))
    if count is not None:
        planned = min(planned, count)
    return int(planned)


class ArrivalSchedule:
    """Due times of an open-loop phase and the claims made on them.

    Args:
        rate: arrivals per second.
        start: the phase start (any monotonic clock, in seconds).
        duration: seconds the send window stays open (``None``: until the last due time plus one
            interval).
        count: most arrivals (``None``: as many as fit in ``duration``).
    """

    __slots__ = ("claimed", "interval", "planned", "rate", "start", "window_end")

    def __init__(
        self, rate: float, start: float, duration: float | None = None, count: int | None = None
    ) -> None:
        self.rate = rate
        self.start = start
        self.interval = 1.0 / rate
        #: Arrivals the phase plans.
        self.planned = planned_requests(rate, duration, count)
        #: Arrivals claimed by a worker so far (the next one to claim is this index).
        self.claimed = 0
        span = duration if duration is not None else self.planned * self.interval
        #: No claim succeeds at or after this time.
        self.window_end = start + span

    def due(self, index: int) -> float:
        """When arrival ``index`` is due."""
        return self.start + index * self.interval

    def claim(self, now: float) -> int | None:
        """Claim the next arrival; ``None`` when all are claimed or the window has closed.

        The caller waits until :meth:`due` of the index (if that is still ahead), then sends.
        """
        if self.claimed >= self.planned or now >= self.window_end:
            return None
        index = self.claimed
        self.claimed = index + 1
        return index

    @property
    def unsent(self) -> int:
        """Planned arrivals nobody claimed (the generator fell behind and time ran out)."""
        return self.planned - self.claimed

    def behind(self) -> float:
        """Seconds behind schedule when the window closed: window end minus the first unsent due time."""
        if self.unsent == 0:
            return 0.0
        return max(0.0, self.window_end - self.due(self.claimed))
