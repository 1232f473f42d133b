"""HTTP/2 on HttpServer (server/http2.py): httpx and h2load as peers, raw h2 clients for hostile cases.

Raw clients send with the ``h2`` state machine (client side) and read the server's frames with
``hyperframe``/``hpack`` directly, so they can misbehave (never open a window, reset in a loop,
send frames the server's settings forbid) and still see exactly what the server answered.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import html
import json
import logging
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import h2.config
import h2.connection
import httpx
import pytest
import test_client_cancel
from helpers import HANG_TIMEOUT, read_until_closed, wait_for
from hpack import Decoder
from hyperframe.frame import (
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    RstStreamFrame,
)
from service_process import start_service

from flowno_io import (
    AccessLogMiddleware,
    CORSMiddleware,
    EventSourceResponse,
    GZipMiddleware,
    HttpServer,
    Request,
    Response,
    StreamingResponse,
    sleep,
)
from flowno_io.io.tls_stream import server_context
from flowno_io.server.http2 import PREFACE, Http2Limits
from flowno_io.testing import ServerThread

Serve = Callable[[HttpServer], str]
#: The fixture making a certificate with openssl (skipped without it).
certificate = test_client_cancel.certificate

NO_ERROR, PROTOCOL_ERROR, REFUSED_STREAM, CANCEL, ENHANCE_YOUR_CALM = 0x0, 0x1, 0x7, 0x8, 0xB
CHUNK = 16_384


class App:
    """Routes of the tests, with state the tests look at (from the test thread)."""

    def __init__(self) -> None:
        self.produced = 0
        self.stream_closed = threading.Event()
        self.slow_started = threading.Event()
        self.release = threading.Event()
        self.arrived = 0

    def routes(self) -> dict[Any, Any]:
        async def hello(request: Request) -> Response:
            return Response("Hello, world!", content_type="text/plain")

        async def echo(request: Request) -> Response:
            body = await request.body()
            return Response(body, headers={"X-Sha": hashlib.sha256(body).hexdigest()})

        async def json_echo(request: Request) -> Any:
            return {"got": await request.json(), "method": request.method, "query": request.query_params}

        async def headers(request: Request) -> Any:
            return {
                "host": request.headers.get("host"),
                "cookie": request.headers.get("cookie"),
                "version": request.http_version,
                "last_event_id": request.last_event_id,
            }

        async def big(request: Request) -> Response:
            return Response(_big_body())

        async def together(request: Request) -> Response:
            """Answers only once ``n`` requests are in flight at once (proves concurrency)."""
            n = int(request.query_params["n"])
            self.arrived += 1
            deadline = time.monotonic() + HANG_TIMEOUT
            while self.arrived < n and time.monotonic() < deadline:
                await sleep(0.005)
            return Response(f"{self.arrived >= n}")

        async def events(request: Request) -> EventSourceResponse:
            async def produce() -> AsyncIterator[dict[str, int]]:
                try:
                    n = 0
                    while True:
                        yield {"n": n}
                        n += 1
                        await sleep(0.1)
                finally:
                    self.stream_closed.set()

            return EventSourceResponse(produce(), ping_interval=0.03)

        async def finite(request: Request) -> EventSourceResponse:
            return EventSourceResponse(iter(["a", "b", "c"]))

        async def flood(request: Request) -> StreamingResponse:
            async def produce() -> AsyncIterator[bytes]:
                while True:
                    self.produced += 1
                    yield b"f" * CHUNK

            return StreamingResponse(produce(), content_type="application/octet-stream")

        async def slow(request: Request) -> Response:
            self.slow_started.set()
            deadline = time.monotonic() + HANG_TIMEOUT
            while not self.release.is_set() and time.monotonic() < deadline:
                await sleep(0.01)
            return Response("done")

        async def boom(request: Request) -> Response:
            raise RuntimeError("boom")

        return {
            "/hello": hello,
            ("POST", "/echo"): echo,
            ("POST", "/json"): json_echo,
            "/headers": headers,
            "/big": big,
            "/together": together,
            "/events": events,
            "/finite": finite,
            "/flood": flood,
            "/slow": slow,
            "/boom": boom,
        }


def _big_body() -> bytes:
    return bytes(range(256)) * 20_000  # 5 MB


@pytest.fixture
def app() -> App:
    return App()


@pytest.fixture
def url(serve: Serve, app: App) -> str:
    return serve(HttpServer("127.0.0.1", 0, routes=app.routes()))


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _h2_client(**kwargs: Any) -> httpx.Client:
    return httpx.Client(http1=False, http2=True, timeout=HANG_TIMEOUT, **kwargs)


# -- httpx as a peer (prior knowledge on cleartext) ---------------------------------------------


def test_get_post_json_by_prior_knowledge(url: str) -> None:
    with _h2_client() as client:
        response = client.get(url + "/hello")
        assert response.http_version == "HTTP/2" and response.status_code == 200
        assert response.text == "Hello, world!" and response.headers["content-length"] == "13"
        assert response.headers["server"] == "flowno-io" and "date" in response.headers
        posted = client.post(url + "/json?x=1", json={"a": [1, 2]})
        assert posted.json() == {"got": {"a": [1, 2]}, "method": "POST", "query": {"x": "1"}}
        seen = client.get(url + "/headers", headers={"Last-Event-ID": "42", "Cookie": "a=1"}).json()
        assert seen["host"] == f"127.0.0.1:{_port(url)}" and seen["version"] == "2"
        assert seen["last_event_id"] == "42" and seen["cookie"] == "a=1"
        missing = client.get(url + "/nope")
        assert missing.status_code == 404 and missing.json()["path"] == "/nope"
        assert client.get(url + "/echo").status_code == 405
        assert client.get(url + "/boom").status_code == 500
        assert client.head(url + "/hello").headers["content-length"] == "13"
        assert client.post(url + "/json", content=b"{not json").status_code == 400


def test_cookie_fields_are_joined_and_host_comes_from_authority(url: str) -> None:
    raw = RawH2(_port(url))
    sid = raw.request("/headers", extra=[(b"cookie", b"a=1"), (b"cookie", b"b=2")])
    status, _, body = raw.response(sid)
    assert status == 200 and b'"cookie":"a=1; b=2"' in body and b'"host":"localhost"' in body


def test_many_concurrent_streams_on_one_connection(serve: Serve, app: App) -> None:
    server = HttpServer("127.0.0.1", 0, routes=app.routes())
    url = serve(server)
    n = 30

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(http1=False, http2=True, timeout=HANG_TIMEOUT) as client:
            return list(await asyncio.gather(*(client.get(f"{url}/together?n={n}") for _ in range(n))))

    responses = asyncio.run(main())
    assert [r.text for r in responses] == ["True"] * n
    assert {r.http_version for r in responses} == {"HTTP/2"}
    assert server.stats["connections_accepted"] == 1


class _Lines(logging.Handler):
    """Keeps the access log's JSON lines."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(json.loads(record.getMessage()))


