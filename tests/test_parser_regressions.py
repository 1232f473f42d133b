"""Regressions of the request parser's hostile-input bugs (issue 11), over real sockets.

Each test sends raw bytes to a real :class:`HttpServer` and reads the answer with a timeout. The
bugs were found with raw sockets against ``python -m echo_service``; aiohttp and uvicorn got each
of these right.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from rawhttp import read_response, read_responses, read_until_closed, status_of

from flowno_io import HttpServer, Request, Response
from flowno_io.protocol import http11_server
from flowno_io.testing import ServerThread

HELLO = b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"


def regression_server(**options: float) -> HttpServer:
    """GET /hello → "Hello"; POST /echo → the body."""
    server = HttpServer("127.0.0.1", 0, **options)  # type: ignore[arg-type]
    server.add_route("/hello", lambda request: "Hello", methods=["GET"])

    async def echo(request: Request) -> Response:
        return Response(await request.body(), content_type="application/octet-stream")

    server.add_route("/echo", echo, methods=["POST"])
    return server


def serve_thread(**options: float) -> Iterator[ServerThread]:
    """A regression server in a thread; afterwards no exception escaped into its loop."""
    thread = ServerThread(regression_server(**options))
    thread.start()
    try:
        yield thread
    finally:
        thread.stop()
    assert thread.loop.exceptions == {}, f"exceptions escaped into the loop: {thread.loop.exceptions}"


@pytest.fixture
def served() -> Iterator[ServerThread]:
    yield from serve_thread(header_timeout=5.0, keepalive_timeout=5.0)


def connect(thread: ServerThread) -> socket.socket:
    sock = socket.create_connection((thread.server.host, thread.server.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def wait_until_server_in_head(thread: ServerThread, timeout: float = 5.0) -> None:
    """Wait until the server has parsed the start of a head, so what we send next is another read.

    Polls the server's connections (private state, read from this thread; a set that changes
    under us is simply polled again). Only bounds a hang: if the state is never seen, the test goes
    on (the bytes may then arrive in one read, which weakens the test but cannot make it flaky).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            connections = list(getattr(thread.server, "_connections", ()))
            if any(connection.parser.in_head for connection in connections):
                return
        except RuntimeError:
            pass
        time.sleep(0.005)


def body_of(response: bytes) -> bytes:
    return response.partition(b"\r\n\r\n")[2]


# -- bug 1: a head split across reads was charged with the body (and the pipelined requests) ------


def test_head_split_across_reads_then_a_large_body_is_served(served: ServerThread) -> None:
    body = bytes(range(256)) * 80  # 20,480 bytes, more than the 16 KiB head limit
    with connect(served) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\n")
        wait_until_server_in_head(served)
        sock.sendall(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        response = read_response(sock)
    assert status_of(response) == 200, response[:200]
    assert body_of(response) == body


def test_request_line_split_across_reads_then_600_pipelined_requests(served: ServerThread) -> None:
    with connect(served) as sock:
        sock.sendall(b"GET /hel")
        wait_until_server_in_head(served)
        sock.sendall(b"lo HTTP/1.1\r\nHost: t\r\n\r\n" + HELLO * 600)
        responses = read_responses(sock, 601, timeout=30)
    assert [status_of(response) for response in responses] == [200] * 601


def test_head_over_the_limit_split_across_reads_is_still_431(served: ServerThread) -> None:
    with connect(served) as sock:
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\n")
        wait_until_server_in_head(served)
        for _ in range(17):
            sock.sendall(b"X-Filler: " + b"a" * 1000 + b"\r\n")
        sock.sendall(b"\r\n")
        responses = read_until_closed(sock)
    assert status_of(responses) == 431


# -- bug 3: trailers went into a module-global dict and were never freed -------------------------


def chunked_with_trailers(trailers: bytes) -> bytes:
    return (
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n"
        + trailers
        + b"\r\n"
    )


def module_dicts() -> list[dict[object, object]]:
    return [value for value in vars(http11_server).values() if isinstance(value, dict)]


def test_trailers_are_not_kept_after_the_request(served: ServerThread) -> None:
    with connect(served) as sock:
        for number in range(50):
            sock.sendall(chunked_with_trailers(b"X-Leak-%d: %s\r\n" % (number, b"v" * 1000)))
            response = read_response(sock)
            assert status_of(response) == 200
            assert body_of(response) == b"abc"
    for table in module_dicts():
        assert not any(str(key).startswith("x-leak") for key in table), "a trailer outlived its request"


def test_trailers_over_the_byte_limit_get_431(served: ServerThread) -> None:
    trailers = b"".join(b"X-T-%d: %s\r\n" % (number, b"v" * 1000) for number in range(17))
    with connect(served) as sock:
        sock.sendall(chunked_with_trailers(trailers))
        assert status_of(read_until_closed(sock)) == 431


# -- bug 4: a trailer value that never ended had no limit (and quadratic CPU) ---------------------


def test_a_trailer_line_that_never_ends_gets_431(served: ServerThread) -> None:
    with connect(served) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nX-T: "
        )
        for _ in range(15):  # 15 KiB: under the limit, so the server reads all of it
            sock.sendall(b"a" * 1024)
        sock.sendall(b"a" * 2048)  # now over the 16 KiB limit, and no CRLF ever
        assert status_of(read_until_closed(sock)) == 431


