"""What both ceiling apps send: a tick every ``TICK_INTERVAL`` s, a heartbeat after 15 s of silence.

Ticks are aligned on the wall clock (``id`` = ``floor(time / TICK_INTERVAL)``), so every server
process (and both systems) sends the same ids at the same moments, and a client knows which ids it
should have received between two instants. ``data`` carries the send time for the delivery latency.
"""

from __future__ import annotations

import math
import resource
import sys
import time

#: Seconds between ticks.
TICK_INTERVAL = 5.0
#: Seconds of silence before a heartbeat comment (the project's DEFAULT_PING_INTERVAL).
HEARTBEAT_INTERVAL = 15.0
#: Connections one server process accepts at most (the fd limit is the real bound).
MAX_CONNECTIONS = 50_000


def tick_id(now: float) -> int:
    """The id of the tick due at or before ``now``."""
    return math.floor(now / TICK_INTERVAL + 1e-9)


def next_tick_at(now: float) -> float:
    """The wall-clock time of the next tick after ``now``."""
    return (tick_id(now) + 1) * TICK_INTERVAL


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