def test_middleware_runs_unchanged_on_http2(serve: Serve, app: App) -> None:
    """CORS, gzip (plain and streamed) and the access log, with its lines for the server's own 431."""
    lines = _Lines()
    logger = logging.getLogger("test_http2.access")
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    routes = app.routes()

    async def text(request: Request) -> Response:
        return Response("x" * 5000, content_type="text/plain")

    async def stream(request: Request) -> StreamingResponse:
        return StreamingResponse(iter(["y" * 3000, "z" * 3000]), content_type="text/plain")

    routes.update({"/text": text, "/stream": stream})
    middleware = [AccessLogMiddleware(logger), CORSMiddleware(["https://app.example"]), GZipMiddleware()]
    url = serve(HttpServer("127.0.0.1", 0, routes=routes, middleware=middleware))
    try:
        with _h2_client(headers={"Origin": "https://app.example", "Accept-Encoding": "gzip"}) as client:
            response = client.get(url + "/text")
            assert response.http_version == "HTTP/2" and response.text == "x" * 5000
            assert response.headers["content-encoding"] == "gzip"
            assert response.headers["access-control-allow-origin"] == "https://app.example"
            streamed = client.get(url + "/stream")
            assert streamed.headers["content-encoding"] == "gzip" and streamed.text == "y" * 3000 + "z" * 3000
            preflight = client.options(url + "/json", headers={"Access-Control-Request-Method": "POST"})
            assert preflight.status_code == 204
        raw = RawH2(_port(url))
        assert raw.response(raw.request("/hello", extra=[(b"x-h%d" % i, b"v") for i in range(150)]))[0] == 431
        raw.close()
        wait_for(lambda: len(lines.records) >= 4, "the access log lines")
    finally:
        logger.removeHandler(lines)
    assert [(r["status"], r["path"]) for r in lines.records] == [
        (200, "/text"),
        (200, "/stream"),
        (204, "/json"),
        (431, "/hello"),
    ]
    assert lines.records[1]["bytes"] > 0


