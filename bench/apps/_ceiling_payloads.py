"""What both ceiling apps send: a tick every ``TICK_INTERVAL`` s, a heartbeat after 15 s of silence.

Tick ``k`` of every server process is sent at ``k * TICK_INTERVAL + offset`` on the wall clock,
where the offset is the process's phase (:func:`phase_offset`): with ``"staggered"`` (the
default) worker ``i`` of ``n`` ticks ``i * TICK_INTERVAL / n`` s into each interval, as
independent processes do in a real deployment (they share no clock); with ``"aligned"`` every
worker ticks at the same instant (the worst case: on 2 cores, six workers fanning out to ~17,000
streams each at once). Either way ids stay comparable across processes and systems, and a
client knows which ids it should have received between two instants. ``data`` carries the send
time for the delivery latency.
"""

from __future__ import annotations

import math
import resource
import sys
import time

#: Seconds between ticks (every function takes another ``interval``: the tests' short runs).
TICK_INTERVAL = 5.0
#: Seconds of silence before a heartbeat comment (the project's DEFAULT_PING_INTERVAL).
HEARTBEAT_INTERVAL = 15.0
#: Connections one server process accepts at most (the fd limit is the real bound).
MAX_CONNECTIONS = 50_000
#: How the server processes' ticks are placed in the interval (see the module docstring).
PHASES = ("staggered", "aligned")


def phase_offset(
    number: int, workers: int, phase: str = "staggered", interval: float = TICK_INTERVAL
) -> float:
    """Seconds into each interval at which worker ``number`` of ``workers`` sends its tick.

    >>> [phase_offset(n, 4) for n in range(4)]
    [0.0, 1.25, 2.5, 3.75]
    >>> phase_offset(3, 4, "aligned")
    0.0
    """
    if phase not in PHASES:
        raise ValueError(f"phase must be one of {PHASES}, not {phase!r}")
    return number * interval / workers if phase == "staggered" else 0.0


def largest_offset(workers: int, phase: str = "staggered", interval: float = TICK_INTERVAL) -> float:
    """The latest phase among ``workers`` processes: every process has sent tick ``k`` by
    ``tick_time(k) + largest_offset(...)``.

    >>> largest_offset(6), largest_offset(6, "aligned"), largest_offset(1)
    (4.166666666666667, 0.0, 0.0)
    """
    return phase_offset(workers - 1, workers, phase, interval)


def tick_id(now: float, offset: float = 0.0, interval: float = TICK_INTERVAL) -> int:
    """The id of the tick due at or before ``now`` for a process ticking at ``offset``.

    >>> tick_id(10.0), tick_id(9.99), tick_id(11.0, offset=1.25), tick_id(11.5, offset=1.25)
    (2, 1, 1, 2)
    """
    return math.floor((now - offset) / interval + 1e-9)


def tick_time(seq: int, offset: float = 0.0, interval: float = TICK_INTERVAL) -> float:
    """The wall-clock time at which a process ticking at ``offset`` sends tick ``seq``.

    >>> tick_time(2), tick_time(2, offset=1.25)
    (10.0, 11.25)
    """
    return seq * interval + offset


def encode_tick(seq: int, sent: float) -> bytes:
    """One tick event: ``id: <seq>`` and ``data: {"t": <send time>}``."""
    return b'id: %d\ndata: {"t": %.6f}\n\n' % (seq, sent)


def raise_fd_limit(needed: int) -> int:
    """Raise the soft open-files limit to the hard one; exit with a clear error if it is below ``needed``."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        sys.exit(
            f"the hard open-files limit is {hard}, below the {needed} this process needs; "
            f"raise it (ulimit -Hn, /etc/security/limits.conf) or use more processes"
        )
    if soft < hard or soft == resource.RLIM_INFINITY:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return int(resource.getrlimit(resource.RLIMIT_NOFILE)[0])


def wall_clock() -> float:
    """``time.time()`` (the clock both sides of the latency measurement share)."""
    return time.time()


def following_tick(seq: int, now: float, offset: float = 0.0, interval: float = TICK_INTERVAL) -> int:
    """The id to send after tick ``seq``, sent until ``now``: ``seq + 1``, or later when the
    process fell a whole interval behind (the ids it missed count as lost, as they are).

    >>> following_tick(2, 10.5), following_tick(2, 17.0)
    (3, 4)
    """
    return max(seq + 1, tick_id(now, offset, interval) + 1)
