"""Serve ``GET /`` hello until N requests were answered, then exit: for ``cg_server.sh``.

    python cg_hello_server.py N PORT {flowno,flowno_io} [observe|observe-<m,t,s>]

The last argument picks the loop: flowno's own ``EventLoop`` or ``flowno_io.EventLoop`` (the
subclass the README's examples use). ``observe``: metrics, tracing and Server-Timing on, as
the bench app's ``--observe``; ``observe-`` and letters for some of them: ``m`` metrics, ``t``
tracing, ``s`` Server-Timing (``observe-mt``: as ``--observe --no-server-timing``, what issue 17's
overhead target measures). ``prof_hello_server.py`` profiles the same
server (:func:`counting_server`).
"""

from __future__ import annotations

import sys
from typing import Any

import flowno

import flowno_io
from flowno_io import HttpServer, Request, Response


def counting_server(count: int, port: int, loop: Any, *, observe: str = "") -> HttpServer:
    """The bench app's hello on ``port`` (0: any), closing itself after ``count`` requests; with
    ``observe`` (letters: ``m`` metrics, ``t`` tracing, ``s`` Server-Timing) observed."""
    server = HttpServer("127.0.0.1", port, keepalive_timeout=600)
    if observe:
        from flowno_io.server.tracing import ObservabilityMiddleware

        metrics = server.enable_metrics(add_middleware=False) if "m" in observe else None
        timing = "app" if "s" in observe else None
        server.add_middleware(ObservabilityMiddleware(metrics, tracing="t" in observe, server_timing=timing))

    @server.route("/", methods=["GET"])
    def hello(request: Request) -> Response:
        """The bench app's hello; the last request closes the server."""
        if server.stats["requests_served"] + 1 >= count:
            loop.create_task(server.close())
        return Response("Hello, world!", content_type="text/plain")

    server.bind()
    return server


if __name__ == "__main__":
    count, port, loop_kind = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    loop = flowno.EventLoop() if loop_kind == "flowno" else flowno_io.EventLoop()
    mode = sys.argv[4] if len(sys.argv) > 4 else ""
    observe = "mts" if mode == "observe" else mode.removeprefix("observe-")
    server = counting_server(count, port, loop, observe=observe)
    loop.run_until_complete(server.serve(), join=True)
