"""The ceiling app on aiohttp: ``GET /ticks``, the same ticks and heartbeats as the flowno_io one.

One asyncio task per process publishes a tick every 5 s (encoded once) to every stream's queue;
each stream is a handler that writes what its queue gets, or a heartbeat after 15 s of silence
(what aiohttp-sse does). ``--workers W`` forks W processes on one ``SO_REUSEPORT`` port.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket

from _ceiling_payloads import (
    HEARTBEAT_INTERVAL,
    encode_tick,
    next_tick_at,
    raise_fd_limit,
    tick_id,
    wall_clock,
)
from aiohttp import web

HEARTBEAT = b": ping\n\n"


class Ticks:
    """The subscribers' queues and the tick task."""

    def __init__(self) -> None:
        self.queues: set[asyncio.Queue[bytes]] = set()

    async def run(self) -> None:
        while True:
            due = next_tick_at(wall_clock())
            await asyncio.sleep(max(0.0, due - wall_clock()))
            now = wall_clock()
            data = encode_tick(tick_id(now), now)
            for queue in self.queues:
                if queue.full():  # a stuck stream skips its oldest tick (Topic's drop_oldest)
                    queue.get_nowait()
                queue.put_nowait(data)


def make_app(ticks: Ticks) -> web.Application:
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
        return web.json_response({"subscribers": len(ticks.queues)})

    app = web.Application()
    app.router.add_get("/ticks", stream)
    app.router.add_get("/health", health)
    return app


def serve(sock: socket.socket) -> None:
    async def main() -> None:
        ticks = Ticks()
        runner = web.AppRunner(make_app(ticks), access_log=None, handle_signals=False)
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
    args = parser.parse_args()
    raise_fd_limit(1024)
    children = []
    for _ in range(args.workers):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((args.host, args.port))
        sock.listen(4096)
        if args.workers == 1:
            serve(sock)
            return
        pid = os.fork()
        if pid == 0:
            serve(sock)
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
