"""HttpServer end to end over real sockets: routing, HTTP/1.1 semantics, limits, timeouts, errors."""

from __future__ import annotations

import socket
import time

import httpx
import pytest
from helpers import (
    HANG_TIMEOUT,
    connection_closed_by_peer,
    has_unread_data,
    read_head,
    read_response,
    read_responses,
    read_until_closed,
    status_of,
    wait_for,
)

from flowno_io import HttpServer, Request, Response

GET_HELLO = b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"


def make_server(**options: object) -> HttpServer:
    server = HttpServer("127.0.0.1", 0, **options)  # type: ignore[arg-type]

    @server.route("/hello", methods=["GET"])
    def hello(request: Request) -> str:
        return "Hello"

    @server.route("/users/{id:int}", methods=["GET"])
    async def user(request: Request) -> Response:
        return Response.json({"id": request.path_params["id"], "q": request.query_params})

    @server.route("/echo", methods=["POST", "PUT"])
    async def echo(request: Request) -> Response:
        return Response(await request.body(), content_type="application/octet-stream")

    @server.route("/json", methods=["POST"])
    async def json_echo(request: Request) -> dict[str, object]:
        return {"got": await request.json(), "client": list(request.client)}

    @server.route("/boom")
    def boom(request: Request) -> str:
        raise RuntimeError("handler failure")

    @server.route("/nothing")
    def nothing(request: Request) -> None:
        return None

    @server.route("/ignore-body", methods=["POST"])
    def ignore_body(request: Request) -> str:
        return "ignored"

    return server


def connect(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5)


def exchange(url: str, data: bytes) -> bytes:
    with connect(url) as sock:
        sock.sendall(data)
        return read_until_closed(sock)


def still_serving(url: str) -> bool:
    with connect(url) as sock:
        sock.sendall(GET_HELLO)
        return read_response(sock).endswith(b"\r\n\r\nHello")


# -- seed behaviour -------------------------------------------------------------------------------


def test_server_without_routes_answers_like_flowno_io(serve) -> None:
    url = serve(HttpServer("127.0.0.1", 0))
    response = httpx.get(url + "/any/path?x=1")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain"
    assert response.text == "Hello, world!\nRequest: GET /any/path?x=1 HTTP/1.1"


def test_port_zero_binds_an_ephemeral_port() -> None:
    server = HttpServer("127.0.0.1", 0)
    server.bind()
    try:
        assert server.port > 0
        probe = socket.create_connection(("127.0.0.1", server.port))
        probe.close()
    finally:
        server._listener.close()  # type: ignore[union-attr]


def test_listener_rebinds_at_once_after_restart() -> None:
    from flowno_io.testing import ServerThread

    server = make_server()
    with ServerThread(server) as url:
        # the server closes first, so its side of this connection sits in TIME_WAIT
        assert exchange(url, b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").endswith(
            b"Hello"
        )
    again = make_server()
    again.port = server.port
    with ServerThread(again) as url:
        assert still_serving(url)


# -- routing --------------------------------------------------------------------------------------


def test_path_and_query_parameters(serve) -> None:
    url = serve(make_server())
    response = httpx.get(url + "/users/42?a=1&b=two")
    assert response.status_code == 200
    assert response.json() == {"id": 42, "q": {"a": "1", "b": "two"}}


def test_unknown_path_is_404_and_wrong_method_is_405_with_allow(serve) -> None:
    url = serve(make_server())
    assert httpx.get(url + "/missing").status_code == 404
    response = httpx.delete(url + "/hello")
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert httpx.get(url + "/users/not-a-number").status_code == 404


def test_head_is_answered_from_get_without_a_body(serve) -> None:
    url = serve(make_server())
    with connect(url) as sock:
        sock.sendall(b"HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n" + GET_HELLO)
        first, rest = read_head(sock)
        # the next bytes are the second response, not a body: read it, framed by its own head
        second = read_response(sock, already=rest)
        sock.sendall(GET_HELLO)
        third = read_response(sock)  # nothing was left over between the responses
    assert status_of(first) == 200
    assert b"Content-Length: 5" in first
    assert second.startswith(b"HTTP/1.1 200 OK")
    assert second.endswith(b"\r\n\r\nHello")
    assert third.startswith(b"HTTP/1.1 200 OK")


