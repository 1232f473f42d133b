"""gzip compression (server/compression.py): negotiated, refused, never twice, streams flushed, SSE untouched."""

from __future__ import annotations

import gzip
import socket
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from flowno_io import EventSourceResponse, HttpServer, Request, Response, StreamingResponse, sleep
from flowno_io.server.compression import GZipMiddleware, accepts_gzip

Serve = Callable[[HttpServer], str]
TEXT = "flowno-io compresses this line. " * 100  # 3,200 bytes


def _routes() -> dict[Any, Any]:
    async def text(request: Request) -> Response:
        return Response(TEXT, headers={"ETag": '"v1"'})

    async def small(request: Request) -> Response:
        return Response("tiny")

    async def png(request: Request) -> Response:
        return Response(b"\x89PNG" + b"\0" * 4000, content_type="image/png")

    async def encoded(request: Request) -> Response:
        return Response(
            gzip.compress(TEXT.encode()), headers={"Content-Encoding": "gzip"}, content_type="text/plain"
        )

    async def no_transform(request: Request) -> Response:
        return Response(TEXT, headers={"Cache-Control": "no-transform"})

    async def lines(request: Request) -> StreamingResponse:
        async def produce() -> AsyncIterator[str]:
            for n in range(3):
                yield f"line {n} " * 50 + "\n"
                await sleep(0)

        return StreamingResponse(produce(), content_type="text/plain", headers={"Content-Length": "999"})

    async def waits(request: Request) -> StreamingResponse:
        async def produce() -> AsyncIterator[str]:
            yield "first piece\n"
            await sleep(30)  # the test reads the first piece before this ends
            yield "never\n"

        return StreamingResponse(produce(), content_type="text/plain")

    async def events(request: Request) -> EventSourceResponse:
        return EventSourceResponse(iter([TEXT, TEXT]), ping_interval=None)

    return {
        "/text": text,
        "/small": small,
        "/png": png,
        "/encoded": encoded,
        "/no-transform": no_transform,
        "/lines": lines,
        "/waits": waits,
        "/events": events,
    }


@pytest.fixture
def url(serve: Serve) -> str:
    return serve(HttpServer("127.0.0.1", 0, routes=_routes(), middleware=[GZipMiddleware()]))


def _get(url: str, accept: str | None = "gzip") -> httpx.Response:
    headers = {"Accept-Encoding": accept} if accept is not None else {"Accept-Encoding": "identity"}
    return httpx.get(url, headers=headers)


def test_gzip_when_the_client_accepts_it(url: str) -> None:
    response = _get(url + "/text", "br;q=1.0, gzip;q=0.8")
    assert response.headers["content-encoding"] == "gzip"
    assert response.headers["vary"] == "Accept-Encoding"
    assert response.headers["etag"] == 'W/"v1"'  # the compressed bytes differ: weak
    assert int(response.headers["content-length"]) < len(TEXT) / 5
    assert response.text == TEXT  # httpx decoded it


@pytest.mark.parametrize("accept", [None, "gzip;q=0", "br", "*, gzip;q=0"])
def test_no_gzip_when_refused(url: str, accept: str | None) -> None:
    response = _get(url + "/text", accept)
    assert "content-encoding" not in response.headers
    assert response.headers["vary"] == "Accept-Encoding"  # the answer still depends on it
    assert response.headers["etag"] == '"v1"' and response.text == TEXT


@pytest.mark.parametrize("path", ["/small", "/png", "/no-transform"])
def test_small_incompressible_or_no_transform_responses_are_left_alone(url: str, path: str) -> None:
    response = _get(url + path)
    assert "content-encoding" not in response.headers
    assert "vary" not in response.headers or path == "/small"


def test_never_double_encoded(url: str) -> None:
    response = _get(url + "/encoded")
    assert response.headers["content-encoding"] == "gzip"
    assert response.text == TEXT  # one gzip layer: one decode gives the text


def test_head_gets_the_length_a_get_would(url: str) -> None:
    get = _get(url + "/text")
    head = httpx.head(url + "/text", headers={"Accept-Encoding": "gzip"})
    assert head.headers["content-encoding"] == "gzip"
    assert head.headers["content-length"] == get.headers["content-length"] and head.content == b""


def test_streaming_response_is_compressed_and_chunked(url: str) -> None:
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /lines HTTP/1.1\r\nHost: x\r\nAccept-Encoding: gzip\r\nConnection: close\r\n\r\n")
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"content-encoding: gzip" in head.lower()
    assert b"transfer-encoding: chunked" in head.lower() and b"999" not in head  # its length is gone
    decoded = b""
    while body:
        size_line, _, body = body.partition(b"\r\n")
        size = int(size_line, 16)
        decoded += body[:size]
        body = body[size + 2 :]
        if size == 0:
            break
    expected = "".join(f"line {n} " * 50 + "\n" for n in range(3))
    assert gzip.decompress(decoded).decode() == expected


def test_each_streamed_piece_is_flushed_at_once(url: str) -> None:
    """The first piece decodes before the producer yields the next (Z_SYNC_FLUSH)."""
    decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
    with httpx.stream("GET", url + "/waits", headers={"Accept-Encoding": "gzip"}, timeout=10) as response:
        assert response.headers["content-encoding"] == "gzip"
        text = b""
        for raw in response.iter_raw():
            text += decompressor.decompress(raw)
            if b"\n" in text:
                break
    assert text == b"first piece\n"


def test_event_streams_are_never_compressed(url: str) -> None:
    response = _get(url + "/events")
    assert "content-encoding" not in response.headers
    assert response.headers["content-type"] == "text/event-stream"
    assert response.text == f"data: {TEXT}\n\ndata: {TEXT}\n\n"


def test_accept_encoding_parsing() -> None:
    assert accepts_gzip("GZIP") and accepts_gzip("deflate, gzip;q=0.001") and accepts_gzip("x-gzip")
    assert not accepts_gzip("gzip;q=0.000") and not accepts_gzip("gzip;q=bad") and not accepts_gzip("")
