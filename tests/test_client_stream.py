"""Streaming responses: SSE (data as JSON, ``[DONE]``, full events), JSON lines, raw chunks,
gzip/deflate decoded incrementally, error responses, and servers that die mid-stream.

Chunk boundaries are exercised twice: exhaustively-ish with hypothesis against the body iterators
fed by an in-memory reader, and over real sockets with the payload sent in separate pieces.
"""

from __future__ import annotations

import gc
import json
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from client_servers import RawServer, StdlibServer, read_request, sse_chunked_pieces, wait_for_close
from hypothesis import given, settings
from hypothesis import strategies as st

from flowno_io._errors import HTTPStatusError, ReadError, RemoteProtocolError
from flowno_io.client.client import HttpClient, Timeout
from flowno_io.client.response_stream import (
    ErrStreamingResponse,
    HTTPException,
    OkStreamingResponse,
    _JSONLines,
    _SSEData,
    _SSEEvents,
    streaming_response_is_ok,
)
from flowno_io.protocol.headers import Headers
from flowno_io.protocol.sse import ServerSentEvent
from flowno_io.testing import run

StartRaw = Callable[..., RawServer]

SSE_PAYLOAD = (
    b": comment first\n\n"
    b'data: {"choices": [{"delta": {"content": "Hel"}}]}\n\n'
    b'event: update\r\nid: 7\r\nretry: 1500\r\ndata: {"n": 1,\r\ndata: "m": 2}\r\n\r\n'
    b"data: plain text, not JSON\r\r"
    b"data: 42\n\n"
    b"data: [DONE]\n\n"
    b'data: {"after": "done"}\n\n'
)
SSE_DATA = [{"choices": [{"delta": {"content": "Hel"}}]}, {"n": 1, "m": 2}, "plain text, not JSON", 42]
NDJSON_PAYLOAD = b'{"id": 0}\n\n{"id": 1}\r\n[1, 2]\nnot json\n"last"'
NDJSON_ITEMS = [{"id": 0}, {"id": 1}, [1, 2], "not json", "last"]


@pytest.fixture
def server() -> Iterator[StdlibServer]:
    stdlib = StdlibServer().start()
    yield stdlib
    stdlib.stop()


async def collect(response: OkStreamingResponse[Any] | ErrStreamingResponse) -> list[Any]:
    assert streaming_response_is_ok(response), response.status
    return [item async for item in response.body]


# -- body iterators over an in-memory reader (every chunk split) ------------------------------


class MemoryReader:
    """Stands in for ``BodyReader``: hands out the given pieces, then ``b""``."""

    def __init__(self, pieces: list[bytes]) -> None:
        self.pieces = list(pieces)
        self.owner: object = None
        self.finished = False

    def claim(self, owner: object) -> None:
        assert self.owner in (None, owner)
        self.owner = owner

    async def read(self) -> bytes:
        return self.pieces.pop(0) if self.pieces else b""

    def finish(self) -> None:
        self.finished = True

    def close(self) -> None:
        pass


def drain(iterator: Any) -> list[Any]:
    async def main() -> list[Any]:
        return [item async for item in iterator]

    return run(main())


cuts = st.lists(st.integers(min_value=1, max_value=400), max_size=30)


@settings(max_examples=150, deadline=None)
@given(cuts)
def test_sse_data_across_any_split(positions: list[int]) -> None:
    reader = MemoryReader(list(sse_chunked_pieces(SSE_PAYLOAD, positions)))
    assert drain(_SSEData(reader)) == SSE_DATA  # type: ignore[arg-type]
    assert reader.finished  # [DONE] stopped reading: the connection may be reused


@settings(max_examples=150, deadline=None)
@given(cuts)
def test_sse_events_across_any_split(positions: list[int]) -> None:
    events = drain(_SSEEvents(MemoryReader(list(sse_chunked_pieces(SSE_PAYLOAD, positions)))))  # type: ignore[arg-type]
    assert [event.data for event in events][-2:] == ["[DONE]", '{"after": "done"}']
    update = events[1]
    assert update == ServerSentEvent('{"n": 1,\n"m": 2}', event="update", id="7", retry=1500)
    assert events[2].id == "7"  # the last event ID persists