def test_large_bodies_both_ways(url: str) -> None:
    body = _big_body()
    with _h2_client() as client:
        response = client.post(url + "/echo", content=body)
        assert response.headers["x-sha"] == hashlib.sha256(body).hexdigest() and response.content == body
        assert client.get(url + "/big").content == body


def test_a_body_over_max_body_bytes_is_413(serve: Serve, app: App) -> None:
    url = serve(HttpServer("127.0.0.1", 0, routes=app.routes(), max_body_bytes=100_000))
    with _h2_client() as client:
        assert client.post(url + "/echo", content=b"x" * 200_000).status_code == 413
        assert client.post(url + "/echo", content=b"x" * 1000).status_code == 200  # connection still fine


def test_event_stream_and_connection_close(url: str, app: App) -> None:
    with _h2_client() as client:
        assert client.get(url + "/finite").text == "data: a\n\ndata: b\n\ndata: c\n\n"
        with client.stream("GET", url + "/events") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            seen = ""
            for text in response.iter_text():
                seen += text
                if seen.count("data:") >= 3 and ": ping" in seen:
                    break
    # The client closed the connection: the producer's finally runs (it was parked in a sleep).
    assert app.stream_closed.wait(HANG_TIMEOUT)


def test_rst_stream_stops_the_producer_and_the_connection_goes_on(url: str, app: App) -> None:
    raw = RawH2(_port(url))
    sid = raw.request("/events")
    raw.until(lambda f: isinstance(f, DataFrame) and f.stream_id == sid)
    raw.h2.reset_stream(sid, CANCEL)
    raw.flush()
    assert app.stream_closed.wait(HANG_TIMEOUT)
    assert raw.response(raw.request("/hello"))[0] == 200
    raw.close()


def test_http11_is_unchanged_when_http2_is_on(app: App) -> None:
    """Requests whose first bytes are a prefix of the preface get the same bytes with and without HTTP/2."""
    requests = [
        b"P",
        b"PRI",
        b"PRI * HTTP/1.1\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nXX",  # not the preface: HTTP/1.1 answers it
        b"PUT /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
        b"GET /hello HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"HTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n",
    ]
    answers: dict[bool, list[bytes]] = {}
    for http2 in (True, False):
        with ServerThread(HttpServer("127.0.0.1", 0, routes=app.routes(), http2=http2)) as url:
            answers[http2] = []
            for request in requests:
                with socket.create_connection(("127.0.0.1", _port(url)), timeout=HANG_TIMEOUT) as sock:
                    sock.sendall(request)
                    sock.shutdown(socket.SHUT_WR)
                    answers[http2].append(read_until_closed(sock))
    assert [_no_date(a) for a in answers[True]] == [_no_date(a) for a in answers[False]]
    assert answers[True][5].startswith(b"HTTP/1.1 200 OK\r\n")  # Upgrade: h2c is served as HTTP/1.1


def _no_date(response: bytes) -> bytes:
    return re.sub(rb"Date: [^\r]*\r\n", b"", response)


# -- TLS (ALPN) ---------------------------------------------------------------------------------


@pytest.fixture
def tls_url(certificate: tuple[Path, Path], app: App) -> Iterator[str]:
    context = server_context(str(certificate[0]), str(certificate[1]))
    with ServerThread(HttpServer("127.0.0.1", 0, routes=app.routes(), ssl_context=context)) as url:
        yield url.replace("http://", "https://")


def test_alpn_negotiates_h2_over_tls(tls_url: str, certificate: tuple[Path, Path]) -> None:
    verify = ssl.create_default_context(cafile=str(certificate[0]))
    with httpx.Client(http2=True, verify=verify, timeout=HANG_TIMEOUT) as client:
        response = client.get(tls_url + "/hello")
        assert response.http_version == "HTTP/2" and response.text == "Hello, world!"
        body = _big_body()
        assert (
            client.post(tls_url + "/echo", content=body).headers["x-sha"] == hashlib.sha256(body).hexdigest()
        )
        assert client.get(tls_url + "/big").content == body
        assert client.get(tls_url + "/finite").text == "data: a\n\ndata: b\n\ndata: c\n\n"
    with httpx.Client(verify=verify, timeout=HANG_TIMEOUT) as client:  # h1 only: ALPN http/1.1
        assert client.get(tls_url + "/hello").http_version == "HTTP/1.1"


