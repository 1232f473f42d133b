"""The ceiling app on ``flowno_io``: ``GET /ticks``, one shared tick :class:`~flowno_io.Topic`.

Every stream is an :class:`~flowno_io.EventSourceResponse` over a subscription (heartbeat after
15 s of silence); one task per process publishes a tick every 5 s, encoded once for every
subscriber, at its own phase of the interval (``--phase staggered``: worker ``i`` of ``n``, from
:func:`flowno_io.worker_slot`, ``i * 5 / n`` s in) or all at once (``--phase aligned``). Run by
``bench/ceiling.py`` as ``python bench/apps/flowno_io_ceiling_app.py --port N --workers W
[--phase P]``; SIGTERM stops it.
"""

from __future__ import annotations

import argparse
from time import thread_time

from _ceiling_payloads import (
    HEARTBEAT_INTERVAL,
    MAX_CONNECTIONS,
    PHASES,
    TICK_INTERVAL,
    encode_tick,
    following_tick,
    phase_offset,
    raise_fd_limit,
    tick_id,
    tick_time,
    wall_clock,
)
from flowno import spawn

from flowno_io import EventSourceResponse, HttpServer, Request, Response, Topic, run, sleep, worker_slot

BACKLOG = 4096


def build_server(
    host: str, port: int, phase: str = "staggered", interval: float = TICK_INTERVAL
) -> HttpServer:
    """The server with ``/ticks`` and ``/health`` (this process's slot, phase, subscribers and
    last fan-outs); made in each worker, which ticks at its slot's phase."""
    server = HttpServer(host, port, max_connections=MAX_CONNECTIONS, backlog=BACKLOG)
    slot = worker_slot()
    offset = phase_offset(slot.number, slot.workers, phase, interval)
    topic: Topic[bytes] = Topic(max_buffer=16)
    running = False
    published: list[int] = []  # the ids of the last fan-outs
    publish_ms: list[float] = []  # how long each fan-out took (the last subscriber's wait)
    publish_cpu_ms: list[float] = []  # and the CPU it took (the rest of the wall time: other processes)

    async def tick_forever() -> None:
        seq = tick_id(wall_clock(), offset, interval) + 1
        while True:
            await sleep(max(0.0, tick_time(seq, offset, interval) - wall_clock()))
            now = wall_clock()
            cpu = thread_time()
            topic.publish(encode_tick(seq, now))
            published.append(seq)
            publish_ms.append(round((wall_clock() - now) * 1000, 1))
            publish_cpu_ms.append(round((thread_time() - cpu) * 1000, 1))
            del published[:-8], publish_ms[:-8], publish_cpu_ms[:-8]
            seq = following_tick(seq, wall_clock(), offset, interval)

    @server.route("/ticks", methods=["GET"])
    async def ticks(request: Request) -> EventSourceResponse:
        nonlocal running
        if not running:
            running = True
            await spawn(tick_forever())
        return EventSourceResponse(topic.subscribe(), ping_interval=HEARTBEAT_INTERVAL)

    @server.route("/health", methods=["GET"])
    def health(request: Request) -> Response:
        return Response.json(
            {
                "slot": list(slot),
                "offset": offset,
                "subscribers": topic.subscribers,
                "published": published,
                "publish_ms": publish_ms,
                "publish_cpu_ms": publish_cpu_ms,
            }
        )

    return server


def main() -> None:
    """Serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--phase", choices=PHASES, default="staggered")
    parser.add_argument("--tick-interval", type=float, default=TICK_INTERVAL)
    args = parser.parse_args()
    raise_fd_limit(1024)
    factory = lambda: build_server(args.host, args.port, args.phase, args.tick_interval)  # noqa: E731
    raise SystemExit(run(factory, workers=args.workers, host=args.host, port=args.port))


if __name__ == "__main__":
    main()