@settings(max_examples=150, deadline=None)
@given(cuts)
def test_json_lines_across_any_split(positions: list[int]) -> None:
    items = drain(_JSONLines(MemoryReader(list(sse_chunked_pieces(NDJSON_PAYLOAD, positions)))))  # type: ignore[arg-type]
    assert items == NDJSON_ITEMS


def test_chunked_json_document_over_several_lines() -> None:
    document = json.dumps({"a": [1, 2], "b": {"c": None}}, indent=2).encode()
    iterator = _JSONLines(MemoryReader([document[:7], document[7:]]), document_fallback=True)  # type: ignore[arg-type]
    assert drain(iterator) == [{"a": [1, 2], "b": {"c": None}}]


# -- SSE over sockets -----------------------------------------------------------------------


def sse_route(server: StdlibServer, payload: bytes, *, pieces: int = 1, delay: float = 0.0) -> None:
    @server.route("/sse")
    def sse(handler: Any) -> None:
        handler.read_body()
        if pieces == 1:  # the whole body, last chunk included, in one write
            handler.start_chunked("text/event-stream; charset=utf-8")
            handler.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload))
            handler.wfile.flush()
            return
        step = max(1, len(payload) // pieces)
        parts = [payload[i : i + step] for i in range(0, len(payload), step)]
        handler.send_chunked(parts, "text/event-stream; charset=utf-8", delay=delay)


@pytest.mark.parametrize("pieces", [1, 7, len(SSE_PAYLOAD)])
def test_sse_stream_post(server: StdlibServer, pieces: int) -> None:
    sse_route(server, SSE_PAYLOAD, pieces=pieces, delay=0.001 if pieces > 1 else 0.0)

    async def main() -> tuple[list[Any], int]:
        async with HttpClient() as client:
            response = await client.stream_post(server.url + "/sse", json={"model": "m", "stream": True})
            items = await collect(response)
            await client.get(server.url + "/echo")
            return items, client.pool.connections_opened

    items, opened = run(main())
    assert items == SSE_DATA
    if pieces == 1:
        # The end of the body arrived with [DONE]: the connection was kept. (When it has not
        # arrived yet, the connection is closed rather than waited on.)
        assert opened == 1 and server.connections == 1


def test_sse_events_method(server: StdlibServer) -> None:
    sse_route(server, SSE_PAYLOAD)

    async def main() -> list[ServerSentEvent]:
        async with HttpClient() as client:
            response = await client.stream_get(server.url + "/sse")
            assert streaming_response_is_ok(response)
            return [event async for event in response.events()]

    events = run(main())
    assert len(events) == 6  # the comment-only block dispatches nothing
    assert events[1].event == "update" and events[1].retry == 1500


def test_body_and_events_cannot_both_read(server: StdlibServer) -> None:
    sse_route(server, SSE_PAYLOAD)

    async def main() -> None:
        async with HttpClient() as client:
            response = await client.stream_get(server.url + "/sse")
            assert streaming_response_is_ok(response)
            async with response:
                await response.body.__anext__()
                with pytest.raises(RuntimeError, match="already being read"):
                    await response.events().__anext__()

    run(main())


def test_sse_without_done_ends_with_the_body(server: StdlibServer) -> None:
    sse_route(server, b"data: 1\n\ndata: 2\n\ndata: unterminated")

    async def main() -> list[Any]:
        async with HttpClient() as client:
            return await collect(await client.stream_get(server.url + "/sse"))

    assert run(main()) == [1, 2]


def test_sse_over_a_close_delimited_body(raw_server: StartRaw) -> None:
    def script(conn: socket.socket, index: int) -> None:
        read_request(conn)
        conn.sendall(b'HTTP/1.0 200 OK\r\nContent-Type: text/event-stream\r\n\r\ndata: {"a": 1}\n\n')
        time.sleep(0.02)
        conn.sendall(b'data: {"a": 2}\n\n')

    raw = raw_server(script)

    async def main() -> list[Any]:
        async with HttpClient() as client:
            return await collect(await client.stream_get(raw.url))

    assert run(main()) == [{"a": 1}, {"a": 2}]


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: 1000\r\n\r\n",
    ],
    ids=["chunked", "content-length"],
)
def test_server_killed_mid_stream_raises(raw_server: StartRaw, head: bytes) -> None:
    chunked = b"chunked" in head

    def script(conn: socket.socket, index: int) -> None:
        read_request(conn)
        event = b'data: {"a": 1}\n\n'
        conn.sendall(head + (b"%x\r\n%s\r\n" % (len(event), event) if chunked else event))
        # (no pause needed: bytes already queued at the client stay readable after a reset)
        if index == 0:
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")  # RST

    raw = raw_server(script)
    received: list[Any] = []

    async def main() -> None:
        async with HttpClient() as client:
            response = await client.stream_get(raw.url)
            assert streaming_response_is_ok(response)
            async for item in response.body:
                received.append(item)

    for _ in range(2):  # killed with a reset (first connection), then with a plain close
        received.clear()
        with pytest.raises((ReadError, RemoteProtocolError)):
            run(main())
        assert received == [{"a": 1}]