# -- bug 5: an Upgrade request's body was skipped (200 with an empty body) ------------------------


@pytest.mark.parametrize(
    "framing, body_bytes",
    [
        (b"Content-Length: 11\r\n", b"hello world"),
        (b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"),
    ],
    ids=["content-length", "chunked"],
)
def test_upgrade_request_with_a_body_is_served_as_http11(
    served: ServerThread, framing: bytes, body_bytes: bytes
) -> None:
    request = (
        b"POST /echo HTTP/1.1\r\nHost: t\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n" + framing + b"\r\n" + body_bytes
    )
    with connect(served) as sock:
        sock.sendall(request)
        responses = read_until_closed(sock)
    assert status_of(responses) == 200
    assert body_of(responses) == b"hello world"


# -- bug 6a: a #fragment stayed in the path (404) -------------------------------------------------


def test_fragment_is_dropped_from_the_target(served: ServerThread) -> None:
    with connect(served) as sock:
        sock.sendall(b"GET /hello#section-2 HTTP/1.1\r\nHost: t\r\n\r\n")
        response = read_response(sock)
    assert status_of(response) == 200
    assert body_of(response) == b"Hello"


# -- bug 8: empty lines reset the header and keep-alive timeouts forever --------------------------


@pytest.fixture
def short_header_timeout() -> Iterator[ServerThread]:
    yield from serve_thread(header_timeout=1.0, keepalive_timeout=5.0)


def closed_while_dripping(sock: socket.socket, drip: bytes, every: float, bound: float) -> float | None:
    """Send ``drip`` every ``every`` seconds until the server closes; seconds taken, or None."""
    start = time.monotonic()
    sock.settimeout(every)
    while time.monotonic() - start < bound:
        try:
            sock.sendall(drip)
            data = sock.recv(65536)
        except TimeoutError:
            continue
        except OSError:  # reset, or a broken pipe: closed
            return time.monotonic() - start
        if not data:
            return time.monotonic() - start
        read_until_closed(sock)  # an error response (too many empty lines): it must then close
        return time.monotonic() - start
    return None


def test_empty_lines_every_200ms_do_not_hold_a_new_connection(short_header_timeout: ServerThread) -> None:
    with connect(short_header_timeout) as sock:
        took = closed_while_dripping(sock, b"\r\n", every=0.2, bound=10.0)
    assert took is not None and took < 5.0, f"closed after {took} s (header_timeout is 1 s)"


def test_empty_lines_every_200ms_do_not_hold_a_kept_alive_connection(
    short_header_timeout: ServerThread,
) -> None:
    with connect(short_header_timeout) as sock:
        sock.sendall(HELLO)
        assert status_of(read_response(sock)) == 200
        took = closed_while_dripping(sock, b"\r\n", every=0.2, bound=10.0)
    assert took is not None and took < 5.0, f"closed after {took} s (header_timeout is 1 s)"


def test_idle_keep_alive_client_outlives_the_header_timeout(short_header_timeout: ServerThread) -> None:
    with connect(short_header_timeout) as sock:
        sock.sendall(HELLO)
        assert status_of(read_response(sock)) == 200
        time.sleep(1.5)  # idle past header_timeout (1 s), within keepalive_timeout (5 s)
        sock.sendall(HELLO)
        assert body_of(read_response(sock)) == b"Hello"


def test_one_empty_line_after_a_post_body_is_ignored(short_header_timeout: ServerThread) -> None:
    with connect(short_header_timeout) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\nhi\r\n")
        assert body_of(read_response(sock)) == b"hi"
        sock.sendall(HELLO)
        assert body_of(read_response(sock)) == b"Hello"


def test_too_many_empty_lines_before_a_request_get_400(served: ServerThread) -> None:
    limit = http11_server.MAX_LEADING_BLANK_LINES
    with connect(served) as sock:
        sock.sendall(b"\r\n" * limit + HELLO)
        assert body_of(read_response(sock)) == b"Hello"
    with connect(served) as sock:
        sock.sendall(b"\r\n" * (limit + 1) + HELLO)
        assert status_of(read_until_closed(sock)) == 400
