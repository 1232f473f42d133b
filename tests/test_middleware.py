"""Middleware: order, short-circuits, response changes before framing, error hooks (server/middleware.py)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from rawhttp import read_response, read_until_closed, status_of

from flowno_io import EventSourceResponse, HttpServer, Request, Response, StreamingResponse
from flowno_io.server.middleware import CallNext, ErrorAnswer, copy_response

Serve = Callable[[HttpServer], str]

SHARED = Response("shared", headers={"X-Shared": "1"})


def _routes() -> dict[Any, Any]:
    async def hello(request: Request) -> Response:
        return Response("hello")

    def shared(request: Request) -> Response:
        return SHARED

    async def boom(request: Request) -> Response:
        raise RuntimeError("boom")

    async def events(request: Request) -> EventSourceResponse:
        return EventSourceResponse(iter(["one", "two"]), ping_interval=None)

    async def chunks(request: Request) -> StreamingResponse:
        return StreamingResponse(iter([b"a", b"b"]), content_type="text/plain")

    async def body(request: Request) -> Response:
        return Response(await request.body())

    return {
        "/hello": hello,
        "/shared": shared,
        "/boom": boom,
        "/events": events,
        "/chunks": chunks,
        ("POST", "/body"): body,
    }


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def test_no_middleware_has_no_chain() -> None:
    server = HttpServer("127.0.0.1", 0, routes=_routes())
    assert server._chain is None
    assert server.middleware == ()


def test_middleware_runs_in_order_around_the_handler(serve: Serve) -> None:
    calls: list[str] = []

    def tracer(name: str) -> Any:
        async def middleware(request: Request, call_next: CallNext) -> Any:
            calls.append(f"{name} before {request.path}")
            response = copy_response(await call_next(request))
            calls.append(f"{name} after {response.status_code}")
            response.headers.add("X-Trace", name)
            return response

        return middleware

    server = HttpServer("127.0.0.1", 0, routes=_routes(), middleware=[tracer("outer")])
    server.add_middleware(tracer("inner"))
    url = serve(server)
    response = httpx.get(url + "/hello")
    assert response.text == "hello"
    assert response.headers.get_list("x-trace") == ["inner", "outer"]
    assert calls == ["outer before /hello", "inner before /hello", "inner after 200", "outer after 200"]


def test_middleware_may_answer_without_the_handler(serve: Serve) -> None:
    async def gate(request: Request, call_next: CallNext) -> Any:
        if request.headers.get("x-key") != "secret":
            return {"error": "forbidden"}  # what a handler may return is accepted
        return await call_next(request)

    url = serve(HttpServer("127.0.0.1", 0, routes=_routes(), middleware=[gate]))
    refused = httpx.get(url + "/hello")
    assert refused.status_code == 200 and refused.json() == {"error": "forbidden"}
    assert httpx.get(url + "/hello", headers={"X-Key": "secret"}).text == "hello"


def test_middleware_sees_routing_answers(serve: Serve) -> None:
    seen: list[int] = []

    async def record(request: Request, call_next: CallNext) -> Any:
        response = await call_next(request)
        seen.append(response.status_code)
        return response

    url = serve(HttpServer("127.0.0.1", 0, routes=_routes(), middleware=[record]))
    assert httpx.get(url + "/nowhere").status_code == 404
    assert httpx.get(url + "/body").status_code == 405
    assert seen == [404, 405]


def test_copy_response_leaves_a_shared_response_alone(serve: Serve) -> None:
    async def tag(request: Request, call_next: CallNext) -> Any:
        response = copy_response(await call_next(request))
        response.headers.add("X-Tag", "t")
        response.status_code = 203
        return response

    url = serve(HttpServer("127.0.0.1", 0, routes=_routes(), middleware=[tag]))
    for _ in range(3):
        response = httpx.get(url + "/shared")
        assert response.status_code == 203
        assert response.headers.get_list("x-tag") == ["t"]
    assert "x-tag" not in SHARED.headers and SHARED.status_code == 200


def test_framing_fields_set_by_middleware_are_replaced(serve: Serve) -> None:
    """The server frames what comes out of the chain: a wrong Content-Length cannot desync."""

    async def liar(request: Request, call_next: CallNext) -> Any:
        response = copy_response(await call_next(request))
        response.headers.set("Content-Length", "999")
        response.headers.set("Transfer-Encoding", "chunked")
        return response

    url = serve(HttpServer("127.0.0.1", 0, routes=_routes(), middleware=[liar]))
    with socket.create_connection(("127.0.0.1", _port(url)), timeout=5) as sock:
        for _ in range(2):  # keep-alive survives: the second request is answered
            sock.sendall(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
            response = read_response(sock)
            assert b"Content-Length: 5\r\n" in response and b"999" not in response
            assert b"chunked" not in response.lower() and response.endswith(b"\r\n\r\nhello")


def test_middleware_changes_a_streaming_head(serve: Serve) -> None:
    async def tag(request: Request, call_next: CallNext) -> Any:
        response = await call_next(request)
        response.headers.set("X-Stream", type(response).__name__)
        response.status_code = 202
        return response

    url = serve(HttpServer("127.0.0.1", 0, routes=_routes(), middleware=[tag]))
    events = httpx.get(url + "/events")
    assert events.status_code == 202 and events.headers["x-stream"] == "EventSourceResponse"
    assert events.text == "data: one\n\ndata: two\n\n"
    chunks = httpx.get(url + "/chunks")
    assert chunks.headers["x-stream"] == "StreamingResponse" and chunks.text == "ab"


def test_a_raising_middleware_is_a_500_and_the_server_keeps_serving(serve: Serve) -> None:
    async def broken(request: Request, call_next: CallNext) -> Any:
        if request.path == "/hello":
            raise ValueError("middleware bug")
        return await call_next(request)

    url = serve(HttpServer("127.0.0.1", 0, routes=_routes(), middleware=[broken]))
    assert httpx.get(url + "/hello").status_code == 500
    assert httpx.get(url + "/shared").text == "shared"


class _Recorder:
    """A middleware with an error hook; it tags both kinds of answers."""

    def __init__(self) -> None:
        self.answers: list[ErrorAnswer] = []
        self.lock = threading.Lock()

    async def __call__(self, request: Request, call_next: CallNext) -> Any:
        return await call_next(request)

    def on_error(self, answer: ErrorAnswer) -> None:
        with self.lock:
            self.answers.append(answer)
        answer.headers.set("X-Error-Hook", str(answer.status))


@pytest.mark.parametrize(
    ("raw", "status", "method", "path"),
    [
        (b"GARBAGE\r\n\r\n", 400, None, None),
        (b"GET /h HTTP/1.1\r\n\r\n", 400, "GET", "/h"),  # no Host
        (b"GET /big HTTP/1.1\r\nHost: x\r\n" + b"X-Pad: " + b"a" * 20_000 + b"\r\n\r\n", 431, None, "/big"),
        (b"POST /body?q=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n", 413, "POST", "/body"),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, None, "*"),  # the HTTP/2 preface
    ],
)
def test_error_hook_sees_parser_errors(
    serve: Serve, raw: bytes, status: int, method: str | None, path: str | None
) -> None:
    recorder = _Recorder()
    server = HttpServer(  # HTTP/1.1 only: with HTTP/2 on, the preface opens an HTTP/2 connection
        "127.0.0.1", 0, routes=_routes(), middleware=[recorder], max_body_bytes=1000, http2=False
    )
    url = serve(server)
    with socket.create_connection(("127.0.0.1", _port(url)), timeout=5) as sock:
        sock.sendall(raw)
        response = read_until_closed(sock)
        local = sock.getsockname()
    if status == 505 and status_of(response) == 400:
        pytest.skip("this httptools answers an unknown version as a plain 400")
    assert status_of(response) == status
    assert f"x-error-hook: {status}\r\n".encode() in response
    [answer] = recorder.answers
    assert answer.status == status and answer.client == local
    assert answer.method == method and answer.path == path and answer.request is None


def test_error_hook_sees_a_crashing_handler(serve: Serve) -> None:
    recorder = _Recorder()
    hooked: list[int] = []
    server = HttpServer("127.0.0.1", 0, routes=_routes(), middleware=[recorder])
    server.add_error_hook(lambda answer: hooked.append(answer.status))
    url = serve(server)
    response = httpx.get(url + "/boom", headers={"X-Mine": "1"})
    assert response.status_code == 500 and response.headers["x-error-hook"] == "500"
    [answer] = recorder.answers
    assert (answer.method, answer.path, answer.reason) == ("GET", "/boom", "internal server error")
    assert answer.request_headers is not None and answer.request_headers.get("x-mine") == "1"
    assert answer.request is not None and hooked == [500]


def test_a_raising_error_hook_does_not_stop_the_answer(serve: Serve) -> None:
    def bad_hook(answer: ErrorAnswer) -> None:
        raise RuntimeError("hook bug")

    server = HttpServer("127.0.0.1", 0, routes=_routes())
    server.add_error_hook(bad_hook)
    url = serve(server)
    with socket.create_connection(("127.0.0.1", _port(url)), timeout=5) as sock:
        sock.sendall(b"NOPE\r\n\r\n")
        assert status_of(read_until_closed(sock)) == 400