# -- JSON lines and bytes ---------------------------------------------------------------------


def test_httpbin_style_stream(server: StdlibServer) -> None:
    async def main() -> list[Any]:
        async with HttpClient() as client:
            return await collect(await client.stream_get(server.url + "/stream/3"))

    items = run(main())
    assert [item["id"] for item in items] == [0, 1, 2]
    assert items[0]["url"].endswith("/stream/3")


@pytest.mark.parametrize("content_type", ["application/x-ndjson", "application/jsonl"])
def test_ndjson_stream_in_pieces(server: StdlibServer, content_type: str) -> None:
    @server.route("/ndjson")
    def ndjson(handler: Any) -> None:
        handler.send_chunked(
            list(sse_chunked_pieces(NDJSON_PAYLOAD, range(3, 60, 4))), content_type, delay=0.001
        )

    async def main() -> list[Any]:
        async with HttpClient() as client:
            return await collect(await client.stream_get(server.url + "/ndjson"))

    assert run(main()) == NDJSON_ITEMS


def test_other_types_stream_raw_bytes(server: StdlibServer) -> None:
    @server.route("/bytes")
    def raw_bytes(handler: Any) -> None:
        handler.send_chunked([b"\x00\x01", b"\x02"], "application/octet-stream", delay=0.01)

    async def main() -> list[Any]:
        async with HttpClient() as client:
            response = await client.stream_get(server.url + "/bytes")
            return await collect(response)

    chunks = run(main())
    assert b"".join(chunks) == b"\x00\x01\x02" and all(isinstance(chunk, bytes) for chunk in chunks)


def test_iter_bytes_of_an_event_stream(server: StdlibServer) -> None:
    sse_route(server, SSE_PAYLOAD)

    async def main() -> bytes:
        async with HttpClient() as client:
            response = await client.stream_get(server.url + "/sse")
            assert streaming_response_is_ok(response)
            return b"".join([chunk async for chunk in response.iter_bytes()])

    assert run(main()) == SSE_PAYLOAD


# -- compression ------------------------------------------------------------------------------


@pytest.mark.parametrize(("coding", "wbits"), [("gzip", 31), ("deflate", 15)])
def test_compressed_stream_is_decoded_incrementally(server: StdlibServer, coding: str, wbits: int) -> None:
    first_item_seen = threading.Event()
    seen_before_rest: list[bool] = []

    @server.route("/compressed-sse")
    def compressed(handler: Any) -> None:
        compressor = zlib.compressobj(wbits=wbits)
        handler.start_chunked("text/event-stream", headers=[("Content-Encoding", coding)])
        handler.send_chunk(compressor.compress(b'data: {"i": 0}\n\n') + compressor.flush(zlib.Z_SYNC_FLUSH))
        # The rest is sent only once the client has decoded the first event.
        seen_before_rest.append(first_item_seen.wait(5))
        for i in range(1, 4):
            handler.send_chunk(
                compressor.compress(b'data: {"i": %d}\n\n' % i) + compressor.flush(zlib.Z_SYNC_FLUSH)
            )
        handler.send_chunk(compressor.flush())
        handler.end_chunked()

    async def main() -> list[Any]:
        items = []
        async with HttpClient() as client:
            response = await client.stream_get(server.url + "/compressed-sse")
            assert streaming_response_is_ok(response)
            async for item in response.body:
                items.append(item)
                first_item_seen.set()
        return items

    assert run(main()) == [{"i": i} for i in range(4)]
    assert seen_before_rest == [True]


