"""HttpClient timeouts (connect, read, write, pool, total; per client and per request) and limits
(response head size, body size, gzip bombs), each against a server that misbehaves on purpose."""

from __future__ import annotations

import gzip
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest
from client_servers import RawServer, StdlibServer, read_request, response_bytes, wait_for_close
from helpers import HANG_TIMEOUT

from flowno_io._errors import (
    ConnectTimeout,
    PoolTimeout,
    ReadTimeout,
    TimeoutError,
    TooLargeError,
    TotalTimeout,
    WriteTimeout,
)
from flowno_io.client.client import HttpClient, Timeout
from flowno_io.client.response_stream import streaming_response_is_ok
from flowno_io.testing import run

StartRaw = Callable[..., RawServer]


@pytest.fixture
def server() -> Iterator[StdlibServer]:
    stdlib = StdlibServer().start()
    yield stdlib
    stdlib.stop()


def timed(main: Callable[[], Any], error: type[BaseException]) -> float:
    """Run ``main()`` on a flowno loop, expect ``error``, return how long it took.

    Measured from before the request starts, so a timeout of ``t`` takes at least ``t`` (a timer
    never fires early); upper bounds only catch a hang (a loaded machine may be very late).
    """
    started = time.monotonic()
    with pytest.raises(error):
        run(main())
    return time.monotonic() - started


def silent_after_request(conn: socket.socket, index: int) -> None:
    read_request(conn)
    wait_for_close(conn)


# -- timeouts -------------------------------------------------------------------------------


def test_connect_timeout() -> None:
    # A listener that never accepts, with its one-slot backlog taken: SYNs go unanswered.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    filler = socket.socket()
    filler.setblocking(False)
    filler.connect_ex(listener.getsockname())
    try:
        port = listener.getsockname()[1]

        async def main() -> None:
            async with HttpClient(timeout=Timeout(connect=0.2)) as client:
                await client.get(f"http://127.0.0.1:{port}/")

        elapsed = timed(main, ConnectTimeout)
    finally:
        filler.close()
        listener.close()
    assert 0.2 <= elapsed < HANG_TIMEOUT


def test_read_timeout_waiting_for_the_head(raw_server: StartRaw) -> None:
    raw = raw_server(silent_after_request)

    async def main() -> None:
        async with HttpClient(timeout=Timeout(read=0.2)) as client:
            await client.get(raw.url)

    assert 0.2 <= timed(main, ReadTimeout) < HANG_TIMEOUT


def test_a_read_timeout_that_expires_as_the_clock_starts_is_a_read_timeout(raw_server: StartRaw) -> None:
    # The loop's first timed wait starts the clock task, which fires a zero timeout at once (it
    # shuts the socket down): the read must report the timeout, not a connection the server closed.
    raw = raw_server(silent_after_request)

    async def main() -> None:
        async with HttpClient(timeout=Timeout(connect=None, read=0, write=None, pool=None)) as client:
            await client.get(raw.url)

    assert timed(main, ReadTimeout) < HANG_TIMEOUT


def test_read_timeout_inside_a_body(raw_server: StartRaw) -> None:
    def script(conn: socket.socket, index: int) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf")
        wait_for_close(conn)

    raw = raw_server(script)

    async def main() -> None:
        async with HttpClient(timeout=Timeout(read=0.2)) as client:
            await client.get(raw.url)

    assert 0.2 <= timed(main, ReadTimeout) < HANG_TIMEOUT


def test_read_timeout_between_stream_chunks(raw_server: StartRaw) -> None:
    def script(conn: socket.socket, index: int) -> None:
        read_request(conn)
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        event = b'data: {"a":1}\n\n'
        conn.sendall(b"%x\r\n%s\r\n" % (len(event), event))
        wait_for_close(conn)

    raw = raw_server(script)
    received: list[Any] = []

    async def main() -> None:
        async with HttpClient(timeout=Timeout(read=0.2)) as client:
            response = await client.stream_get(raw.url)
            assert streaming_response_is_ok(response)
            async for item in response.body:
                received.append(item)

    assert 0.2 <= timed(main, ReadTimeout) < HANG_TIMEOUT
    assert received == [{"a": 1}]


def test_per_request_timeout_overrides_the_client(raw_server: StartRaw) -> None:
    raw = raw_server(silent_after_request)

    async def main() -> None:
        async with HttpClient(timeout=30.0) as client:
            await client.get(raw.url, timeout=0.2)

    assert 0.2 <= timed(main, ReadTimeout) < HANG_TIMEOUT  # not the client's 30 s


def test_write_timeout(raw_server: StartRaw) -> None:
    def never_reads(conn: socket.socket, index: int) -> None:
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.stopping.wait(5)

    raw = raw_server(never_reads)
    block = b"x" * (1 << 20)

    async def endless() -> AsyncIterator[bytes]:
        while True:
            yield block

    async def main() -> None:
        async with HttpClient(timeout=Timeout(write=0.2)) as client:
            await client.post(raw.url, data=endless())

    assert 0.2 <= timed(main, WriteTimeout) < HANG_TIMEOUT


def test_pool_timeout(server: StdlibServer) -> None:
    @server.route("/hold")
    def hold(handler: Any) -> None:
        handler.send_chunked([b"a", b"b"], "application/octet-stream", delay=0.5)

    async def main() -> None:
        async with HttpClient(max_connections_per_host=1, timeout=Timeout(pool=0.2)) as client:
            held = await client.stream_get(server.url + "/hold")  # keeps the only connection
            try:
                await client.get(server.url + "/echo")
            finally:
                await held.aclose()

    assert 0.2 <= timed(main, PoolTimeout) < HANG_TIMEOUT


