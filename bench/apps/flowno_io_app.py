"""The bench app on ``flowno_io.HttpServer``: ``GET /`` hello, ``POST /echo`` JSON, ``GET /sse?n=``.

Run by ``bench/run.py`` as ``taskset -c 0 python bench/apps/flowno_io_app.py --port N``; SIGTERM
stops it (the server installs its own handler). It runs on ``flowno_io.EventLoop``, as the
README's examples do.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

from _payloads import BACKLOG, DEFAULT_EVENTS, HELLO, KEEPALIVE_TIMEOUT, event_data

from flowno_io import EventLoop, EventSourceResponse, HttpServer, Request, Response


def build_server(host: str, port: int) -> HttpServer:
    """The server with the three bench routes."""
    server = HttpServer(
        host,
        port,
        keepalive_timeout=KEEPALIVE_TIMEOUT,
        max_connections=50_000,  # the default (10,000) would refuse the idle scenario's extras
        backlog=BACKLOG,
    )

    @server.route("/", methods=["GET"])
    def hello(request: Request) -> Response:
        return Response(HELLO, content_type="text/plain")

    @server.route("/echo", methods=["POST"])
    async def echo(request: Request) -> Response:
        return Response.json(await request.json())

    @server.route("/sse", methods=["GET"])
    def sse(request: Request) -> EventSourceResponse:
        count = int(request.query_params.get("n", DEFAULT_EVENTS))

        async def events() -> AsyncIterator[str]:
            for index in range(count):
                yield event_data(index)

        return EventSourceResponse(events())

    return server


def main() -> None:
    """Serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    server = build_server(args.host, args.port)
    EventLoop().run_until_complete(server.serve(), join=True)


if __name__ == "__main__":
    main()
