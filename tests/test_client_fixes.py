"""HttpClient small correctness fixes (issue 16): header injection is a ``LocalProtocolError``,
``params`` encode ``None``/booleans as httpx does, IDNA host names, and one rule for what a
streamed ``application/json`` body yields whatever its framing. Peers: httpbin (werkzeug) and the
stdlib ``http.server`` (chunked + gzip, as nginx sends it)."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from typing import Any

import pytest
from client_httpbin import HttpbinServer, httpbin_server  # noqa: F401  (fixture)
from client_servers import Handler, StdlibServer

from flowno_io import HttpClient
from flowno_io._errors import HttpError, LocalProtocolError
from flowno_io.client.client import OkStreamingResponse, _parse_url
from flowno_io.testing import run


@pytest.fixture
def server() -> Iterator[StdlibServer]:
    stdlib = StdlibServer().start()
    yield stdlib
    stdlib.stop()


def test_crlf_in_header_value_is_local_protocol_error(server: StdlibServer) -> None:
    async def main() -> None:
        async with HttpClient() as client:
            await client.get(server.url + "/echo", headers={"X-Bad": "a\r\nInjected: 1"})

    with pytest.raises(LocalProtocolError) as info:
        run(main())
    assert isinstance(info.value, HttpError) and not isinstance(info.value, ValueError)
    assert "X-Bad" in str(info.value)
    assert server.requests == 0  # nothing was sent


def test_params_none_omitted_and_booleans_lowercase(httpbin_server: HttpbinServer) -> None:  # noqa: F811
    async def main() -> Any:
        async with HttpClient() as client:
            response = await client.get(
                httpbin_server.url + "/get", params={"n": None, "t": True, "f": False, "ids": [1, None, 2]}
            )
            return response.decode_json()

    echoed = run(main())
    assert echoed["args"] == {"t": "true", "f": "false", "ids": ["1", "2"]}
    assert echoed["url"].endswith("/get?t=true&f=false&ids=1&ids=2")


def test_idna_host_in_host_header_and_origin() -> None:
    origin, target, host_header, _, _ = _parse_url("http://Bücher.example:8080/a?b=c")
    assert origin == ("http", "xn--bcher-kva.example", 8080)
    assert host_header == "xn--bcher-kva.example:8080" and target == "/a?b=c"
    with pytest.raises(LocalProtocolError):
        _parse_url("http://" + "ü" * 70 + ".example/")  # a label over 63 characters


_DOCUMENT = {"slideshow": {"title": "Sample", "slides": [{"title": "one"}, {"title": "two"}]}}


def _chunked_gzip_json(handler: Handler) -> None:
    # What nginx sends for a JSON upstream when it gzips: chunked, Content-Encoding: gzip.
    compressed = gzip.compress(json.dumps(_DOCUMENT, indent=2).encode())
    handler.start_chunked("application/json", headers=[("Content-Encoding", "gzip")])
    for start in range(0, len(compressed), 40):
        handler.send_chunk(compressed[start : start + 40])
    handler.end_chunked()


def _length_json(handler: Handler) -> None:
    handler.send_body(json.dumps(_DOCUMENT, indent=2).encode(), content_type="application/json")


def test_stream_json_body_is_the_same_for_every_framing(
    server: StdlibServer,
    httpbin_server: HttpbinServer,  # noqa: F811
) -> None:
    server.route("/chunked-gzip")(_chunked_gzip_json)
    server.route("/length")(_length_json)

    async def items(client: HttpClient, url: str) -> list[Any]:
        response = await client.stream_get(url)
        assert isinstance(response, OkStreamingResponse)
        async with response:
            return [item async for item in response.body]

    async def main() -> list[list[Any]]:
        async with HttpClient() as client:
            return [
                await items(client, server.url + "/chunked-gzip"),
                await items(client, server.url + "/length"),
                await items(client, httpbin_server.url + "/json"),  # Content-Length, indented
                await items(client, httpbin_server.url + "/stream/3"),  # one object per line
            ]

    chunked, length, httpbin_json, lines = run(main())
    assert chunked == length == [_DOCUMENT]
    assert len(httpbin_json) == 1 and httpbin_json[0]["slideshow"]["author"] == "Yours Truly"
    assert [item["id"] for item in lines] == [0, 1, 2]
