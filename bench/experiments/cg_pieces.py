"""One piece of the server's hello path, run N times: for ``cg_pieces.sh`` (instructions per call).

    python cg_pieces.py PIECE N

Pieces: ``parse`` (feed the wrk hello request, take its events), ``request`` (``Request(head, c)``),
``route``, ``response`` (the bench handler's ``Response``), ``frame`` (``frame_response``),
``encode`` (``encode_response_head`` with the Server/Date lines), ``sendrecv`` (a socket pair's
``send`` + ``recv`` of a hello answer: the syscall wrappers' user-space cost), ``empty`` (the loop).
"""

from __future__ import annotations

import socket
import sys

from flowno_io.protocol.framing import frame_response
from flowno_io.protocol.http11_server import RequestParser, encode_response_head, http_date
from flowno_io.protocol.models import Response
from flowno_io.server.request import Request
from flowno_io.server.routing import Router

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:19555\r\n\r\n"  # what wrk sends


class _Connection:
    client = ("127.0.0.1", 5)


def main(piece: str, count: int) -> None:
    """Run ``piece`` ``count`` times."""
    parser = RequestParser()
    parser.feed(REQUEST)
    head = parser.next_event()
    parser.next_event()
    router: Router[str] = Router()
    for path, method in (("/", "GET"), ("/echo", "POST"), ("/sse", "GET")):
        router.add(path, path, [method])
    response = Response("Hello, world!", content_type="text/plain")
    framing = frame_response(200, response.headers, body_length=13)
    left, right = socket.socketpair()
    answer = b"x" * 140
    connection = _Connection()
    if piece == "parse":
        for _ in range(count):
            parser.feed(REQUEST)
            parser.next_event()
            parser.next_event()
    elif piece == "request":
        for _ in range(count):
            Request(head, connection)  # type: ignore[arg-type]
    elif piece == "route":
        for _ in range(count):
            router.match_route("GET", "/")
    elif piece == "response":
        for _ in range(count):
            Response("Hello, world!", content_type="text/plain")
    elif piece == "frame":
        for _ in range(count):
            frame_response(200, response.headers, body_length=13, method="GET", http_version="1.1")
    elif piece == "encode":
        for _ in range(count):
            lines = b"Server: flowno-io\r\nDate: %b\r\n%b" % (http_date(), framing.header_lines)
            encode_response_head(200, framing.headers, lines)
    elif piece == "sendrecv":
        for _ in range(count):
            left.send(answer)
            right.recv(65536)
    elif piece != "empty":
        raise SystemExit(f"unknown piece {piece!r}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
