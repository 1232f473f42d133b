"""``Topic.publish`` to N waiting subscribers with direct delivery, run K times: for callgrind.

    python cg_publish.py N K

Each subscription waits (``_waiting``) with a direct-delivery callback, as an idle
``EventSourceResponse`` does; the callback is the C builtin ``len`` in place of the stream's
``send`` (its user-space wrapper costs the same whatever the library does around it), so the
instructions counted are the library's per-subscriber Python work. Instructions per subscriber
per publish = (count at K2 - count at K1) / ((K2 - K1) * N):

    for k in 2 12; do valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python bench/experiments/cg_publish.py 10000 $k 2>&1 | grep Collected; done
"""

from __future__ import annotations

import sys

from flowno_io import Topic

TICK = b'id: 1\ndata: {"t": 1700000000.123456}\n\n'


def main(subscribers: int, publishes: int) -> None:
    topic: Topic[bytes] = Topic()
    subscriptions = [topic.subscribe() for _ in range(subscribers)]
    for subscription in subscriptions:
        subscription._waiting = True
        subscription._direct = len
    for _ in range(publishes):
        assert topic.publish(TICK) == subscribers


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