def test_pool_waiter_gets_the_released_connection(server: StdlibServer) -> None:
    from flowno import spawn

    async def second(client: HttpClient) -> int:
        return (await client.get(server.url + "/echo")).status_code

    async def main() -> int:
        async with HttpClient(max_connections_per_host=1, timeout=Timeout(pool=2.0)) as client:
            held = await client.stream_get(server.url + "/stream/3")
            waiter = await spawn(second(client))
            assert streaming_response_is_ok(held)
            assert len([item async for item in held.body]) == 3
            return int(await waiter.join())

    assert run(main()) == 200
    assert server.connections == 1


def test_total_timeout_against_a_trickling_server(raw_server: StartRaw) -> None:
    def trickle(conn: socket.socket, index: int) -> None:
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(30):
            conn.sendall(b"1\r\nx\r\n")
            time.sleep(0.05)

    raw = raw_server(trickle)

    async def main() -> None:
        async with HttpClient(timeout=Timeout(read=1.0, total=0.4)) as client:
            await client.get(raw.url)

    # (had the total timeout not fired, the response would end after 1.5 s without an error)
    assert 0.4 <= timed(main, TotalTimeout) < HANG_TIMEOUT


def test_timeouts_are_builtin_timeout_errors() -> None:
    assert issubclass(ReadTimeout, TimeoutError) and issubclass(TotalTimeout, builtins_timeout())


def builtins_timeout() -> type[BaseException]:
    import builtins

    return builtins.TimeoutError


# -- limits ---------------------------------------------------------------------------------


def test_max_header_bytes(raw_server: StartRaw) -> None:
    def huge_head(conn: socket.socket, index: int) -> None:
        read_request(conn)
        conn.sendall(response_bytes(headers=[f"X-Filler-{i}: {'v' * 100}" for i in range(100)]))

    raw = raw_server(huge_head)

    async def main(limit: int) -> int:
        async with HttpClient(max_header_bytes=limit) as client:
            return (await client.get(raw.url)).status_code

    with pytest.raises(TooLargeError) as info:
        run(main(4096))
    assert info.value.status_hint == 431
    assert run(main(64 * 1024)) == 200


def test_max_body_bytes_with_content_length(server: StdlibServer) -> None:
    @server.route("/big")
    def big(handler: Any) -> None:
        handler.send_body(b"b" * 10_000)

    async def main(limit: int | None) -> int:
        async with HttpClient(max_body_bytes=limit) as client:
            return len((await client.get(server.url + "/big")).body)

    with pytest.raises(TooLargeError, match="larger than 1000"):
        run(main(1000))
    assert run(main(10_000)) == 10_000
    assert run(main(None)) == 10_000


def test_max_body_bytes_chunked_and_per_request(server: StdlibServer) -> None:
    @server.route("/big-chunked")
    def big_chunked(handler: Any) -> None:
        handler.send_chunked([b"c" * 1000] * 10, "application/octet-stream")

    async def main() -> int:
        async with HttpClient(max_body_bytes=5000) as client:
            with pytest.raises(TooLargeError):
                await client.get(server.url + "/big-chunked")
            return len((await client.get(server.url + "/big-chunked", max_body_bytes=None)).body)

    assert run(main()) == 10_000


@pytest.mark.parametrize("streamed", [False, True])
def test_gzip_bomb_is_stopped(server: StdlibServer, streamed: bool) -> None:
    bomb = gzip.compress(b"\0" * (20 << 20))  # 20 MiB of zeros in ~20 KiB

    @server.route("/bomb")
    def send_bomb(handler: Any) -> None:
        handler.send_body(bomb, headers=[("Content-Encoding", "gzip")])

    async def main() -> None:
        async with HttpClient(max_body_bytes=1 << 20) as client:
            if not streamed:
                await client.get(server.url + "/bomb")
                return
            response = await client.stream_get(server.url + "/bomb")
            assert streaming_response_is_ok(response)
            async for _ in response.body:
                pass

    assert len(bomb) < 100_000
    with pytest.raises(TooLargeError):
        run(main())


def test_body_limit_ignores_the_length_of_bodiless_responses(raw_server: StartRaw) -> None:
    def script(conn: socket.socket, index: int) -> None:
        while read_request(conn):
            conn.sendall(b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5000\r\n\r\n")

    raw = raw_server(script)

    async def main() -> tuple[int, int]:
        async with HttpClient(max_body_bytes=100) as client:
            not_modified = await client.get(raw.url)
            head = await client.head(raw.url)
            return not_modified.status_code, head.status_code

    assert run(main()) == (304, 304)
    assert raw.connections == 1


def test_body_limit_and_decoding_hold_for_a_body_that_came_with_its_head(raw_server: StartRaw) -> None:
    # Head and body in one write: the client takes the body without waiting (read_all_nowait),
    # and the limit and the content decoding still apply, the limit to the decoded size too.
    packed = gzip.compress(b"a" * 1000)
    replies = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nhello world!",
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(packed), packed),
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(packed), packed),
    ]

    def script(conn: socket.socket, index: int) -> None:
        while read_request(conn) and replies:
            conn.sendall(replies.pop(0))

    raw = raw_server(script)

    async def main() -> tuple[int, int, str, str]:
        async with HttpClient(max_body_bytes=500) as client:
            with pytest.raises(TooLargeError) as raw_limit:
                await client.get(raw.url, max_body_bytes=5)
            decoded = await client.get(raw.url, max_body_bytes=None)
            with pytest.raises(TooLargeError) as decoded_limit:
                await client.get(raw.url)  # 1000 decoded bytes, fewer sent
            return len(decoded.body), decoded.body.count(b"a"), str(raw_limit.value), str(decoded_limit.value)

    size, count, raw_message, decoded_message = run(main())
    assert (size, count) == (1000, 1000)
    assert "5 bytes" in raw_message and "500" in decoded_message
