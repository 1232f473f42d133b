"""``flowno_io.testing.MockTransport`` (issue 16): code that uses ``HttpClient`` tested without a
server or a socket to the network: requests recorded, keep-alive, redirects, cookies, streaming."""

from __future__ import annotations

from typing import Any

from flowno_io import HttpClient, Response
from flowno_io.client.client import OkStreamingResponse
from flowno_io.testing import MockRequest, MockTransport, run


def test_requests_are_recorded_and_answered_on_kept_alive_connections() -> None:
    def handler(request: MockRequest) -> Response:
        if request.url.endswith("/items"):
            return Response.json({"method": request.method, "got": request.json()}, status=201)
        return Response("not found", 404)

    transport = MockTransport(handler)

    async def main() -> list[Any]:
        async with HttpClient(transport=transport, headers={"X-Key": "k"}) as client:
            created = await client.post("https://api.example/items", json={"n": 1})
            missing = await client.get("https://api.example/nope", params={"q": "1"})
            head = await client.head("https://api.example/nope")
            return [created, missing, head, client.pool.connections_opened]

    created, missing, head, opened = run(main())
    assert created.status_code == 201 and created.decode_json() == {"method": "POST", "got": {"n": 1}}
    assert missing.status_code == 404 and missing.text == "not found" and head.body == b""
    assert opened == 1  # one kept-alive connection served all three
    assert [(r.method, r.url) for r in transport.requests] == [
        ("POST", "http://api.example/items"),
        ("GET", "http://api.example/nope?q=1"),
        ("HEAD", "http://api.example/nope"),
    ]
    assert transport.requests[0].headers.get("x-key") == "k"


def test_redirects_cookies_and_streaming_through_the_mock() -> None:
    def handler(request: MockRequest) -> Response:
        if request.url.endswith("/login"):
            return Response(b"", 302, {"Location": "/feed", "Set-Cookie": "sid=7; Path=/"})
        if request.url.endswith("/feed"):
            lines = b'{"i": 1}\n{"i": 2}\n'
            return Response(
                lines,
                200,
                {"Content-Type": "application/x-ndjson", "X-Cookie": request.headers.get("cookie", "")},
            )
        raise RuntimeError("unexpected " + request.url)

    async def main() -> list[Any]:
        async with HttpClient(transport=MockTransport(handler), follow_redirects=True) as client:
            streamed = await client.stream_get("http://svc.test/login")
            assert isinstance(streamed, OkStreamingResponse)
            async with streamed:
                items = [item async for item in streamed.body]
            broken = await client.get("http://svc.test/other")
            return [streamed.url, streamed.headers.get("x-cookie"), items, broken.status_code, broken.text]

    url, cookie, items, status, text = run(main())
    assert url == "http://svc.test/feed" and cookie == "sid=7" and items == [{"i": 1}, {"i": 2}]
    assert status == 500 and "unexpected http://svc.test/other" in text