def test_corrupt_compressed_stream_raises(server: StdlibServer) -> None:
    @server.route("/corrupt")
    def corrupt(handler: Any) -> None:
        handler.send_chunked(
            [b"this is not gzip at all"], "application/octet-stream", headers=[("Content-Encoding", "gzip")]
        )

    async def main() -> None:
        async with HttpClient() as client:
            await collect(await client.stream_get(server.url + "/corrupt"))

    with pytest.raises(RemoteProtocolError, match="corrupt gzip"):
        run(main())


# -- error responses and lifecycle ------------------------------------------------------------


def test_error_status_gives_err_streaming_response(server: StdlibServer) -> None:
    @server.route("/fail")
    def fail(handler: Any) -> None:
        handler.send_chunked(
            [b'{"error": ', b'"overloaded"}'], "application/json", headers=[("X-Why", "busy")]
        )
        # (a chunked error body: read whole into bytes)

    async def main() -> tuple[Any, Any, Any]:
        async with HttpClient() as client:
            failed = await client.stream_post(server.url + "/status/503", json={})
            chunked = await client.stream_get(server.url + "/fail")
            return failed, await failed.decode_json(), chunked

    failed, decoded, chunked = run(main())
    assert isinstance(failed, ErrStreamingResponse) and not streaming_response_is_ok(failed)
    assert failed.status == "HTTP/1.1 503 Service Unavailable" and failed.status_code == 503
    assert decoded == {"status": 503} and failed.is_json()
    with pytest.raises(HTTPException) as info:
        failed.raise_for_status()
    assert isinstance(info.value, HTTPStatusError) and info.value.response is failed
    assert isinstance(chunked, OkStreamingResponse)  # 200, application/json chunked → parsed
    assert chunked.headers.get("x-why") == "busy"


def test_chunked_error_body_is_bytes(raw_server: StartRaw) -> None:
    def script(conn: socket.socket, index: int) -> None:
        read_request(conn)
        conn.sendall(
            b"HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
            b'9\r\n{"retry":\r\n3\r\n 1}\r\n0\r\n\r\n'
        )
        wait_for_close(conn)

    raw = raw_server(script)

    async def main() -> Any:
        async with HttpClient() as client:
            return await client.stream_get(raw.url)

    response = run(main())
    assert isinstance(response, ErrStreamingResponse)
    assert response.body == b'{"retry": 1}' and response.reason == "Too Many Requests"


def test_abandoned_stream_frees_its_pool_slot(server: StdlibServer) -> None:
    @server.route("/long")
    def long_stream(handler: Any) -> None:
        handler.send_chunked([b"x"] * 20, "application/octet-stream", delay=0.02)

    async def main() -> int:
        async with HttpClient(max_connections_per_host=1, timeout=Timeout(pool=0.5)) as client:
            response = await client.stream_get(server.url + "/long")
            assert streaming_response_is_ok(response)
            await response.body.__anext__()
            del response
            gc.collect()
            return (await client.get(server.url + "/echo")).status_code

    assert run(main()) == 200


def test_seed_dataclass_shapes() -> None:
    headers = Headers({"Content-Type": "application/json"})
    error = ErrStreamingResponse(None, "HTTP/1.1 500 Internal Server Error", headers, b'{"e": 1}')  # type: ignore[arg-type]
    assert (error.client, error.status, error.headers, error.body) == (
        None,
        error.status,
        headers,
        b'{"e": 1}',
    )
    assert (
        error.status_code == 500 and error.reason == "Internal Server Error" and error.http_version == "1.1"
    )
    assert not error.is_ok and error.is_json()
    malformed = ErrStreamingResponse(None, "garbage", headers, b"")  # type: ignore[arg-type]
    assert malformed.status_code == 0
