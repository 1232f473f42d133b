"""The server's path for a connection that closes after its response (``Connection: close``,
HTTP/1.0): accepted, answered inline and closed, with nothing of it left behind.

Guards the round-five changes to that path (``bench/experiments/NOTES.md``, "Round five:
Connection: close"): the response still arrives whole when the client sent more than the server
read, a first read that merely starts like the HTTP/2 preface is still HTTP/1.1, and a dropped
connection's parser is freed at once rather than by the garbage collector.
"""

from __future__ import annotations

import gc
import socket
from collections.abc import Iterator

import pytest
from helpers import read_until_closed, wait_for

from flowno_io import HttpServer, Request, Response
from flowno_io.protocol.http11_server import RequestParser
from flowno_io.testing import ServerThread

HELLO = b"Hello, world!"
CLOSE_REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"


@pytest.fixture
def server() -> Iterator[HttpServer]:
    server = HttpServer("127.0.0.1", 0, max_body_bytes=8_000_000)
    server.add_route("/", lambda request: Response(HELLO, content_type="text/plain"), methods=["GET"])
    closing = Response(HELLO, 200, {"Connection": "close"}, content_type="text/plain")
    server.add_route("/ignore", lambda request: closing, methods=["POST"])  # never reads the body

    @server.route("/echo", methods=["POST"])
    async def echo(request: Request) -> bytes:
        return await request.body()

    with ServerThread(server):
        yield server


def _connect(server: HttpServer) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server.port), timeout=10)  # (also each recv's)


def _expect_hello(data: bytes) -> None:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    assert lines[0] == b"http/1.1 200 ok"
    assert b"connection: close" in lines
    assert b"content-length: 13" in lines
    assert body == HELLO  # whole, and nothing after it


def test_one_request_connections_are_answered_and_closed(server: HttpServer) -> None:
    for _ in range(50):
        with _connect(server) as sock:
            sock.sendall(CLOSE_REQUEST)
            _expect_hello(read_until_closed(sock))
    wait_for(lambda: server.open_connections == 0, message=lambda: f"{server.open_connections} still open")
    assert server.stats["requests_served"] == 50


def _read_to_end(sock: socket.socket) -> tuple[bytes, bool]:
    """Everything until the server's close, and whether that close was a reset."""
    chunks = []
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            return b"".join(chunks), True
        if not data:
            return b"".join(chunks), False
        chunks.append(data)


def test_response_arrives_whole_when_the_client_pipelined_more_than_was_read(server: HttpServer) -> None:
    """The client pipelines ~260 KiB after a closing request (more than one read of the server
    takes), then reads: its answer is there, whole, ended by a FIN, not a reset (lingering close:
    without it the kernel resets a socket closed with unread bytes)."""
    pipelined = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" * 10_000
    with _connect(server) as sock:
        sock.sendall(CLOSE_REQUEST + pipelined)
        data, reset = _read_to_end(sock)
    _expect_hello(data)
    assert not reset
    assert server.stats["requests_served"] == 1  # what followed `Connection: close` is not served


def test_closing_response_to_an_unread_upload_is_not_reset(server: HttpServer) -> None:
    """As Python's http.client does: a 4 MB upload written whole before reading, answered with
    ``Connection: close`` by a handler that never reads it: the answer, then a FIN."""
    body = b"x" * 4_000_000
    with _connect(server) as sock:
        sock.sendall(b"POST /ignore HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        data, reset = _read_to_end(sock)
    _expect_hello(data)
    assert not reset


def test_waiting_client_gets_the_whole_answer_after_the_close(server: HttpServer) -> None:
    """The client pipelines past what the server reads, waits until the server let the
    connection go, then reads: its answer is there, whole."""
    pipelined = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n" * 10_000
    with _connect(server) as sock:
        sock.sendall(CLOSE_REQUEST + pipelined)
        sock.shutdown(socket.SHUT_WR)  # (the lingering close ends when the client's side does)
        wait_for(lambda: server.open_connections == 0, message="the server did not close the connection")
        _expect_hello(read_until_closed(sock))


def test_http10_request_is_answered_and_closed(server: HttpServer) -> None:
    with _connect(server) as sock:
        sock.sendall(b"GET / HTTP/1.0\r\nHost: t\r\n\r\n")
        data = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(HELLO)


@pytest.mark.parametrize("first", [b"P", b"POST /echo HTTP/1.1\r\n"])
def test_first_read_starting_like_the_http2_preface_is_still_http1(server: HttpServer, first: bytes) -> None:
    """A first read starting with ``P`` (as the preface does) goes through the preface check;
    a whole ``POST`` is HTTP/1.1, in one read or after a one-byte read."""
    request = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nConnection: close\r\n\r\nping"
    with _connect(server) as sock:
        sock.sendall(first)
        sock.sendall(request[len(first) :])
        data = read_until_closed(sock)
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"ping")


def test_dropped_connections_parsers_are_freed_without_the_garbage_collector(server: HttpServer) -> None:
    """llhttp holds its parser's bound methods (a reference cycle): dropping a connection breaks
    it, so the parser goes with its last reference instead of waiting for a collection (fails
    with 20 parsers left over when the cycle is kept)."""

    def parsers() -> int:
        return sum(type(each) is RequestParser for each in gc.get_objects())

    gc.collect()
    gc.disable()
    try:
        before = parsers()
        for _ in range(20):
            with _connect(server) as sock:
                sock.sendall(CLOSE_REQUEST)
                _expect_hello(read_until_closed(sock))
        wait_for(lambda: server.open_connections == 0, message="connections still open")
        after = parsers()
    finally:
        gc.enable()
    assert after <= before
