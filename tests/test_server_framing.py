"""Server regressions of issue 11 over real sockets: framing and keep-alive decided in one place,
lingering close, pipelining with backpressure, bounded parsing ahead, 100-continue for HTTP/1.1 only.

Each test names the bug it guards. The rule they check is ``protocol/framing.py``: what a response
announces about its connection is what the server then does.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
from rawhttp import read_response, read_until_closed, status_of

from flowno_io import HttpServer, Response, StreamingResponse
from flowno_io.io.wakeup import Wakeup
from flowno_io.protocol.framing import frame_response
from flowno_io.protocol.headers import Headers
from flowno_io.server.server import FEED_SLICE
from flowno_io.testing import ServerThread


@pytest.fixture
def served() -> Iterator[tuple[HttpServer, str]]:
    server = HttpServer("127.0.0.1", 0, max_body_bytes=1000, write_timeout=30)

    async def stream_close(request: object) -> StreamingResponse:
        async def pieces() -> object:
            yield b"a"
            yield b"b"

        return StreamingResponse(pieces(), headers={"Connection": "close"})

    server.add_route("/stream-close", stream_close)
    server.add_route("/ignore-body", lambda request: "ignored", methods=["POST"])
    server.add_route("/echo", _echo, methods=["POST"])
    server.add_route("/health", lambda request: "ok")
    server.add_route("/big", lambda request: Response(b"x" * 200_000))
    with ServerThread(server) as url:
        yield server, url


async def _echo(request: object) -> bytes:
    return await request.body()  # type: ignore[attr-defined,no-any-return]


def _connect(server: HttpServer) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.settimeout(10)
    return sock


def _head_lines(response: bytes) -> list[bytes]:
    return [line.lower() for line in response.partition(b"\r\n\r\n")[0].split(b"\r\n")]


def _closes(sock: socket.socket) -> bool:
    """True when the server closed the connection (EOF or reset within 10 s)."""
    sock.settimeout(10)
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


# -- bug 10: one framing rule ------------------------------------------------------------------


def test_streaming_response_asking_to_close_announces_it_and_closes(served: tuple[HttpServer, str]) -> None:
    server, _ = served
    with _connect(server) as sock:
        sock.sendall(b"GET /stream-close HTTP/1.1\r\nHost: t\r\n\r\n")
        data = read_until_closed(sock, timeout=10)
    lines = _head_lines(data)
    assert b"connection: close" in lines
    assert data.endswith(b"\r\n\r\n2\r\nab\r\n0\r\n\r\n")  # both pieces were ready: one chunk


def test_unread_chunked_body_is_announced_as_close_not_kept_then_dropped(
    served: tuple[HttpServer, str],
) -> None:
    """A body the server cannot drain cheaply: the response says ``close``, and the server closes."""
    server, _ = served
    with _connect(server) as sock:
        sock.sendall(
            b"POST /ignore-body HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
        )
        response = read_response(sock)
        assert status_of(response) == 200
        assert b"connection: close" in _head_lines(response)
        assert _closes(sock)


def test_small_unread_body_keeps_the_connection_as_announced(served: tuple[HttpServer, str]) -> None:
    server, _ = served
    with _connect(server) as sock:
        sock.sendall(b"POST /ignore-body HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhel")
        response = read_response(sock)
        assert not any(line.startswith(b"connection:") for line in _head_lines(response))
        sock.sendall(b"lo")  # the rest of the ignored body arrives late: drained
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
        assert read_response(sock).endswith(b"\r\n\r\nok")


def test_responses_finished_during_shutdown_announce_close() -> None:
    release = Wakeup()
    entered = threading.Event()

    async def slow(request: object) -> str:
        entered.set()
        await release.wait()
        return "late"

    server = HttpServer("127.0.0.1", 0, shutdown_grace=10)
    server.add_route("/slow", slow)
    thread = ServerThread(server)
    thread.start()
    try:
        with _connect(server) as sock:
            sock.sendall(b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n")
            assert entered.wait(10)
            thread.loop.create_task(server.close())
            deadline = time.monotonic() + 10
            while not server.closing and time.monotonic() < deadline:
                time.sleep(0.01)
            assert server.closing
            thread.loop.create_task(_set(release))
            response = read_response(sock)
            assert response.endswith(b"late")
            assert b"connection: close" in _head_lines(response)
    finally:
        thread.stop()


async def _set(wakeup: Wakeup) -> None:
    wakeup.set()


@pytest.mark.parametrize(
    ("status", "method", "length", "expected"),
    [
        (200, "GET", 5, (b"Content-Length: 5\r\n", True, False)),
        (200, "HEAD", 5, (b"Content-Length: 5\r\n", False, False)),
        (204, "GET", 0, (b"", False, False)),
        (304, "GET", 0, (b"", False, False)),
        (200, "GET", None, (b"Transfer-Encoding: chunked\r\n", True, True)),
        (200, "HEAD", None, (b"Transfer-Encoding: chunked\r\n", False, False)),
    ],
)
def test_framing_rule_for_each_kind_of_response(
    status: int, method: str, length: int | None, expected: tuple[bytes, bool, bool]
) -> None:
    framing = frame_response(status, Headers(), body_length=length, method=method)
    assert (framing.header_lines, framing.send_body, framing.chunked) == expected
    assert framing.keep_alive


def test_framing_rule_replaces_the_applications_framing_fields() -> None:
    app = Headers(
        {"Content-Length": "999", "Transfer-Encoding": "chunked", "Connection": "keep-alive", "X": "1"}
    )
    framing = frame_response(200, app, body_length=2, server_keep_alive=False)
    assert framing.header_lines == b"Content-Length: 2\r\nConnection: close\r\n"
    assert dict(framing.headers.items()) == {"x": "1"}
    assert len(app) == 4  # the application's headers are not modified


def test_framing_rule_http10() -> None:
    kept = frame_response(200, Headers(), body_length=3, http_version="1.0", request_keep_alive=True)
    assert kept.header_lines == b"Content-Length: 3\r\nConnection: keep-alive\r\n" and kept.keep_alive
    closed = frame_response(200, Headers(), body_length=3, http_version="1.0", request_keep_alive=False)
    assert closed.header_lines == b"Content-Length: 3\r\nConnection: close\r\n" and not closed.keep_alive


# -- bug 6: 100 Continue only for HTTP/1.1 ------------------------------------------------------


def test_no_100_continue_for_an_http10_client(served: tuple[HttpServer, str]) -> None:
    server, _ = served
    with _connect(server) as sock:
        sock.sendall(b"POST /echo HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        time.sleep(0.3)  # not synchronisation: gives a wrong 100 Continue time to appear first
        sock.sendall(b"hello")
        data = read_until_closed(sock, timeout=10)
    assert b"100 Continue" not in data
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"hello")


def test_100_continue_still_sent_to_http11_clients(served: tuple[HttpServer, str]) -> None:
    server, _ = served
    with _connect(server) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n")
        interim = b""
        while b"\r\n\r\n" not in interim:
            interim += sock.recv(4096)
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n")
        sock.sendall(b"hello")
        assert read_response(sock).endswith(b"hello")


# -- bug 7: lingering close ----------------------------------------------------------------------


def test_client_that_writes_its_whole_body_before_reading_gets_the_413(
    served: tuple[HttpServer, str],
) -> None:
    """As Python's http.client does: the whole request is written, then the answer read."""
    server, _ = served
    body = b"x" * 4_000_000
    for _ in range(5):
        with _connect(server) as sock:
            sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            data = read_until_closed(sock, timeout=10)
        assert status_of(data) == 413


