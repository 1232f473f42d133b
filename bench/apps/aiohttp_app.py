"""The bench app on aiohttp (asyncio): ``GET /`` hello, ``POST /echo`` JSON, ``GET /sse?n=``.

The SSE route is aiohttp's own way to stream: a ``StreamResponse`` written one event at a time
(chunked, as aiohttp-sse does). ``--loop uvloop`` runs it on uvloop instead of the stock asyncio
loop (what many deployments do).
"""

from __future__ import annotations

import argparse
import asyncio

from _payloads import BACKLOG, DEFAULT_EVENTS, HELLO, KEEPALIVE_TIMEOUT, event_data
from aiohttp import web


async def hello(request: web.Request) -> web.Response:
    """The hello route."""
    return web.Response(text=HELLO)


async def echo(request: web.Request) -> web.Response:
    """Parse the JSON body and send it back."""
    return web.json_response(await request.json())


async def sse(request: web.Request) -> web.StreamResponse:
    """``n`` events, then the end of the stream."""
    count = int(request.query.get("n", DEFAULT_EVENTS))
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await response.prepare(request)
    for index in range(count):
        await response.write(f"data: {event_data(index)}\n\n".encode())
    await response.write_eof()
    return response


def main() -> None:
    """Serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args()
    loop: asyncio.AbstractEventLoop | None = None  # None: run_app makes a stock asyncio loop
    if args.loop == "uvloop":
        import uvloop

        loop = uvloop.new_event_loop()
    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_post("/echo", echo)
    app.router.add_get("/sse", sse)
    web.run_app(
        app,
        host=args.host,
        port=args.port,
        access_log=None,
        print=None,
        keepalive_timeout=KEEPALIVE_TIMEOUT,
        backlog=BACKLOG,
        shutdown_timeout=1.0,
        loop=loop,
    )


if __name__ == "__main__":
    main()
