"""``ClientResponse.url``, ``.history``, ``.elapsed`` and charset-aware ``.text`` (issue 16), against
httpbin (werkzeug) and the stdlib ``http.server``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from client_httpbin import HttpbinServer, httpbin_server  # noqa: F401  (fixture)
from client_servers import Handler, StdlibServer

from flowno_io import HttpClient
from flowno_io.client.client import ClientResponse, ErrStreamingResponse, OkStreamingResponse
from flowno_io.testing import run


@pytest.fixture
def server() -> Iterator[StdlibServer]:
    stdlib = StdlibServer().start()
    yield stdlib
    stdlib.stop()


def test_redirect_history_and_final_url(httpbin_server: HttpbinServer) -> None:  # noqa: F811
    base = httpbin_server.url

    async def main() -> tuple[Any, ...]:
        async with HttpClient(follow_redirects=True) as client:
            followed = await client.get(base + "/redirect/3", params={"x": "1"})
            direct = await client.get(base + "/get")
            streamed = await client.stream_get(base + "/absolute-redirect/2")
            assert isinstance(streamed, OkStreamingResponse)
            async with streamed:
                pass
        async with HttpClient(base_url=base) as client:
            unfollowed = await client.get("/redirect/1", params={"n": 2})
        return followed, direct, streamed, unfollowed

    followed, direct, streamed, unfollowed = run(main())
    assert isinstance(followed, ClientResponse) and followed.status_code == 200
    assert followed.url == base + "/get"
    assert [r.status_code for r in followed.history] == [302, 302, 302]
    assert followed.history[0].url == base + "/redirect/3?x=1"
    assert followed.history[1].url.endswith("/relative-redirect/2")
    assert all(r.body == b"" and r.headers.get("location") for r in followed.history)
    assert direct.url == base + "/get" and direct.history == []
    assert streamed.url == base + "/get" and len(streamed.history) == 2
    assert unfollowed.status_code == 302 and unfollowed.url == base + "/redirect/1?n=2"


def test_elapsed_covers_the_server_delay(httpbin_server: HttpbinServer) -> None:  # noqa: F811
    async def main() -> ClientResponse:
        async with HttpClient() as client:
            response = await client.get(httpbin_server.url + "/delay/0.3")
            assert isinstance(response, ClientResponse)
            return response

    response = run(main())
    assert response.status_code == 200
    assert timedelta(seconds=0.3) <= response.elapsed < timedelta(seconds=60)


def test_text_uses_the_charset(server: StdlibServer, httpbin_server: HttpbinServer) -> None:  # noqa: F811
    latin = "Grüße, café — naïve".replace("—", "-")

    @server.route("/latin1")
    def latin1(handler: Handler) -> None:
        handler.send_body(latin.encode("iso-8859-1"), content_type="text/plain; charset=iso-8859-1")

    @server.route("/latin1-error")
    def latin1_error(handler: Handler) -> None:
        handler.send_body(
            latin.encode("latin-1"), status=500, content_type='text/plain; charset="ISO-8859-1"'
        )

    async def main() -> tuple[str, str, str]:
        async with HttpClient() as client:
            plain = await client.get(server.url + "/latin1")
            utf8 = await client.get(httpbin_server.url + "/encoding/utf8")
            failed = await client.stream_get(server.url + "/latin1-error")
            assert isinstance(failed, ErrStreamingResponse)
            return plain.text, utf8.text, await failed.text()

    plain, utf8, failed = run(main())
    assert plain == latin and failed == latin
    assert "∮ E⋅da = Q" in utf8  # httpbin's UTF-8 demo page, no charset needed