# -- bugs 2 and 9: pipelining with backpressure, bounded parsing ahead ---------------------------


def test_ten_thousand_pipelined_requests_in_one_write_are_all_answered(
    served: tuple[HttpServer, str],
) -> None:
    server, _ = served
    count = 10_000
    request = b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n"
    with _connect(server) as sock:
        writer = threading.Thread(target=sock.sendall, args=(request * count,), daemon=True)
        writer.start()
        expected = b"\r\n\r\nok"
        received = b""
        deadline = time.monotonic() + 60
        while received.count(expected) < count and time.monotonic() < deadline:
            chunk = sock.recv(1 << 20)
            assert chunk, f"closed after {received.count(expected)} answers: {received[-300:]!r}"
            received += chunk
        writer.join(10)
    assert received.count(b"HTTP/1.1 200 OK") == count


def test_a_client_that_pipelines_and_stops_reading_holds_little_parsed(
    served: tuple[HttpServer, str],
) -> None:
    server, _ = served
    request = b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n"
    with _connect(server) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(request * (65536 // len(request)))
        deadline = time.monotonic() + 10
        queued = None
        while time.monotonic() < deadline:
            connections = list(server._connections)
            if connections and not connections[0].parked and connections[0].requests_served > 0:
                queued = len(connections[0].parser._events)
                break
            time.sleep(0.01)
        assert queued is not None, "the server never blocked writing to the stalled client"
        # At most one slice parsed ahead of the response being written (plus that request's own end).
        assert queued <= 2 * (FEED_SLICE // len(request) + 1)
