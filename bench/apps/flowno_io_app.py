"""The bench app on ``flowno_io.HttpServer``: ``GET /`` hello, ``POST /echo`` JSON, ``GET /sse?n=``.

Run by ``bench/run.py`` as ``taskset -c 0 python bench/apps/flowno_io_app.py --port N`` (with
``--certfile C --keyfile K``: HTTPS, and HTTP/2 by ALPN); SIGTERM stops it (the server installs its
own handler). HTTP/2 by prior knowledge on cleartext is always on. It runs on
``flowno_io.EventLoop``, as the README's examples do.
"""

from __future__ import annotations

import argparse
from collections.abc import AsyncIterator

from _payloads import BACKLOG, DEFAULT_EVENTS, HELLO, KEEPALIVE_TIMEOUT, event_data

from flowno_io import EventLoop, EventSourceResponse, HttpServer, Request, Response
from flowno_io.io.tls_stream import server_context


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
    parser.add_argument("--certfile", help="serve HTTPS (HTTP/2 by ALPN, HTTP/1.1) with this certificate")
    parser.add_argument("--keyfile")
    parser.add_argument(
        "--observe", action="store_true", help="metrics, tracing and Server-Timing on, as the services run"
    )
    parser.add_argument("--no-server-timing", action="store_true", help="with --observe: no Server-Timing")
    args = parser.parse_args()
    server = build_server(args.host, args.port)
    if args.observe:
        from flowno_io.server.tracing import ObservabilityMiddleware

        metrics = server.enable_metrics(add_middleware=False)
        timing = None if args.no_server_timing else "app"
        server.add_middleware(ObservabilityMiddleware(metrics, server_timing=timing))
    if args.certfile:
        server.use_tls(server_context(args.certfile, args.keyfile))
    EventLoop().run_until_complete(server.serve(), join=True)


if __name__ == "__main__":
    main()