def test_handler_return_values(serve) -> None:
    url = serve(make_server())
    assert httpx.get(url + "/nothing").status_code == 204
    response = httpx.post(url + "/json", json={"a": [1, 2]})
    assert response.json()["got"] == {"a": [1, 2]}
    assert response.json()["client"][0] == "127.0.0.1"


def test_routes_table_in_constructor(serve) -> None:
    server = HttpServer("127.0.0.1", 0, routes={("GET", "/a"): lambda r: "A", "/b": lambda r: "B"})
    url = serve(server)
    assert httpx.get(url + "/a").text == "A"
    assert httpx.post(url + "/b").text == "B"
    assert httpx.post(url + "/a").status_code == 405


# -- bodies ---------------------------------------------------------------------------------------


def test_content_length_and_chunked_request_bodies(serve) -> None:
    url = serve(make_server())
    assert httpx.post(url + "/echo", content=b"x" * 100_000).content == b"x" * 100_000
    chunked = (
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    )
    response = exchange(url, chunked)
    assert status_of(response) == 200
    assert response.endswith(b"\r\n\r\nhello world")


def test_invalid_json_body_is_400(serve) -> None:
    url = serve(make_server())
    response = httpx.post(url + "/json", content=b"{not json")
    assert response.status_code == 400
    assert still_serving(url)


def test_expect_100_continue(serve) -> None:
    url = serve(make_server())
    with connect(url) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
        assert sock.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"body")
        response = read_response(sock)
    assert status_of(response) == 200
    assert response.endswith(b"body")


def test_unread_body_is_drained_and_connection_kept(serve) -> None:
    url = serve(make_server())
    with connect(url) as sock:
        sock.sendall(b"POST /ignore-body HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello" + GET_HELLO)
        first, second = read_responses(sock, 2)
        assert first.endswith(b"ignored")
        assert second.endswith(b"Hello")


# -- connection management ------------------------------------------------------------------------


def test_keep_alive_serves_many_requests_on_one_connection(serve) -> None:
    server = make_server()
    url = serve(server)
    with connect(url) as sock:
        for _ in range(20):
            sock.sendall(GET_HELLO)
            assert read_response(sock).endswith(b"Hello")
    assert server.stats["connections_accepted"] == 1
    assert server.stats["requests_served"] == 20


