"""HttpClient against our own HttpServer, both on one flowno loop: keep-alive, thousands of tasks
sharing one client, uploads, streaming."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import pytest
from flowno import sleep, spawn

from flowno_io import HttpClient, HttpServer, Request, Response, streaming_response_is_ok
from flowno_io.testing import run

T = TypeVar("T")


def with_server(server: HttpServer, body: Callable[[str], Awaitable[T]]) -> T:
    """Serve ``server`` on the loop that runs ``body(base_url)``; close it afterwards."""

    async def main() -> T:
        server.bind()
        await spawn(server.serve())
        try:
            return await body(f"http://127.0.0.1:{server.port}")
        finally:
            await server.close()

    return run(main())


def make_server() -> HttpServer:
    server = HttpServer("127.0.0.1", 0)

    @server.route("/n/{n:int}")
    def number(request: Request) -> Any:
        return {"n": request.path_params["n"]}

    @server.route("/upload", methods=["POST", "PUT"])
    async def upload(request: Request) -> Any:
        body = await request.body()
        return Response(body, content_type=request.headers.get("content-type") or "application/octet-stream")

    return server


def test_keep_alive_against_our_server() -> None:
    server = make_server()

    async def body(url: str) -> list[int]:
        async with HttpClient() as client:
            return [(await client.get(f"{url}/n/{i}")).decode_json()["n"] for i in range(50)]

    assert with_server(server, body) == list(range(50))
    assert server.stats["connections_accepted"] == 1


def test_thousand_tasks_share_one_client() -> None:
    server = make_server()

    async def one(client: HttpClient, url: str, i: int) -> int:
        response = await client.get(f"{url}/n/{i}")
        return int(response.decode_json()["n"])

    async def body(url: str) -> list[int]:
        async with HttpClient(max_connections_per_host=20) as client:
            tasks = [await spawn(one(client, url, i)) for i in range(1000)]
            results = [await task.join() for task in tasks]
            assert client.pool.active_connections() == 0
            assert client.pool.idle_connections() <= 20
            return results

    started = time.monotonic()
    assert with_server(server, body) == list(range(1000))
    assert server.stats["connections_accepted"] <= 20
    assert time.monotonic() - started < 20


def test_uploads_to_our_server() -> None:
    server = make_server()

    async def parts() -> AsyncIterator[bytes]:
        for i in range(50):
            await sleep(0)
            yield b"part %d;" % i

    async def body(url: str) -> tuple[Any, bytes, bytes]:
        async with HttpClient() as client:
            as_json = (await client.post(f"{url}/upload", json={"a": [1, 2]})).decode_json()
            chunked = (await client.put(f"{url}/upload", data=parts())).body
            big = (await client.post(f"{url}/upload", data=b"z" * 1_000_000)).body
            return as_json, chunked, big

    as_json, chunked, big = with_server(server, body)
    assert as_json == {"a": [1, 2]}
    assert chunked == b"".join(b"part %d;" % i for i in range(50))
    assert big == b"z" * 1_000_000


def test_head_and_errors_from_our_server() -> None:
    server = make_server()

    async def body(url: str) -> tuple[Any, Any, Any]:
        async with HttpClient() as client:
            head = await client.head(f"{url}/n/1")
            missing = await client.get(f"{url}/nowhere")
            after = await client.get(f"{url}/n/2")
            return head, missing, after

    head, missing, after = with_server(server, body)
    assert head.status_code == 200 and head.body == b"" and int(head.headers.get("content-length")) > 0
    assert missing.status_code == 404
    assert after.decode_json() == {"n": 2}


def test_event_stream_from_our_server() -> None:
    streaming = pytest.importorskip("flowno_io.server.streaming")
    server = HttpServer("127.0.0.1", 0)

    @server.route("/events")
    def events(request: Request) -> Any:
        async def produce() -> AsyncIterator[Any]:
            for i in range(5):
                yield {"i": i}
                await sleep(0.001)
            yield "[DONE]"

        return streaming.EventSourceResponse(produce())

    async def body(url: str) -> list[Any]:
        async with HttpClient() as client:
            response = await client.stream_get(f"{url}/events")
            assert streaming_response_is_ok(response)
            items = [item async for item in response.body]
            assert (await client.get(f"{url}/events")).status_code == 200
            return items

    assert with_server(server, body) == [{"i": i} for i in range(5)]
