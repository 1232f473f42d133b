"""Serve ``GET /`` hello until N requests were answered, then exit: for ``cg_server.sh``.

    python cg_hello_server.py N PORT {flowno,flowno_io} [observe]

The last argument picks the loop: flowno's own ``EventLoop`` or ``flowno_io.EventLoop`` (the
subclass the README's examples use). ``observe``: metrics, tracing and Server-Timing on, as
the bench app's ``--observe`` (issue 17's overhead).
"""

from __future__ import annotations

import sys

import flowno

import flowno_io
from flowno_io import HttpServer, Request, Response

count, port, loop_kind = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
server = HttpServer("127.0.0.1", port, keepalive_timeout=600)
if sys.argv[4:] == ["observe"]:
    from flowno_io.server.tracing import ObservabilityMiddleware

    server.add_middleware(ObservabilityMiddleware(server.enable_metrics(add_middleware=False)))
loop = flowno.EventLoop() if loop_kind == "flowno" else flowno_io.EventLoop()


@server.route("/", methods=["GET"])
def hello(request: Request) -> Response:
    """The bench app's hello; the last request closes the server."""
    if server.stats["requests_served"] + 1 >= count:
        loop.create_task(server.close())
    return Response("Hello, world!", content_type="text/plain")


server.bind()
loop.run_until_complete(server.serve(), join=True)
