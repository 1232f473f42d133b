"""The access-log middleware (server/access_log.py): one JSON line per response, the server's own answers too."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rawhttp import read_until_closed, status_of
from service_process import start_service

from flowno_io import HttpServer, Request, Response, StreamingResponse, sleep
from flowno_io.server.access_log import AccessLogMiddleware
from flowno_io.server.cors import CORSMiddleware

Serve = Callable[[HttpServer], str]


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []
        self.changed = threading.Condition()

    def emit(self, record: logging.LogRecord) -> None:
        with self.changed:
            self.lines.append(json.loads(record.getMessage()))
            self.changed.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.lines) >= count, timeout), self.lines
            return list(self.lines)


@pytest.fixture
def lines() -> Iterator[_Lines]:
    handler = _Lines()
    logger = logging.getLogger("test.access")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield handler
    logger.removeHandler(handler)


def _routes() -> dict[Any, Any]:
    async def hello(request: Request) -> Response:
        return Response("hello")

    async def boom(request: Request) -> Response:
        raise RuntimeError("boom")

    async def stream(request: Request) -> StreamingResponse:
        async def produce() -> AsyncIterator[bytes]:
            yield b"abc"
            await sleep(0)
            yield b"defg"

        return StreamingResponse(produce(), content_type="text/plain")

    async def broken_stream(request: Request) -> StreamingResponse:
        async def produce() -> AsyncIterator[bytes]:
            raise RuntimeError("producer bug")
            yield b""

        return StreamingResponse(produce())

    async def upload(request: Request) -> Response:
        return Response(b"%d" % len(await request.body()))

    return {"/hello": hello, "/boom": boom, "/stream": stream, "/broken": broken_stream, "/upload": upload}


@pytest.fixture
def url(serve: Serve) -> str:
    access = AccessLogMiddleware("test.access", service="t")
    # HTTP/1.1 only: with HTTP/2 on, the preface below would open an HTTP/2 connection.
    server = HttpServer(
        "127.0.0.1", 0, routes=_routes(), middleware=[access, CORSMiddleware(["*"])], http2=False
    )
    server.max_body_bytes = 1000
    return serve(server)


def _raw(url: str, data: bytes) -> tuple[bytes, tuple[str, int]]:
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=5) as sock:
        sock.sendall(data)
        return read_until_closed(sock), sock.getsockname()


def test_a_plain_response(url: str, lines: _Lines) -> None:
    assert httpx.get(url + "/hello?a=1").text == "hello"
    [record] = lines.wait_for(1)
    assert {k: record[k] for k in ("method", "path", "status", "bytes", "query", "service")} == {
        "method": "GET",
        "path": "/hello",
        "status": 200,
        "bytes": 5,
        "query": "a=1",
        "service": "t",
    }
    assert record["duration_ms"] >= 0 and record["ts"].endswith("Z") and "error" not in record


def test_a_preflight_answered_by_inner_middleware_and_a_404(url: str, lines: _Lines) -> None:
    httpx.options(
        url + "/hello", headers={"Origin": "http://a.example", "Access-Control-Request-Method": "GET"}
    )
    httpx.get(url + "/nowhere")
    first, second = lines.wait_for(2)
    assert (first["method"], first["status"]) == ("OPTIONS", 204)
    assert (second["path"], second["status"]) == ("/nowhere", 404)


def test_a_stream_is_logged_when_it_ends_with_its_bytes(url: str, lines: _Lines) -> None:
    assert httpx.get(url + "/stream").text == "abcdefg"
    [record] = lines.wait_for(1)
    assert (record["status"], record["bytes"]) == (200, 7)


@pytest.mark.parametrize(
    ("raw", "status", "method", "path"),
    [
        (b"BAD REQUEST LINE\r\n\r\n", 400, None, None),
        (b"GET /hello HTTP/1.1\r\nHost: x\r\n" + b"X: " + b"y" * 20_000 + b"\r\n\r\n", 431, None, "/hello"),
        (b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", 413, "POST", "/upload"),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 505, None, "*"),
    ],
)
def test_errors_the_server_answers_before_any_handler(
    url: str, lines: _Lines, raw: bytes, status: int, method: str | None, path: str | None
) -> None:
    response, local = _raw(url, raw)
    assert status_of(response) == status
    [record] = lines.wait_for(1)
    assert (record["status"], record["method"], record["path"]) == (status, method, path)
    assert record["client"] == f"{local[0]}:{local[1]}"
    assert record["duration_ms"] is None and record["error"]
    body_length = len(response.partition(b"\r\n\r\n")[2])
    assert record["bytes"] == body_length > 0


def test_a_crashing_handler_and_a_crashing_stream_are_logged_once(url: str, lines: _Lines) -> None:
    assert httpx.get(url + "/boom").status_code == 500
    with pytest.raises(httpx.RemoteProtocolError):  # the head went out, then the producer raised
        httpx.get(url + "/broken")
    httpx.get(url + "/hello")  # a third line marks the end: nothing logged twice before it
    records = lines.wait_for(3)
    assert [(r["path"], r["status"]) for r in records] == [("/boom", 500), ("/broken", 200), ("/hello", 200)]
    assert records[0]["error"] == "internal server error" and records[0]["duration_ms"] is not None
    assert records[1]["error"] == "RuntimeError"


def test_a_client_that_leaves_mid_body_is_a_499(url: str, lines: _Lines) -> None:
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=5) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly-some")
        sock.shutdown(socket.SHUT_RDWR)  # the handler waits for the rest of the body; we leave
    [record] = lines.wait_for(1)
    assert (record["path"], record["status"], record["error"]) == ("/upload", 499, "ReadError")


def test_the_service_logs_parser_errors(tmp_path: Path) -> None:
    service = start_service("echo_service", tmp_path, "--access-log")
    try:
        response, _ = _raw(service.url, b"NOT HTTP AT ALL\r\n\r\n")
        assert status_of(response) == 400
        httpx.get(service.url + "/")
        deadline = time.monotonic() + 10
        records: list[dict[str, Any]] = []
        while len(records) < 2 and time.monotonic() < deadline:
            records = [
                json.loads(line) for line in service.stdout_text().splitlines() if line.startswith("{")
            ]
            time.sleep(0.05)
    finally:
        service.stop()
    assert [(r["status"], r["service"]) for r in records] == [(400, "echo_service"), (200, "echo_service")]
