"""The ceiling app on ``flowno_io``: ``GET /ticks``, one shared tick :class:`~flowno_io.Topic`.

Every stream is an :class:`~flowno_io.EventSourceResponse` over a subscription (heartbeat after
15 s of silence); one task per process publishes a tick every 5 s, encoded once for every
subscriber. Run by ``bench/ceiling.py`` as
``python bench/apps/flowno_io_ceiling_app.py --port N --workers W``; SIGTERM stops it.
"""

from __future__ import annotations

import argparse
from time import thread_time

from _ceiling_payloads import (
    HEARTBEAT_INTERVAL,
    MAX_CONNECTIONS,
    encode_tick,
    next_tick_at,
    raise_fd_limit,
    tick_id,
    wall_clock,
)
from flowno import spawn

from flowno_io import EventSourceResponse, HttpServer, Request, Response, Topic, run, sleep

BACKLOG = 4096


def build_server(host: str, port: int) -> HttpServer:
    """The server with ``/ticks`` and ``/health`` (subscribers of this process)."""
    server = HttpServer(host, port, max_connections=MAX_CONNECTIONS, backlog=BACKLOG)
    topic: Topic[bytes] = Topic(max_buffer=16)
    running = False
    publish_ms: list[float] = []  # how long each fan-out took (the last subscriber's wait)
    publish_cpu_ms: list[float] = []  # and the CPU it took (the rest of the wall time: other processes)

    async def tick_forever() -> None:
        while True:
            due = next_tick_at(wall_clock())
            await sleep(max(0.0, due - wall_clock()))
            now = wall_clock()
            cpu = thread_time()
            topic.publish(encode_tick(tick_id(now), now))
            publish_ms.append(round((wall_clock() - now) * 1000, 1))
            publish_cpu_ms.append(round((thread_time() - cpu) * 1000, 1))
            del publish_ms[:-8], publish_cpu_ms[:-8]

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
            {"subscribers": topic.subscribers, "publish_ms": publish_ms, "publish_cpu_ms": publish_cpu_ms}
        )

    return server


def main() -> None:
    """Serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    raise_fd_limit(1024)
    factory = lambda: build_server(args.host, args.port)  # noqa: E731
    raise SystemExit(run(factory, workers=args.workers, host=args.host, port=args.port))


if __name__ == "__main__":
    main()
