"""brotli and zstd content decoding (issue 16, extras ``flowno-io[brotli]``, ``flowno-io[zstd]``):
incremental (whole, byte by byte), the decompression-bomb limit, truncation and corruption as
``RemoteProtocolError``; end to end against httpbin's ``/brotli`` and a stdlib server sending zstd."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import brotli
import pytest
from backports import zstd
from client_httpbin import HttpbinServer, httpbin_server  # noqa: F401  (fixture)
from client_servers import Handler, StdlibServer

from flowno_io import HttpClient
from flowno_io._errors import RemoteProtocolError, TooLargeError
from flowno_io.client.client import OkStreamingResponse
from flowno_io.protocol.decoders import BrotliDecoder, ZstdDecoder, available_encodings, make_decoder
from flowno_io.testing import run

PAYLOAD = b"".join(b"line %d of a compressible body\n" % i for i in range(5000))
CODECS: dict[str, tuple[Callable[[bytes], bytes], type[Any]]] = {
    "br": (brotli.compress, BrotliDecoder),
    "zstd": (zstd.compress, ZstdDecoder),
}


@pytest.fixture
def server() -> Iterator[StdlibServer]:
    stdlib = StdlibServer().start()
    yield stdlib
    stdlib.stop()


@pytest.mark.parametrize("coding", CODECS)
def test_whole_and_byte_by_byte(coding: str) -> None:
    compress, _ = CODECS[coding]
    body = compress(PAYLOAD)
    whole = make_decoder(coding)
    assert whole.decode(body) + whole.flush() == PAYLOAD
    split = make_decoder(coding.upper())
    assert b"".join(split.decode(body[i : i + 1]) for i in range(len(body))) + split.flush() == PAYLOAD


@pytest.mark.parametrize("coding", CODECS)
def test_bomb_limit(coding: str) -> None:
    compress, _ = CODECS[coding]
    bomb = (
        compress(b"\0" * (16 * 1024 * 1024))
        if coding == "zstd"
        else brotli.compress(b"\0" * (16 * 1024 * 1024), quality=1)
    )
    assert len(bomb) < 64 * 1024
    decoder = make_decoder(coding, max_output_bytes=1024 * 1024)
    with pytest.raises(TooLargeError) as info:
        decoder.decode(bomb)
    assert info.value.status_hint == 413
    exact = make_decoder(coding, max_output_bytes=len(PAYLOAD))
    assert exact.decode(compress(PAYLOAD)) + exact.flush() == PAYLOAD  # the limit itself is fine


@pytest.mark.parametrize("coding", CODECS)
def test_truncated_and_corrupt(coding: str) -> None:
    compress, _ = CODECS[coding]
    body = compress(PAYLOAD)
    truncated = make_decoder(coding)
    truncated.decode(body[: len(body) // 2])
    with pytest.raises(RemoteProtocolError):
        truncated.flush()
    with pytest.raises(RemoteProtocolError):
        corrupt = make_decoder(coding)
        corrupt.decode(b"\xff" * 64)
        corrupt.flush()


def test_zstd_concatenated_frames() -> None:
    decoder = make_decoder("zstd")
    assert decoder.decode(zstd.compress(b"one ") + zstd.compress(b"two")) + decoder.flush() == b"one two"


def test_end_to_end_brotli_from_httpbin_and_zstd_streamed(
    server: StdlibServer,
    httpbin_server: HttpbinServer,  # noqa: F811
) -> None:
    compressed = zstd.compress(PAYLOAD)

    @server.route("/zstd")
    def zstd_route(handler: Handler) -> None:
        handler.start_chunked("text/plain", headers=[("Content-Encoding", "zstd")])
        for start in range(0, len(compressed), 100):
            handler.send_chunk(compressed[start : start + 100])
        handler.end_chunked()

    async def main() -> tuple[Any, bytes, bytes]:
        async with HttpClient(headers={"Accept-Encoding": available_encodings()}) as client:
            from_httpbin = await client.get(httpbin_server.url + "/brotli")
            buffered = await client.get(server.url + "/zstd")
            streamed = await client.stream_get(server.url + "/zstd")
            assert isinstance(streamed, OkStreamingResponse)
            async with streamed:
                chunks = [chunk async for chunk in streamed.body]
            return from_httpbin, buffered.body, b"".join(chunks)

    from_httpbin, buffered, streamed = run(main())
    assert from_httpbin.headers.get("content-encoding") == "br"
    assert from_httpbin.decode_json()["brotli"] is True
    assert buffered == streamed == PAYLOAD
    assert available_encodings() == "gzip, deflate, br, zstd"