def test_without_http2_alpn_offers_only_http11(certificate: tuple[Path, Path], app: App) -> None:
    context = server_context(str(certificate[0]), str(certificate[1]))
    server = HttpServer("127.0.0.1", 0, routes=app.routes(), ssl_context=context, http2=False)
    with ServerThread(server) as url:
        verify = ssl.create_default_context(cafile=str(certificate[0]))
        with httpx.Client(http2=True, verify=verify, timeout=HANG_TIMEOUT) as client:
            assert client.get(url.replace("http://", "https://") + "/hello").http_version == "HTTP/1.1"


# -- h2load -------------------------------------------------------------------------------------

H2LOAD = shutil.which("h2load")


@pytest.mark.skipif(H2LOAD is None, reason="needs h2load (apt-get install nghttp2-client)")
@pytest.mark.parametrize("tls", [False, True])
def test_h2load_all_requests_succeed(app: App, certificate: tuple[Path, Path], tls: bool) -> None:
    assert H2LOAD is not None
    context = server_context(str(certificate[0]), str(certificate[1])) if tls else None
    with ServerThread(HttpServer("127.0.0.1", 0, routes=app.routes(), ssl_context=context)) as url:
        if tls:
            url = url.replace("http://", "https://")
        result = subprocess.run(
            [H2LOAD, "-n", "2000", "-c", "4", "-m", "10", url + "/hello"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert "2000 succeeded, 0 failed, 0 errored" in result.stdout, result.stdout + result.stderr
    assert "status codes: 2000 2xx" in result.stdout


# -- raw clients: hostile and edge cases --------------------------------------------------------


class RawH2:
    """A client that sends with h2's state machine and reads raw frames (it may misbehave)."""

    def __init__(self, port: int, *, preface: bool = True) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=HANG_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.h2 = h2.connection.H2Connection(config)
        self.h2.initiate_connection()
        self.buffer = b""
        self.decoder = Decoder()
        self.decoder.max_header_list_size = 1 << 30
        self.frames: list[Frame] = []
        self.headers: dict[int, dict[bytes, bytes]] = {}
        self.closed = False
        if preface:
            self.flush()

    def flush(self) -> None:
        self.sock.sendall(self.h2.data_to_send())

    def request(
        self,
        path: str,
        *,
        method: bytes = b"GET",
        end: bool = True,
        extra: list[tuple[bytes, bytes]] | None = None,
    ) -> int:
        sid = self.h2.get_next_available_stream_id()
        fields = [
            (b":method", method),
            (b":path", path.encode()),
            (b":scheme", b"http"),
            (b":authority", b"localhost"),
        ]
        self.h2.send_headers(sid, fields + (extra or []), end_stream=end)
        self.flush()
        return sid

    def next_frame(self) -> Frame | None:
        """The next frame from the server; None once it closed the connection."""
        while True:
            if len(self.buffer) >= 9:
                frame, length = Frame.parse_frame_header(memoryview(self.buffer[:9]))
                if len(self.buffer) >= 9 + length:
                    frame.parse_body(memoryview(self.buffer[9 : 9 + length]))
                    self.buffer = self.buffer[9 + length :]
                    self.frames.append(frame)
                    if isinstance(frame, HeadersFrame):  # every block, in order (HPACK state)
                        self.headers[frame.stream_id] = dict(self.decoder.decode(frame.data, raw=True))
                    return frame
            try:
                data = self.sock.recv(65536)
            except ConnectionResetError:
                data = b""
            if not data:
                self.closed = True
                return None
            self.buffer += data

    def until(self, predicate: Callable[[Frame], bool]) -> Frame:
        while True:
            frame = self.next_frame()
            if frame is None:
                raise AssertionError(f"connection closed; frames: {self.frames[-10:]}")
            if predicate(frame):
                return frame

    def goaway(self) -> GoAwayFrame:
        frame = self.until(lambda f: isinstance(f, GoAwayFrame))
        assert isinstance(frame, GoAwayFrame)
        return frame

    def response(self, sid: int) -> tuple[int, dict[bytes, bytes], bytes]:
        """Status, headers and body of stream ``sid`` (decoding every header block in order)."""
        status, headers, body = 0, {}, b""
        while True:
            frame = self.next_frame()
            if frame is None:
                raise AssertionError(f"connection closed before stream {sid} ended")
            if isinstance(frame, HeadersFrame) and frame.stream_id == sid:
                headers = self.headers[sid]
                status = int(headers[b":status"])
            elif isinstance(frame, DataFrame) and frame.stream_id == sid:
                body += frame.data
            elif isinstance(frame, RstStreamFrame) and frame.stream_id == sid:
                raise AssertionError(f"stream {sid} reset with {frame.error_code}")
            if frame.stream_id == sid and "END_STREAM" in frame.flags:
                return status, headers, body

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw_server(serve: Serve, app: App) -> tuple[HttpServer, str]:
    server = HttpServer(
        "127.0.0.1", 0, routes=app.routes(), http2_limits=Http2Limits(max_concurrent_streams=4, max_resets=50)
    )
    return server, serve(server)


def test_rapid_reset_is_cut_off_and_others_are_served(raw_server: tuple[HttpServer, str]) -> None:
    _, url = raw_server
    raw = RawH2(_port(url))
    try:
        for _ in range(200):
            sid = raw.h2.get_next_available_stream_id()
            raw.h2.send_headers(sid, [(b":method", b"GET"), (b":path", b"/slow"), (b":scheme", b"http"),
                                      (b":authority", b"x")], end_stream=True)  # fmt: skip
            raw.h2.reset_stream(sid, CANCEL)
            raw.flush()
    except OSError:
        pass  # the server already hung up
    assert raw.goaway().error_code == ENHANCE_YOUR_CALM
    raw.close()
    with _h2_client() as client:
        assert client.get(url + "/hello").text == "Hello, world!"


def test_streams_reset_but_still_running_are_refused(raw_server: tuple[HttpServer, str], app: App) -> None:
    _, url = raw_server
    raw = RawH2(_port(url))
    running = [raw.request("/slow") for _ in range(4)]
    assert app.slow_started.wait(HANG_TIMEOUT)
    for sid in running:
        raw.h2.reset_stream(sid, CANCEL)
    raw.flush()
    extra = raw.request("/hello")  # the 4 handlers still run: no slot for it
    frame = raw.until(lambda f: isinstance(f, RstStreamFrame) and f.stream_id == extra)
    assert isinstance(frame, RstStreamFrame) and frame.error_code == REFUSED_STREAM
    app.release.set()
    raw.close()


def test_exceeding_max_concurrent_streams(raw_server: tuple[HttpServer, str], app: App) -> None:
    _, url = raw_server
    raw = RawH2(_port(url))
    for _ in range(5):  # the client sends before reading the server's SETTINGS (limit 4)
        raw.request("/slow")
    frame = raw.until(lambda f: isinstance(f, (GoAwayFrame, RstStreamFrame)))
    assert isinstance(frame, (GoAwayFrame, RstStreamFrame))
    assert frame.error_code in (PROTOCOL_ERROR, REFUSED_STREAM)
    app.release.set()
    raw.close()


def test_hpack_bomb_is_refused(url: str) -> None:
    raw = RawH2(_port(url))
    # One 4000-byte field in the dynamic table, then referenced again and again (one byte each):
    # a few kilobytes on the wire, megabytes decoded.
    bomb = [(b"x-bomb", b"a" * 4000)] * 1000
    raw.request("/hello", extra=bomb)
    assert raw.goaway().error_code == ENHANCE_YOUR_CALM
    raw.close()
    with _h2_client() as client:
        assert client.get(url + "/hello").status_code == 200


def test_too_many_header_fields_is_431(url: str) -> None:
    raw = RawH2(_port(url))
    sid = raw.request("/hello", extra=[(b"x-h%d" % i, b"v") for i in range(150)])
    status, _, body = raw.response(sid)
    assert status == 431 and b"header fields" in body
    assert raw.response(raw.request("/hello"))[0] == 200  # the connection goes on
    raw.close()


def test_a_client_that_opens_no_window_stalls_only_its_producer(url: str, app: App) -> None:
    raw = RawH2(_port(url))
    sid = raw.request("/flood")
    received = 0
    while received < 65535:  # the initial window, never re-opened
        frame = raw.until(lambda f: isinstance(f, DataFrame))
        received += len(frame.data)
    assert received == 65535
    with _h2_client() as client:  # the server serves others meanwhile
        for _ in range(3):
            assert client.get(url + "/hello").status_code == 200
    # The producer was held back by the window: a few pieces, not an unbounded buffer.
    assert app.produced <= 65535 // CHUNK + 3
    produced = app.produced
    raw.h2.increment_flow_control_window(1_000_000, sid)
    raw.h2.increment_flow_control_window(1_000_000)
    raw.flush()
    while received < 1_000_000:
        frame = raw.until(lambda f: isinstance(f, DataFrame))
        received += len(frame.data)
    assert app.produced > produced
    raw.close()


def test_a_window_never_opened_resets_the_stream_after_the_write_timeout(serve: Serve, app: App) -> None:
    url = serve(HttpServer("127.0.0.1", 0, routes=app.routes(), write_timeout=0.5))
    raw = RawH2(_port(url))
    sid = raw.request("/flood")
    frame = raw.until(lambda f: isinstance(f, RstStreamFrame) and f.stream_id == sid)
    assert isinstance(frame, RstStreamFrame) and frame.error_code == CANCEL
    raw.h2.increment_flow_control_window(1_000_000)  # the flood used up the connection's window too
    raw.flush()
    assert raw.response(raw.request("/hello"))[0] == 200  # the connection goes on
    raw.close()


def test_a_client_that_reads_nothing_is_closed_after_the_write_timeout(serve: Serve, app: App) -> None:
    """A window opened wide but no byte read: bounded output waits, then the connection closes."""
    server = HttpServer("127.0.0.1", 0, routes=app.routes(), write_timeout=0.5)
    url = serve(server)
    raw = RawH2(_port(url))
    raw.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sid = raw.request("/flood")
    raw.h2.increment_flow_control_window(2**31 - 1 - 65535, sid)
    raw.h2.increment_flow_control_window(2**31 - 1 - 65535)
    raw.flush()
    wait_for(lambda: app.produced > 0, message="the producer did not start")
    wait_for(lambda: server.open_connections == 0, message="the stalled connection was not closed")
    # The producer was held back by the outbox mark (plus what the kernel buffers took).
    assert app.produced * CHUNK < 64 * 1024 * 1024
    raw.close()
    with _h2_client() as client:
        assert client.get(url + "/hello").status_code == 200


@pytest.mark.parametrize("split", range(1, len(PREFACE)))
def test_preface_split_across_reads(url: str, split: int) -> None:
    raw = RawH2(_port(url), preface=False)
    data = raw.h2.data_to_send()
    assert data.startswith(PREFACE)
    raw.sock.sendall(data[:split])
    time.sleep(0.02)  # a pause: the parts arrive in separate reads (the answer must not depend on it)
    raw.sock.sendall(data[split:])
    assert raw.response(raw.request("/hello"))[:3:2] == (200, b"Hello, world!")
    raw.close()


@pytest.mark.parametrize(
    "garbage", [b"\x00\x00\x01\x09\x00\x00\x00\x00\x01x", b"GET / HTTP/1.1\r\n\r\n", b"\xff" * 64]
)
def test_garbage_after_the_preface_is_a_goaway(url: str, garbage: bytes) -> None:
    with socket.create_connection(("127.0.0.1", _port(url)), timeout=HANG_TIMEOUT) as sock:
        sock.sendall(PREFACE + garbage)
        raw = RawH2.__new__(RawH2)
        raw.sock, raw.buffer, raw.frames, raw.closed, raw.decoder = sock, b"", [], False, Decoder()
        assert raw.goaway().error_code != NO_ERROR
    with _h2_client() as client:
        assert client.get(url + "/hello").status_code == 200


def test_shutdown_sends_goaway_and_lets_the_stream_in_flight_finish(app: App) -> None:
    thread = ServerThread(HttpServer("127.0.0.1", 0, routes=app.routes(), shutdown_grace=HANG_TIMEOUT))
    url = thread.start()
    raw = RawH2(_port(url))
    sid = raw.request("/slow")
    assert app.slow_started.wait(HANG_TIMEOUT)
    stopper = threading.Thread(target=thread.stop)
    stopper.start()
    goaway = raw.goaway()
    assert goaway.error_code == NO_ERROR and goaway.last_stream_id == sid
    app.release.set()
    status, _, body = raw.response(sid)
    assert (status, body) == (200, b"done")
    stopper.join(HANG_TIMEOUT)
    assert not stopper.is_alive()
    while raw.next_frame() is not None:  # then the server closes the connection
        pass
    raw.close()


def test_event_streams_end_with_their_shutdown_event_over_http2(app: App) -> None:
    thread = ServerThread(HttpServer("127.0.0.1", 0, routes=app.routes()))
    url = thread.start()
    raw = RawH2(_port(url))
    sid = raw.request("/events")
    raw.until(lambda f: isinstance(f, DataFrame) and f.stream_id == sid)
    stopper = threading.Thread(target=thread.stop)
    stopper.start()
    body = b""
    while True:
        frame = raw.until(lambda f: isinstance(f, DataFrame) and f.stream_id == sid)
        body += frame.data
        if "END_STREAM" in frame.flags:
            break
    assert body.endswith(b": server shutting down\n\n")
    stopper.join(HANG_TIMEOUT)
    assert not stopper.is_alive() and app.stream_closed.is_set()
    raw.close()


def test_idle_connection_gets_goaway_after_keepalive_timeout(serve: Serve, app: App) -> None:
    url = serve(HttpServer("127.0.0.1", 0, routes=app.routes(), keepalive_timeout=0.3))
    raw = RawH2(_port(url))
    assert raw.response(raw.request("/hello"))[0] == 200
    assert raw.goaway().error_code == NO_ERROR
    while raw.next_frame() is not None:  # then the server closes the connection
        pass
    assert raw.closed
    raw.close()


# -- HTTP/1.1 stays byte-for-byte: the hostile corpus with HTTP/2 on and off -------------------

CORPUS = Path(__file__).parent / "corpus" / "requests"
CORPUS_FILES = sorted(p.name for p in CORPUS.glob("*.http") if p.name != "version-http2-preface.http")


def _answer(url: str, parts: list[bytes]) -> bytes:
    with socket.create_connection(("127.0.0.1", _port(url)), timeout=HANG_TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for number, part in enumerate(parts):
            if number:
                time.sleep(0.01)
            sock.sendall(part)
        sock.shutdown(socket.SHUT_WR)  # (some files announce more body than they carry)
        return _no_date(read_until_closed(sock))


def test_corpus_answers_are_the_same_with_http2_on() -> None:
    """Every file sent whole, and split inside its first bytes (where the preface is looked for)."""
    from test_corpus import corpus_server

    cases = []
    for name in CORPUS_FILES:
        raw = (CORPUS / name).read_bytes()
        cases += [(name, [raw])] + [
            (name, [raw[:point], raw[point:]]) for point in (1, 8) if point < len(raw)
        ]
    answers = []
    for http2 in (True, False):  # one loop per process at a time: one server, then the other
        server = corpus_server()
        server.http2 = http2
        with ServerThread(server) as url, ThreadPoolExecutor(32) as pool:
            # (many files end at the 0.5 s keep-alive or header timeout: in parallel)
            answers.append(list(pool.map(lambda case: _answer(url, case[1]), cases)))
    different = [(case[0], len(case[1])) for case, a, b in zip(cases, *answers, strict=True) if a != b]
    assert different == []


# -- a real browser: 8 EventSources and a fetch on one HTTPS origin ----------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_PAGE = """<!doctype html><html><body><pre id="result">pending</pre><script>
const sources = [];
const counts = {};
let fetching = false;
function opened() { return Object.values(counts).filter((n) => n >= 1).length; }
function onEvent(i) {
  counts[i] = (counts[i] || 0) + 1;
  if (opened() === 8 && !fetching) {  // all eight stream at once: now a fetch on the same origin
    fetching = true;
    const started = performance.now();
    fetch("/health").then((r) => r.text()).then((text) => {
      const entry = performance.getEntriesByName(location.origin + "/health")[0];
      const result = {
        health: text, streams: opened(), fetch_ms: performance.now() - started,
        page_protocol: performance.getEntriesByType("navigation")[0].nextHopProtocol,
        fetch_protocol: entry ? entry.nextHopProtocol : null,
      };
      sources.forEach((s) => s.close());
      document.getElementById("result").textContent = JSON.stringify(result);
    });
  }
}
for (let i = 0; i < 8; i++) {
  const source = new EventSource("/events?i=" + i);
  source.onmessage = () => onEvent(i);
  sources.push(source);
}
</script></body></html>"""


def _spki_hash(cert: Path) -> str:
    """The base64 SHA-256 of the certificate's public key (Chromium's --ignore-certificate-errors-spki-list)."""
    pubkey = subprocess.run(
        ["openssl", "x509", "-pubkey", "-noout", "-in", str(cert)], check=True, capture_output=True
    )
    der = subprocess.run(
        ["openssl", "pkey", "-pubin", "-outform", "der"], input=pubkey.stdout, check=True, capture_output=True
    )
    return base64.b64encode(hashlib.sha256(der.stdout).digest()).decode()


@pytest.mark.skipif(CHROMIUM is None, reason="needs headless chromium (apt-get install chromium)")
def test_chromium_opens_eight_event_sources_and_a_fetch_over_http2(
    certificate: tuple[Path, Path], app: App, tmp_path: Path
) -> None:
    assert CHROMIUM is not None
    routes = app.routes()

    async def page(request: Request) -> Response:
        return Response(BROWSER_PAGE, content_type="text/html; charset=utf-8")

    async def health(request: Request) -> Response:
        return Response("ok", content_type="text/plain")

    routes.update({"/": page, "/health": health})
    context = server_context(str(certificate[0]), str(certificate[1]))
    with ServerThread(HttpServer("127.0.0.1", 0, routes=routes, ssl_context=context)) as url:
        command = [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--ignore-certificate-errors-spki-list={_spki_hash(certificate[0])}",
            "--virtual-time-budget=20000", "--dump-dom", url.replace("http://127.0.0.1", "https://localhost") + "/",
        ]  # fmt: skip
        result = subprocess.run(command, capture_output=True, timeout=120)
    match = re.search(rb'<pre id="result">(.*?)</pre>', result.stdout, re.DOTALL)
    assert match, result.stdout[-2000:] + result.stderr[-2000:]
    text = html.unescape(match.group(1).decode())
    assert text != "pending", "not all eight event streams were open at once with the fetch"
    outcome = json.loads(text)
    assert outcome["health"] == "ok" and outcome["streams"] == 8
    assert outcome["page_protocol"] == "h2" and outcome["fetch_protocol"] == "h2"


# -- the services -------------------------------------------------------------------------------


def test_services_serve_http2_by_alpn_and_prior_knowledge(
    certificate: tuple[Path, Path], tmp_path: Path
) -> None:
    tls = ["--certfile", str(certificate[0]), "--keyfile", str(certificate[1])]
    verify = ssl.create_default_context(cafile=str(certificate[0]))
    stream = start_service("stream_service", tmp_path / "stream", *tls, "--access-log")
    try:
        with httpx.Client(http2=True, verify=verify, timeout=HANG_TIMEOUT) as client:
            with client.stream("GET", stream.url + "/events?count=3&interval_ms=10") as response:
                assert response.http_version == "HTTP/2"
                lines = [line for line in response.iter_lines() if line.startswith("data: ")]
            assert [json.loads(line[6:])["n"] for line in lines] == [1, 2, 3]
            completion = client.post(
                stream.url + "/v1/chat/completions",
                json={"model": "flowno-echo", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert completion.status_code == 200 and completion.http_version == "HTTP/2"
    finally:
        stream.stop()
    assert '"status": 200' in stream.stdout_text() or '"status":200' in stream.stdout_text()  # access log
    echo = start_service("echo_service", tmp_path / "echo")
    try:
        with _h2_client() as client:
            response = client.get(echo.url + "/health")
            assert response.status_code == 200 and response.http_version == "HTTP/2"
    finally:
        echo.stop()
    plain = start_service("echo_service", tmp_path / "plain", *tls, "--no-http2")
    try:
        with httpx.Client(http2=True, verify=verify, timeout=HANG_TIMEOUT) as client:
            assert client.get(plain.url + "/health").http_version == "HTTP/1.1"
    finally:
        plain.stop()


def test_metrics_tracing_and_server_timing_on_http2(serve: Serve, app: App) -> None:
    """The observability middleware are merged into the exchange observer (server/observer.py):
    HTTP/2 streams are counted, traced and timed as HTTP/1.1 exchanges are."""
    from flowno_io.server.tracing import ServerTimingMiddleware, TracingMiddleware

    routes = app.routes()
    routes["/trace"] = lambda request: {"trace_id": request.trace.trace_id}
    server = HttpServer(
        "127.0.0.1", 0, routes=routes, middleware=[TracingMiddleware(), ServerTimingMiddleware()]
    )
    server.enable_metrics()
    url = serve(server)
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    with _h2_client() as client:
        response = client.get(url + "/trace", headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"})
        assert response.http_version == "HTTP/2" and response.json() == {"trace_id": trace_id}
        assert response.headers["server-timing"].startswith("app;dur=")
        metrics = client.get(url + "/metrics").text
    assert 'flowno_http_server_requests_total{method="GET",route="/trace",status="200"} 1.0' in metrics
