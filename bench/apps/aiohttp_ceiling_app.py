"""The ceiling app on aiohttp: ``GET /ticks``, the same ticks and heartbeats as the flowno_io one.

One asyncio task per process publishes a tick every 5 s (encoded once) to every stream's queue;
each stream is a handler that writes what its queue gets, or a heartbeat after 15 s of silence
(what aiohttp-sse does). ``--workers W`` forks W processes on one ``SO_REUSEPORT`` port; worker
``i`` ticks ``i * 5 / W`` s into each interval (``--phase staggered``, as the flowno_io app's
workers do) or all at once (``--phase aligned``). ``/health`` says the process's slot and
subscribers, not a fan-out time: the ticks are written later, by each stream's own task.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket

from _ceiling_payloads import (
    HEARTBEAT_INTERVAL,
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
from aiohttp import web

HEARTBEAT = b": ping\n\n"


class Ticks:
    """The subscribers' queues and the tick task."""

    def __init__(self, offset: float, interval: float) -> None:
        self.queues: set[asyncio.Queue[bytes]] = set()
        self.offset = offset
        self.interval = interval

    async def run(self) -> None:
        seq = tick_id(wall_clock(), self.offset, self.interval) + 1
        while True:
            await asyncio.sleep(max(0.0, tick_time(seq, self.offset, self.interval) - wall_clock()))
            now = wall_clock()
            data = encode_tick(seq, now)
            for queue in self.queues:
                if queue.full():  # a stuck stream skips its oldest tick (Topic's drop_oldest)
                    queue.get_nowait()
                queue.put_nowait(data)
            seq = following_tick(seq, wall_clock(), self.offset, self.interval)


def make_app(ticks: Ticks, slot: tuple[int, int]) -> web.Application:
    async def stream(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        queue: asyncio.Queue[bytes] = asyncio.Queue(maxsize=16)
        ticks.queues.add(queue)
        try:
            while True:
                try:
                    data = await asyncio.wait_for(queue.get(), HEARTBEAT_INTERVAL)
                except TimeoutError:
                    data = HEARTBEAT
                await response.write(data)
        finally:
            ticks.queues.discard(queue)

    async def health(request: web.Request) -> web.Response:
        return web.json_response(
            {"slot": list(slot), "offset": ticks.offset, "subscribers": len(ticks.queues)}
        )

    app = web.Application()
    app.router.add_get("/ticks", stream)
    app.router.add_get("/health", health)
    return app


def serve(sock: socket.socket, number: int, workers: int, phase: str, interval: float) -> None:
    """Serve ``sock`` as worker ``number`` of ``workers`` until SIGTERM/SIGINT."""

    async def main() -> None:
        ticks = Ticks(phase_offset(number, workers, phase, interval), interval)
        app = make_app(ticks, (number, workers))
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        site = web.SockSite(runner, sock, backlog=4096)
        await site.start()
        task = asyncio.create_task(ticks.run())
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        task.cancel()
        await runner.cleanup()

    asyncio.run(main())


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
    children = []
    for number in range(args.workers):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((args.host, args.port))
        sock.listen(4096)
        if args.workers == 1:
            serve(sock, 0, 1, args.phase, args.tick_interval)
            return
        pid = os.fork()
        if pid == 0:
            serve(sock, number, args.workers, args.phase, args.tick_interval)
            os._exit(0)
        sock.close()
        children.append(pid)

    def forward(signum: int, frame: object) -> None:
        for child in children:
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for child in children:
        os.waitpid(child, 0)


if __name__ == "__main__":
    main()
