"""The bench app on uvicorn + starlette (asyncio, httptools), SSE by sse-starlette.

``GET /`` hello, ``POST /echo`` JSON, ``GET /sse?n=``. uvicorn runs on the stock asyncio loop
(``loop="asyncio"``), as aiohttp and the issue's figures do, or on uvloop with ``--loop uvloop``
(uvicorn's default when uvloop is installed: what ``uvicorn[standard]`` deployments run).
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

import uvicorn
from _payloads import BACKLOG, DEFAULT_EVENTS, HELLO, KEEPALIVE_TIMEOUT, event_data
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route


async def hello(request: Request) -> PlainTextResponse:
    """The hello route."""
    return PlainTextResponse(HELLO)


async def echo(request: Request) -> JSONResponse:
    """Parse the JSON body and send it back."""
    return JSONResponse(await request.json())


async def sse(request: Request) -> EventSourceResponse:
    """``n`` events, then the end of the stream (``sep="\\n"``: the same bytes as the others)."""
    count = int(request.query_params.get("n", DEFAULT_EVENTS))

    async def events() -> AsyncIterator[dict[str, str]]:
        for index in range(count):
            yield {"data": event_data(index)}

    return EventSourceResponse(events(), sep="\n")


app = Starlette(
    routes=[
        Route("/", hello, methods=["GET"]),
        Route("/echo", echo, methods=["POST"]),
        Route("/sse", sse, methods=["GET"]),
    ]
)


def main() -> None:
    """Serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args()
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop=args.loop,
        http="httptools",
        log_level="warning",
        access_log=False,
        timeout_keep_alive=int(KEEPALIVE_TIMEOUT),
        backlog=BACKLOG,
        timeout_graceful_shutdown=1,
    )


if __name__ == "__main__":
    main()
