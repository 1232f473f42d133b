"""HttpClient end to end against servers we did not write: requests, pooling, errors, redirects.

The client runs on a flowno loop in the test's thread; the stdlib ``ThreadingHTTPServer`` and the
scripted raw-socket servers run in background threads (``client_servers.py``).
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from client_servers import RawServer, StdlibServer, read_request, response_bytes, wait_for_close
from flowno import sleep, spawn
from helpers import HANG_TIMEOUT, until

from flowno_io import Headers
from flowno_io._errors import (
    ClosedResourceError,
    ConnectError,
    HTTPStatusError,
    LocalProtocolError,
    RemoteProtocolError,
    TooManyRedirects,
)
from flowno_io.client.client import HttpClient, Timeout
from flowno_io.testing import run

StartRaw = Callable[..., RawServer]


@pytest.fixture
def server() -> Iterator[StdlibServer]:
    stdlib = StdlibServer().start()
    yield stdlib
    stdlib.stop()


def echo_of(response: Any) -> dict[str, Any]:
    value: dict[str, Any] = response.decode_json()
    return value


# -- requests -------------------------------------------------------------------------------


def test_get_response_shape(server: StdlibServer) -> None:
    async def main() -> Any:
        async with HttpClient() as client:
            return await client.get(server.url + "/echo?a=1")

    response = run(main())
    assert response.status == "HTTP/1.1 200 OK"
    assert (response.status_code, response.reason, response.http_version) == (200, "OK", "1.1")
    assert response.is_ok and response.is_json()
    assert isinstance(response.headers, Headers)
    echo = echo_of(response)
    assert echo["method"] == "GET" and echo["path"] == "/echo?a=1"
    assert echo["headers"]["host"] == f"127.0.0.1:{server.server_address[1]}"
    assert echo["headers"]["accept-encoding"] == "gzip, deflate"
    assert "connection" not in echo["headers"]  # HTTP/1.1 keep-alive is the default


@pytest.mark.parametrize("method", ["PUT", "PATCH", "DELETE", "OPTIONS", "QUERY"])
def test_every_method(server: StdlibServer, method: str) -> None:
    async def main() -> Any:
        async with HttpClient() as client:
            if method == "PUT":
                return await client.put(server.url + "/echo", json={"m": method})
            if method == "PATCH":
                return await client.patch(server.url + "/echo", data=b"patch-body")
            if method == "DELETE":
                return await client.delete(server.url + "/echo")
            if method == "OPTIONS":
                return await client.options(server.url + "/echo")
            return await client.request(method, server.url + "/echo", b"q")

    echo = echo_of(run(main()))
    assert echo["method"] == method
    expected_body = {"PUT": '{"m":"PUT"}', "PATCH": "patch-body", "QUERY": "q"}.get(method, "")
    assert echo["body"] == expected_body


def test_head_has_headers_and_no_body(server: StdlibServer) -> None:
    async def main() -> tuple[Any, Any]:
        async with HttpClient() as client:
            head = await client.head(server.url + "/gzip")
            after = await client.get(server.url + "/echo")  # same connection, still in sync
            return head, after

    head, after = run(main())
    assert head.status_code == 200 and head.body == b""
    assert int(head.headers.get("content-length")) > 0
    assert echo_of(after)["method"] == "GET"
    assert server.connections == 1


def test_post_json_form_text_and_bytes(server: StdlibServer) -> None:
    async def main() -> list[dict[str, Any]]:
        async with HttpClient() as client:
            return [
                echo_of(await client.post(server.url + "/echo", json={"name": "test", "value": 123})),
                echo_of(await client.post(server.url + "/echo", data={"a": "1", "b": ["x", "y"]})),
                echo_of(await client.post(server.url + "/echo", data="h\u00e9")),
                echo_of(await client.post(server.url + "/echo", data=b"\x00\xff")),
                echo_of(await client.post(server.url + "/echo")),
            ]

    as_json, form, text, raw, empty = run(main())
    assert json.loads(as_json["body"]) == {"name": "test", "value": 123}
    assert as_json["headers"]["content-type"] == "application/json"
    assert form["body"] == "a=1&b=x&b=y"
    assert form["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert text["body"].encode("latin-1").decode() == "h\u00e9"
    assert raw["body"] == "\x00\xff" and raw["headers"]["content-length"] == "2"
    assert empty["headers"]["content-length"] == "0"


def test_chunked_upload_from_async_iterator(server: StdlibServer) -> None:
    async def parts() -> AsyncIterator[bytes]:
        for piece in (b"first,", b"", b"second,", b"x" * 100_000):
            await sleep(0)
            yield piece

    async def main() -> dict[str, Any]:
        async with HttpClient() as client:
            return echo_of(await client.post(server.url + "/echo", data=parts()))

    echo = run(main())
    assert echo["headers"]["transfer-encoding"] == "chunked"
    assert "content-length" not in echo["headers"]
    assert echo["body"] == "first,second," + "x" * 100_000


def test_params_headers_and_base_url(server: StdlibServer) -> None:
    async def main() -> list[dict[str, Any]]:
        client_headers = Headers()
        client_headers.set("Authorization", "Bearer client")
        client_headers.set("X-Client", "1")
        async with HttpClient(headers=client_headers, base_url=server.url + "/") as client:
            request_headers = Headers()
            request_headers.set("Authorization", "Bearer request")
            return [
                echo_of(await client.get("/echo", params={"q": "a b", "n": [1, 2]})),
                echo_of(await client.get("echo?x=1", params=[("y", "2")], headers={"X-Request": "r"})),
                echo_of(await client.request("GET", "/echo", extra_headers=request_headers)),
            ]

    first, second, third = run(main())
    assert first["path"] == "/echo?q=a+b&n=1&n=2"
    assert first["headers"]["authorization"] == "Bearer client"
    assert second["path"] == "/echo?x=1&y=2"
    assert second["headers"]["x-request"] == "r" and second["headers"]["x-client"] == "1"
    assert third["headers"]["authorization"] == "Bearer request"  # the request's own headers win


def test_client_headers_changed_between_requests_are_sent(server: StdlibServer) -> None:
    async def main() -> list[str | None]:
        async with HttpClient() as client:
            seen = []
            for value in ("one", "two", None):
                if value is None:
                    client.headers.delete("X-Tag")
                else:
                    client.headers.set("X-Tag", value)
                seen.append(echo_of(await client.get(server.url + "/echo"))["headers"].get("x-tag"))
            return seen

    assert run(main()) == ["one", "two", None]


def test_unicode_path_is_percent_encoded(server: StdlibServer) -> None:
    async def main() -> Any:
        async with HttpClient() as client:
            return await client.get(server.url + "/echo/caf\u00e9 x")

    server.prefix_routes["/echo/"] = server.routes["/echo"]
    assert echo_of(run(main()))["path"] == "/echo/caf%C3%A9%20x"


@pytest.mark.parametrize("path", ["/gzip", "/deflate"])
def test_compressed_bodies_are_decoded(server: StdlibServer, path: str) -> None:
    async def main() -> Any:
        async with HttpClient() as client:
            return await client.get(server.url + path)

    response = run(main())
    assert response.decode_json() == {"compressed": path[1:]}
    assert response.headers.get("content-encoding") == path[1:]


def test_chunked_and_close_delimited_responses(raw_server: StartRaw) -> None:
    def script(conn: socket.socket, index: int) -> None:
        read_request(conn)
        if index == 0:
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
            time.sleep(0.05)
            conn.sendall(b"2\r\nde\r\n0\r\n\r\n")
        else:
            conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil ")
            time.sleep(0.05)
            conn.sendall(b"close")

    raw = raw_server(script)

    async def main() -> list[bytes]:
        async with HttpClient() as client:
            chunked = await client.get(raw.url)
            closed = await client.get(raw.url)
            return [chunked.body, closed.body]

    assert run(main()) == [b"abcde", b"until close"]


def test_status_errors_are_responses_until_raise_for_status(server: StdlibServer) -> None:
    async def main() -> Any:
        async with HttpClient() as client:
            return await client.get(server.url + "/status/404")

    response = run(main())
    assert response.status_code == 404 and not response.is_ok
    with pytest.raises(HTTPStatusError) as info:
        response.raise_for_status()
    assert info.value.response is response


# -- keep-alive pool ------------------------------------------------------------------------


def test_keep_alive_reuses_one_connection(server: StdlibServer) -> None:
    async def main() -> int:
        async with HttpClient() as client:
            for i in range(20):
                response = await client.get(server.url + f"/echo?i={i}")
                assert echo_of(response)["path"] == f"/echo?i={i}"
            await client.post(server.url + "/echo", json=[1])
            await client.get(server.url + "/gzip")
            return client.pool.connections_opened

    assert run(main()) == 1
    assert server.connections == 1 and server.requests == 22


def test_per_host_limit_with_concurrent_tasks(server: StdlibServer) -> None:
    async def worker(client: HttpClient, n: int) -> list[str]:
        return [echo_of(await client.get(server.url + f"/echo?w={n}&i={i}"))["path"] for i in range(5)]

    async def main() -> list[list[str]]:
        async with HttpClient(max_connections_per_host=3) as client:
            tasks = [await spawn(worker(client, n)) for n in range(10)]
            return [await task.join() for task in tasks]

    results = run(main())
    assert results == [[f"/echo?w={n}&i={i}" for i in range(5)] for n in range(10)]
    assert server.connections <= 3


def test_idle_connections_expire(server: StdlibServer) -> None:
    async def main() -> None:
        async with HttpClient(keepalive_expiry=0.5) as client:
            await client.get(server.url + "/echo")
            await client.get(server.url + "/echo")
            await sleep(0.7)
            await client.get(server.url + "/echo")

    run(main())
    assert server.connections == 2


def test_connection_closed_by_server_is_detected_before_reuse(raw_server: StartRaw) -> None:
    def script(conn: socket.socket, index: int) -> None:
        read_request(conn)
        conn.sendall(response_bytes(b"conn %d" % index))  # keep-alive promised, then closed

    raw = raw_server(script)

    async def main() -> list[bytes]:
        async with HttpClient() as client:
            first = await client.get(raw.url)
            await until(lambda: raw.finished == 1, message="the server never closed the first connection")
            second = await client.get(raw.url)
            return [first.body, second.body]

    assert run(main()) == [b"conn 0", b"conn 1"]


def test_a_post_is_not_sent_on_a_connection_the_server_just_closed(raw_server: StartRaw) -> None:
    # Every reuse is checked first (a zero-timeout poll sees the server's close): the POST, which
    # is never sent twice, goes once, on a new connection.
    def script(conn: socket.socket, index: int) -> None:
        read_request(conn)
        conn.sendall(response_bytes(b"conn %d" % index))  # keep-alive promised, then closed

    raw = raw_server(script)

    async def main() -> bytes:
        async with HttpClient() as client:
            await client.get(raw.url)
            await until(lambda: raw.finished == 1, message="the server never closed the first connection")
            return (await client.post(raw.url, data=b"once")).body

    assert run(main()) == b"conn 1"
    assert raw.connections == 2


def test_stale_connection_is_retried_once_for_idempotent_requests(raw_server: StartRaw) -> None:
    # The second request on each connection is read, then the connection is dropped without an
    # answer (as a server closing an idle connection at that moment does).
    def script(conn: socket.socket, index: int) -> None:
        read_request(conn)
        conn.sendall(response_bytes(b"first on %d" % index))
        read_request(conn)

    raw = raw_server(script)

    async def main() -> tuple[bytes, bytes, type[BaseException] | None]:
        async with HttpClient() as client:
            first = await client.get(raw.url)
            retried = await client.put(raw.url, data=b"idempotent")
            error: type[BaseException] | None = None
            try:
                await client.post(raw.url, data=b"not idempotent")
            except RemoteProtocolError as exc:
                error = type(exc)
            return first.body, retried.body, error

    first, retried, error = run(main())
    assert first == b"first on 0"
    assert retried == b"first on 1"  # the PUT went again on a new connection
    assert error is RemoteProtocolError  # the POST is not repeated
    assert raw.connections == 2


def test_unread_stream_is_not_reused(server: StdlibServer) -> None:
    @server.route("/slow-stream")
    def slow_stream(handler: Any) -> None:
        handler.send_chunked([b"a", b"b", b"c"], "application/octet-stream", delay=0.05)

    async def main() -> None:
        async with HttpClient() as client:
            response = await client.stream_get(server.url + "/slow-stream")
            async with response:
                async for _ in response.body:
                    break
            assert client.pool.idle_connections() == 0
            await client.get(server.url + "/echo")

    run(main())
    assert server.connections == 2


# -- errors ---------------------------------------------------------------------------------


def test_connection_refused() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()

    async def main() -> None:
        async with HttpClient() as client:
            await client.get(f"http://127.0.0.1:{port}/")

    with pytest.raises(ConnectError):
        run(main())


@pytest.mark.parametrize("url", ["ftp://x/", "http:///nohost", "http://h:notaport/", "relative/path"])
def test_bad_urls(url: str) -> None:
    async def main() -> None:
        async with HttpClient() as client:
            await client.get(url)

    with pytest.raises(LocalProtocolError):
        run(main())


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        b"HTTP/1.1 200 OK\r\nContent-",
        b"",
    ],
    ids=["content-length", "chunked", "head", "nothing"],
)
def test_server_dying_mid_response_raises(raw_server: StartRaw, reply: bytes) -> None:
    def script(conn: socket.socket, index: int) -> None:
        read_request(conn)
        conn.sendall(reply)

    raw = raw_server(script)

    async def main() -> None:
        async with HttpClient() as client:
            await client.get(raw.url)

    with pytest.raises(RemoteProtocolError, match="closed the connection"):
        run(main())


def test_malformed_response(raw_server: StartRaw) -> None:
    def script(conn: socket.socket, index: int) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab")

    raw = raw_server(script)

    async def main() -> None:
        async with HttpClient() as client:
            await client.get(raw.url)

    with pytest.raises(RemoteProtocolError, match="malformed"):
        run(main())


def test_closed_client_refuses_requests(server: StdlibServer) -> None:
    async def main() -> None:
        client = HttpClient()
        await client.get(server.url + "/echo")
        await client.aclose()
        await client.get(server.url + "/echo")

    with pytest.raises(ClosedResourceError):
        run(main())


def test_close_wakes_a_waiting_request(raw_server: StartRaw) -> None:
    request_read = threading.Event()

    def script(conn: socket.socket, index: int) -> None:
        read_request(conn)
        request_read.set()
        wait_for_close(conn)

    raw = raw_server(script)

    async def closer(client: HttpClient) -> None:
        await until(request_read.is_set, message="the request never arrived")  # it now waits for an answer
        client.close()

    async def main() -> float:
        client = HttpClient()
        await spawn(closer(client))
        started = time.monotonic()
        try:
            await client.get(raw.url)
        except ClosedResourceError:
            return time.monotonic() - started
        raise AssertionError("expected ClosedResourceError")

    # Woken by close(): the server never answers (only the hang bound could end it otherwise).
    assert run(main()) < HANG_TIMEOUT


# -- redirects ------------------------------------------------------------------------------


def add_redirects(server: StdlibServer) -> None:
    @server.route("/redirect")
    def redirect(handler: Any) -> None:
        query = handler.query
        handler.read_body()
        status = int(query.get("status", "302"))
        handler.send_body(b"moved", status=status, headers=[("Location", query["to"])])

    @server.route("/loop")
    def loop(handler: Any) -> None:
        handler.send_body(b"", status=302, headers=[("Location", "/loop")])


def test_redirects_are_off_by_default(server: StdlibServer) -> None:
    add_redirects(server)

    async def main() -> Any:
        async with HttpClient() as client:
            return await client.get(server.url + "/redirect?to=/echo")

    response = run(main())
    assert response.status_code == 302 and response.headers.get("location") == "/echo"


@pytest.mark.parametrize(
    ("status", "method", "body"), [(302, "GET", ""), (303, "GET", ""), (307, "POST", "data")]
)
def test_redirects_followed_when_asked(server: StdlibServer, status: int, method: str, body: str) -> None:
    add_redirects(server)

    async def main() -> tuple[dict[str, Any], int]:
        async with HttpClient(follow_redirects=True) as client:
            response = await client.post(
                server.url + f"/redirect?status={status}&to=/echo%3Fdone%3D1", data=b"data"
            )
            return echo_of(response), client.pool.connections_opened

    echo, opened = run(main())
    assert echo["method"] == method and echo["body"] == body and echo["path"] == "/echo?done=1"
    assert opened == 1  # the redirect's body was drained, its connection reused


def test_redirect_loop_is_bounded(server: StdlibServer) -> None:
    add_redirects(server)

    async def main() -> None:
        async with HttpClient(follow_redirects=True, max_redirects=3) as client:
            await client.get(server.url + "/loop")

    with pytest.raises(TooManyRedirects):
        run(main())
    assert server.requests == 4


def test_cross_origin_redirect_drops_authorization(server: StdlibServer) -> None:
    other = StdlibServer().start()
    try:
        add_redirects(server)

        async def main() -> dict[str, Any]:
            async with HttpClient() as client:
                response = await client.get(
                    server.url + f"/redirect?to={other.url}/echo",
                    headers={"Authorization": "secret", "X-Keep": "1"},
                    follow_redirects=True,
                )
                return echo_of(response)

        echo = run(main())
    finally:
        other.stop()
    assert "authorization" not in echo["headers"] and echo["headers"]["x-keep"] == "1"


def test_timeout_object() -> None:
    assert Timeout.coerce(None) == Timeout(None, None, None, None, None)
    assert Timeout.coerce(Timeout(total=1.0)).total == 1.0


# -- request heads: a request's own headers added to the cached plain head ------------------------


@pytest.mark.parametrize(
    ("method", "client_headers", "request_headers"),
    [
        ("GET", None, {"traceparent": "00-1-2-01", "X-Two": "2"}),  # only added: the cached head + lines
        ("GET", {"X-Client": "c"}, {"x-client": "request"}),  # replaces a client header in place
        ("GET", None, {"Accept-Encoding": "identity"}),  # replaces a default header
        ("GET", None, {"Host": "other.example"}),  # replaces the Host
        ("GET", None, {"Transfer-Encoding": "chunked"}),  # dropped for a request without a body
        ("DELETE", None, {"X-One": "1"}),
        ("POST", None, {"X-One": "1"}),  # Content-Length: 0 comes last
        ("HEAD", {"X-Client": "c"}, [("X-Multi", "a"), ("X-Multi", "b")]),
    ],
)
def test_request_headers_give_the_head_the_general_path_builds(
    raw_server: StartRaw, method: str, client_headers: dict[str, str] | None, request_headers: Any
) -> None:
    heads: list[bytes] = []

    def script(conn: socket.socket, index: int) -> None:
        while request := read_request(conn):
            heads.append(request)
            conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")

    raw = raw_server(script)

    async def main() -> None:
        async with HttpClient(headers=client_headers) as client:
            # The plain head is cached by the first request; the second adds its headers to it.
            await client.request(method, raw.url + "/a")
            await client.request(method, raw.url + "/a", headers=Headers(request_headers))
            # The general path: a query string makes the client build the head field by field.
            await client.request(method, raw.url + "/a", headers=Headers(request_headers), params={"q": "1"})

    run(main())
    plain, fast, general = heads
    assert fast.replace(b"/a HTTP", b"/a?q=1 HTTP", 1) == general
    assert plain.startswith(method.encode() + b" /a HTTP/1.1\r\n")