def test_pipelined_requests_are_answered_in_order(serve) -> None:
    url = serve(make_server())
    requests = b"".join(
        [
            b"GET /users/1 HTTP/1.1\r\nHost: t\r\n\r\n",
            b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\n\r\nabc",
            b"GET /users/2 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        ]
    )
    data = exchange(url, requests)
    assert data.count(b"HTTP/1.1 200 OK") == 3
    assert data.index(b'"id":1') < data.index(b"abc") < data.index(b'"id":2')


def test_http10_closes_unless_keep_alive_asked(serve) -> None:
    url = serve(make_server())
    data = exchange(url, b"GET /hello HTTP/1.0\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 200 OK") and data.endswith(b"Hello")
    assert b"Connection: close" in data
    with connect(url) as sock:
        sock.sendall(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        first = read_response(sock)
        assert b"Connection: keep-alive" in first
        sock.sendall(b"GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        assert read_response(sock).endswith(b"Hello")


def test_connection_close_is_honoured(serve) -> None:
    url = serve(make_server())
    data = exchange(url, b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    assert b"Connection: close" in data and data.endswith(b"Hello")


def test_date_and_server_headers(serve) -> None:
    url = serve(make_server())
    response = httpx.get(url + "/hello")
    assert response.headers["server"] == "flowno-io"
    assert response.headers["date"].endswith(" GMT")


# -- errors and limits ----------------------------------------------------------------------------


def test_handler_exception_is_500_and_server_keeps_serving(serve, caplog) -> None:
    url = serve(make_server())
    response = httpx.get(url + "/boom")
    assert response.status_code == 500
    assert "handler failure" not in response.text  # no internals leak to the client
    assert still_serving(url)


BAD_REQUESTS = {
    "garbage": (b"\x00\x01\x02 not http\r\n\r\n", 400),
    "bare_lf": (b"GET / HTTP/1.1\nHost: t\n\n", 400),
    "cl_and_te": (
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
        400,
    ),
    "duplicate_cl": (
        b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
        400,
    ),
    "negative_cl": (b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: -1\r\n\r\n", 400),
    "bad_chunk_size": (b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400),
    "chunk_overflow": (
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n",
        400,
    ),
    "te_not_chunked_last": (
        b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
        400,
    ),
    "missing_host": (b"GET /hello HTTP/1.1\r\n\r\n", 400),
    "http2_preface": (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505),
    "space_in_header_name": (b"GET / HTTP/1.1\r\nHost: t\r\nBad Name: x\r\n\r\n", 400),
}


@pytest.mark.parametrize("name", sorted(BAD_REQUESTS))
def test_malformed_requests_get_their_4xx_and_close(serve, name: str) -> None:
    # HTTP/1.1 only: with HTTP/2 on (the default) the preface opens an HTTP/2 connection.
    url = serve(make_server(http2=False))
    raw, expected = BAD_REQUESTS[name]
    response = exchange(url, raw)
    assert status_of(response) == expected
    assert b"Connection: close" in response
    assert still_serving(url)


def test_oversized_headers_are_431(serve) -> None:
    url = serve(make_server(max_header_bytes=1024))
    response = exchange(url, b"GET /hello HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 2000 + b"\r\n\r\n")
    assert status_of(response) == 431
    assert still_serving(url)


def test_endless_header_line_is_431_without_waiting_for_its_end(serve) -> None:
    url = serve(make_server(max_header_bytes=1024))
    with connect(url) as sock:
        # a header line that never ends: the server must not wait for its end (nor buffer it all)
        # The limit counts the bytes of the reads after the one where the head began, so the line
        # keeps growing, one piece at a time, until the server answers (however the kernel merges
        # the pieces into reads). The pause is the slow client's pace, not synchronisation.
        sock.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 600)
        started = time.monotonic()
        while not (connection_closed_by_peer(sock) or has_unread_data(sock)):
            assert time.monotonic() - started < HANG_TIMEOUT, "the endless line was never refused"
            try:
                sock.sendall(b"a" * 600)
            except OSError:
                break
            time.sleep(0.01)
        assert status_of(read_until_closed(sock)) == 431


def test_overlong_request_line_is_431(serve) -> None:
    url = serve(make_server(max_header_bytes=1024))
    assert status_of(exchange(url, b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: t\r\n\r\n")) == 431


def test_too_many_headers_is_431(serve) -> None:
    url = serve(make_server(max_headers=10))
    fields = b"".join(b"X-%d: v\r\n" % i for i in range(11))
    assert status_of(exchange(url, b"GET /hello HTTP/1.1\r\nHost: t\r\n" + fields + b"\r\n")) == 431
    assert still_serving(url)


def test_body_over_limit_is_413_before_it_is_sent(serve) -> None:
    url = serve(make_server(max_body_bytes=1000))
    with connect(url) as sock:
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1000000\r\n\r\n")
        response = read_until_closed(sock)  # answered without the body ever being sent
    assert status_of(response) == 413
    assert still_serving(url)


def test_chunked_body_over_limit_is_413(serve) -> None:
    url = serve(make_server(max_body_bytes=1000))
    body = b"".join(b"100\r\n" + b"x" * 256 + b"\r\n" for _ in range(8)) + b"0\r\n\r\n"
    response = exchange(url, b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    assert status_of(response) == 413


# -- timeouts -------------------------------------------------------------------------------------


def test_slow_loris_is_disconnected_after_header_timeout(serve) -> None:
    url = serve(make_server(header_timeout=0.5))
    started = time.monotonic()  # before connecting: the server's deadline is later than this
    with connect(url) as sock:
        sock.sendall(b"GET /hello HTTP/1.1\r\n")
        # One byte every 100 ms keeps the connection busy but never finishes the head; trickle
        # until the server closes (a hang bound, not a measurement, limits the trickle).
        while not connection_closed_by_peer(sock):
            assert time.monotonic() - started < HANG_TIMEOUT, "the slow head was never cut off"
            time.sleep(0.1)  # the pace of the slow client (what is tested), not synchronisation
            try:
                sock.sendall(b"X")
            except OSError:
                break
        assert read_until_closed(sock) == b""
    assert time.monotonic() - started >= 0.5, "closed before the header timeout"
    assert still_serving(url)


def test_idle_keep_alive_connection_is_closed(serve) -> None:
    server = make_server(keepalive_timeout=0.3)
    url = serve(server)
    with connect(url) as sock:
        sent = time.monotonic()  # the server's idle deadline comes after the request arrives
        sock.sendall(GET_HELLO)
        read_response(sock)
        assert read_until_closed(sock) == b""
        assert time.monotonic() - sent >= 0.3, "closed before the keep-alive timeout"
    wait_for(lambda: server.open_connections == 0, message="the closed connection is still counted")


def test_stalled_body_is_disconnected_after_body_timeout(serve) -> None:
    url = serve(make_server(body_timeout=0.3))
    with connect(url) as sock:
        started = time.monotonic()
        sock.sendall(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc")
        read_until_closed(sock)  # fails if the server never closes (a hang bound)
        assert time.monotonic() - started >= 0.3, "closed before the body timeout"
    assert still_serving(url)


def test_client_that_does_not_read_is_dropped_after_write_timeout(serve) -> None:
    server = HttpServer("127.0.0.1", 0, write_timeout=0.3)
    server.add_route("/big", lambda request: Response(b"x" * 50_000_000))
    server.add_route("/hello", lambda request: "Hello")
    url = serve(server)
    with connect(url) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        head, _ = read_head(sock)  # the response has started; from here on nothing is read
        assert status_of(head) == 200
        wait_for(lambda: server.open_connections == 0, message="the stalled client was never dropped")
    assert still_serving(url)


# -- capacity and resources -----------------------------------------------------------------------


def test_max_connections_pauses_accepting_until_one_closes(serve) -> None:
    server = make_server(max_connections=2)
    url = serve(server)
    first, second = connect(url), connect(url)
    for sock in (first, second):
        sock.sendall(GET_HELLO)
        read_response(sock)
    third = connect(url)  # the kernel completes the handshake; the server does not accept it yet
    third.sendall(GET_HELLO)
    third.settimeout(0.3)
    with pytest.raises(TimeoutError):
        third.recv(100)
    first.close()
    assert read_response(third).endswith(b"Hello")
    second.close()
    third.close()


def test_connections_reuse_worker_tasks(serve) -> None:
    server = make_server()
    url = serve(server)
    for _ in range(300):
        with connect(url) as sock:
            sock.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            read_until_closed(sock)
    assert server.stats["connections_accepted"] == 300
    # one worker serves them all, one after another: no task per connection
    assert server.stats["workers"] <= 2


def test_handle_client_serves_one_connection() -> None:
    from flowno import EventLoop

    from flowno_io import SocketStream  # noqa: F401  (public)

    server = make_server()
    left, right = socket.socketpair()
    left.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
    EventLoop().run_until_complete(server.handle_client(right), join=True)
    assert read_until_closed(left).endswith(b"Hello")
    left.close()


def test_accepted_connections_have_tcp_nodelay() -> None:
    """The listener's TCP_NODELAY is inherited by the sockets it accepts (Linux), so the server
    does not set it per connection: a canary for that assumption (a small answer must not wait
    for Nagle's algorithm)."""
    from flowno_io.testing import ServerThread

    server = make_server()
    with ServerThread(server) as url, socket.create_connection(("127.0.0.1", server.port)) as sock:
        assert url
        sock.sendall(b"GET /hello HTTP/1.1\r\n")  # accepted (TCP_DEFER_ACCEPT), parked in its head
        wait_for(lambda: server.open_connections == 1)
        for connection in list(server._connections):
            assert connection.stream.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        sock.sendall(b"Host: t\r\n\r\n")
        assert status_of(read_response(sock)) == 200
