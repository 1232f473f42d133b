"""Server-Timing (server/tracing.py ServerTimingMiddleware): present and plausible."""

from __future__ import annotations

import re
import time
import urllib.request
from pathlib import Path

from service_process import start_service

from flowno_io import HttpServer, Response, StreamingResponse, sleep
from flowno_io.server.tracing import ServerTimingMiddleware
from flowno_io.testing import ServerThread

_APP = re.compile(r"(?:^|, )app;dur=([0-9.]+)(?:,|$)")
SHARED = Response("constant")


def duration_ms(header: str | None) -> float:
    assert header is not None
    match = _APP.search(header)
    assert match, header
    return float(match.group(1))


def timed(url: str) -> tuple[str | None, float]:
    start = time.perf_counter()
    with urllib.request.urlopen(url, timeout=10) as answer:
        answer.read()
        return answer.headers["Server-Timing"], (time.perf_counter() - start) * 1000


def test_present_and_plausible() -> None:
    server = HttpServer("127.0.0.1", 0, middleware=[ServerTimingMiddleware()])

    @server.route("/slow")
    async def slow(request):  # type: ignore[no-untyped-def]
        await sleep(0.05)
        return "ok"

    server.add_route("/shared", lambda r: SHARED)
    server.add_route("/stream", lambda r: StreamingResponse([b"a", b"b"]))
    with ServerThread(server) as url:
        header, client_ms = timed(url + "/slow")
        assert 50 <= duration_ms(header) <= client_ms  # the handler's sleep, less than the whole
        header, client_ms = timed(url + "/shared")
        assert 0 <= duration_ms(header) <= client_ms
        assert "server-timing" not in SHARED.headers  # a shared response is copied, not changed
        header, _ = timed(url + "/shared")
        assert header is not None and header.count("app;") == 1
        header, _ = timed(url + "/stream")
        assert duration_ms(header) >= 0


def test_a_handlers_own_server_timing_is_kept() -> None:
    server = HttpServer(
        "127.0.0.1",
        0,
        routes={"/": lambda r: Response("x", headers={"Server-Timing": "db;dur=2"})},
        middleware=[ServerTimingMiddleware()],
    )
    with ServerThread(server) as url:
        header, _ = timed(url + "/")
        assert header is not None and header.startswith("db;dur=2, app;dur=")


def test_on_in_the_services(tmp_path: Path) -> None:
    service = start_service("stream_service", tmp_path)
    try:
        header, client_ms = timed(service.url + "/")
        assert 0 <= duration_ms(header) <= client_ms
    finally:
        service.stop()
    service = start_service("echo_service", tmp_path / "off", "--no-server-timing")
    try:
        header, _ = timed(service.url + "/echo/raw")
        assert header is None
    finally:
        service.stop()
