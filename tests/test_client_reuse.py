"""One response parser per connection, reused from one exchange to the next.

The parser is the same object for every response of a connection, so a response object kept
from an earlier exchange must neither read nor release a later one's bytes, and what a finished
response exposes (status, reason, version, headers) must not change when the connection carries
the next request. Every kind of response end is followed by another response on the same
connection: llhttp goes on by itself after most, a fresh parser is needed after others.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any

from client_servers import RawServer, read_request, response_bytes, wait_for_close

from flowno_io.client.client import ClientResponse, HttpClient, Timeout
from flowno_io.client.response_stream import streaming_response_is_ok
from flowno_io.testing import run

StartRaw = Callable[..., RawServer]
#: Only bounds a hang (a wrong parser state waits for bytes that never come).
HANG_TIMEOUT = 10.0


def scripted(answers: list[bytes]) -> Callable[[socket.socket, int], None]:
    """A server script answering the requests of its first connection with ``answers``, in order."""

    def script(conn: socket.socket, index: int) -> None:
        if index == 0:
            for answer in answers:
                if not read_request(conn):
                    return
                conn.sendall(answer)
        wait_for_close(conn)

    return script


def test_a_kept_streaming_response_reads_and_closes_nothing_of_the_next_exchange(
    raw_server: StartRaw,
) -> None:
    rest = threading.Event()

    def script(conn: socket.socket, index: int) -> None:
        read_request(conn)
        conn.sendall(response_bytes(b"", headers=["X-Which: old"]))  # (ends with its head)
        read_request(conn)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-Which: new\r\n\r\nfirst")
        rest.wait(HANG_TIMEOUT)
        conn.sendall(b"-half")
        wait_for_close(conn)

    raw = raw_server(script)

    async def main() -> tuple[list[bytes], bytes, str | None, int]:
        async with HttpClient(max_connections_per_host=1, timeout=Timeout(HANG_TIMEOUT)) as client:
            old = await client.stream_get(raw.url + "/old")
            new = await client.stream_get(raw.url + "/new")  # on the connection old's exchange left
            assert streaming_response_is_ok(old) and streaming_response_is_ok(new)
            stale = [chunk async for chunk in old.iter_bytes()]  # (its own body was empty)
            await old.aclose()  # must not close the connection new is being read on
            rest.set()
            body = b"".join([chunk async for chunk in new.iter_bytes()])
            return stale, body, old.headers.get("x-which"), client.pool.connections_opened

    stale, body, which, opened = run(main())
    assert stale == []
    assert body == b"first-half"
    assert which == "old"
    assert opened == 1


def test_a_kept_buffered_reader_takes_nothing_of_the_next_exchange(raw_server: StartRaw) -> None:
    """``read_all``/``read_all_nowait`` of a reader whose exchange ended get its (empty) body."""
    raw = raw_server(scripted([response_bytes(b""), response_bytes(b"second body")]))

    async def main() -> tuple[bytes, bytes | None, bytes]:
        async with HttpClient(max_connections_per_host=1, timeout=Timeout(HANG_TIMEOUT)) as client:
            old = await client.stream_get(raw.url)
            new = await client.stream_get(raw.url)  # (its whole body came with its head)
            assert streaming_response_is_ok(old) and streaming_response_is_ok(new)
            assert old._reader is not None and new._reader is not None
            early = old._reader.read_all_nowait()
            late = await old._reader.read_all()
            return late, early, await new._reader.read_all()

    late, early, second = run(main())
    assert early == b"" and late == b""
    assert second == b"second body"


HEAD_OF_FIVE = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Kind: head\r\n\r\n"


def test_responses_of_every_kind_follow_each_other_on_one_connection(raw_server: StartRaw) -> None:
    answers = [
        response_bytes(b"plain", headers=["X-Kind: length"]),
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\nX-Kind: chunked\r\n\r\n"
        b"3\r\nchu\r\n4\r\nnked\r\n0\r\n\r\n",
        response_bytes(b"after chunks", headers=["X-Kind: length"]),
        b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nX-Kind: not-modified\r\n\r\n",
        b"HTTP/1.1 100 Continue\r\nX-Kind: interim\r\n\r\n"
        + response_bytes(b"final", status="202 Accepted", headers=["X-Kind: final"]),
        b"HTTP/1.1 204 No Content\r\nX-Kind: empty\r\n\r\n",
        HEAD_OF_FIVE,  # (llhttp would take the next response's first 5 bytes as its body)
        response_bytes(b"after head", headers=["X-Kind: length"]),
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 3\r\nX-Kind: one-zero\r\n\r\nold",
        response_bytes(b"last", status="418 I'm a teapot", headers=["X-Kind: length"]),
    ]
    methods = ["GET", "POST", "GET", "GET", "PUT", "DELETE", "HEAD", "GET", "GET", "GET"]
    raw = raw_server(scripted(answers))

    async def main() -> tuple[list[ClientResponse], list[tuple[Any, ...]], int]:
        responses: list[ClientResponse] = []
        seen: list[tuple[Any, ...]] = []
        async with HttpClient(max_connections_per_host=1, timeout=Timeout(HANG_TIMEOUT)) as client:
            for method in methods:
                response = await client.request(method, raw.url)
                assert isinstance(response, ClientResponse)
                responses.append(response)
                seen.append(summary(response))  # as it was when it arrived
            return responses, seen, client.pool.connections_opened

    responses, seen, opened = run(main())
    assert [summary(response) for response in responses] == seen  # none changed since
    assert seen == [
        (200, "OK", "1.1", b"plain", "length"),
        (201, "Created", "1.1", b"chunked", "chunked"),
        (200, "OK", "1.1", b"after chunks", "length"),
        (304, "Not Modified", "1.1", b"", "not-modified"),
        (202, "Accepted", "1.1", b"final", "final"),
        (204, "No Content", "1.1", b"", "empty"),
        (200, "OK", "1.1", b"", "head"),
        (200, "OK", "1.1", b"after head", "length"),
        (200, "OK", "1.0", b"old", "one-zero"),
        (418, "I'm a teapot", "1.1", b"last", "length"),
    ]
    assert opened == 1


def summary(response: ClientResponse) -> tuple[Any, ...]:
    return (
        response.status_code,
        response.reason,
        response.http_version,
        response.body,
        response.headers.get("x-kind"),
    )


def test_bytes_after_a_response_are_not_parsed_into_it_and_the_connection_is_not_reused(
    raw_server: StartRaw,
) -> None:
    unasked = b"HTTP/1.1 404 Extra\r\nX-Extra: yes\r\nContent-Length: 0\r\n\r\n"

    def script(conn: socket.socket, index: int) -> None:
        read_request(conn)
        conn.sendall(response_bytes(b"hi") + (unasked if index == 0 else b""))
        wait_for_close(conn)

    raw = raw_server(script)

    async def main() -> tuple[ClientResponse, ClientResponse, int]:
        async with HttpClient(timeout=Timeout(HANG_TIMEOUT)) as client:
            first = await client.get(raw.url)
            second = await client.get(raw.url)
            assert isinstance(first, ClientResponse) and isinstance(second, ClientResponse)
            return first, second, client.pool.connections_opened

    first, second, opened = run(main())
    assert (first.status_code, first.reason, first.body) == (200, "OK", b"hi")
    assert first.headers.get_all("content-length") == ["2"] and "x-extra" not in first.headers
    assert (second.status_code, second.body) == (200, b"hi")
    assert opened == 2
