"""HTTPS on HttpServer (ssl_context, io/tls_stream.py ServerTlsStream): handshakes, bad peers, streams.

Certificates are made for the test by the ``openssl`` command (skipped, with the reason, when it
is missing), as in ``test_client_tls.py``.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from service_process import ServiceProcess
from test_client_tls import make_certificate

from flowno_io import EventSourceResponse, HttpServer, Request, Response, Topic, sleep
from flowno_io.io.tls_stream import server_context
from flowno_io.testing import ServerThread

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")

Serve = Callable[[HttpServer], str]
EVENT_PAYLOAD = "x" * 20_000
#: Short, so the timeout test is quick; long enough for a real handshake on a loaded machine.
HANDSHAKE_TIMEOUT = 3.0


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("tls"), "local", "DNS:localhost,IP:127.0.0.1")


READING_BODY = threading.Event()


def _routes(news: Topic[bytes]) -> dict[Any, Any]:
    async def hello(request: Request) -> Response:
        return Response("hello over tls")

    async def slow_upload(request: Request) -> Response:
        READING_BODY.set()  # the test sends the body only now: the handler waits for it
        return Response(await request.body())

    async def upload(request: Request) -> Response:
        body = await request.body()
        return Response.json({"bytes": len(body), "last": body[-1:].decode()})

    async def ticks(request: Request) -> EventSourceResponse:
        async def produce() -> AsyncIterator[str]:
            yield "first"
            await sleep(30)  # heartbeats (sent by the stream monitor, not the worker) fill the gap

        return EventSourceResponse(produce(), ping_interval=0.05)

    async def subscribe(request: Request) -> EventSourceResponse:
        return EventSourceResponse(news.subscribe(max_buffer=1000), ping_interval=None)

    async def publish(request: Request) -> dict[str, int]:
        count = int(request.query_params["count"])
        for n in range(count):
            news.publish(f"id: {n}\ndata: {EVENT_PAYLOAD}\n\n".encode())
        return {"published": count}

    return {
        "/": hello,
        ("POST", "/upload"): upload,
        ("POST", "/slow"): slow_upload,
        "/ticks": ticks,
        "/news": subscribe,
        "/publish": publish,
    }


@pytest.fixture
def tls_server(certificate: tuple[Path, Path]) -> Iterator[tuple[HttpServer, str]]:
    context = server_context(str(certificate[0]), str(certificate[1]))
    server = HttpServer(
        "127.0.0.1", 0, routes=_routes(Topic()), ssl_context=context, tls_handshake_timeout=HANDSHAKE_TIMEOUT
    )
    with ServerThread(server) as url:
        yield server, url.replace("http://", "https://")


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


def _client(certificate: tuple[Path, Path], **kwargs: Any) -> httpx.Client:
    return httpx.Client(verify=ssl.create_default_context(cafile=str(certificate[0])), timeout=10, **kwargs)


def _wait(condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def test_httpx_gets_responses_on_one_kept_alive_connection(
    tls_server: tuple[HttpServer, str], certificate: tuple[Path, Path]
) -> None:
    server, url = tls_server
    with _client(certificate) as client:
        for _ in range(3):
            response = client.get(url + "/")
            assert response.text == "hello over tls" and response.http_version == "HTTP/1.1"
        big = b"a" * 300_000 + b"z"  # a body in many TLS records, read by the handler
        assert client.post(url + "/upload", content=big).json() == {"bytes": 300_001, "last": "z"}
    assert server.stats["connections_accepted"] == 1 and server.stats["requests_served"] == 4


def _tls_socket(url: str, certificate: tuple[Path, Path]) -> ssl.SSLSocket:
    context = ssl.create_default_context(cafile=str(certificate[0]))
    raw = socket.create_connection(("127.0.0.1", _port(url)), timeout=10)
    return context.wrap_socket(raw, server_hostname="localhost")


def _read_responses(tls: ssl.SSLSocket, count: int) -> list[bytes]:
    """``count`` Content-Length-framed responses (fails on a hang: the socket has a timeout)."""
    buffer, responses = b"", []
    while len(responses) < count:
        head_end = buffer.find(b"\r\n\r\n")
        if head_end >= 0:
            length = int(re.search(rb"content-length: (\d+)", buffer[:head_end].lower()).group(1))  # type: ignore[union-attr]
            if len(buffer) >= head_end + 4 + length:
                responses.append(buffer[: head_end + 4 + length])
                buffer = buffer[head_end + 4 + length :]
                continue
        chunk = tls.recv(65536)
        assert chunk, f"closed after {len(responses)} responses"
        buffer += chunk
    return responses


def test_pipelined_requests_over_tls(
    tls_server: tuple[HttpServer, str], certificate: tuple[Path, Path]
) -> None:
    server, url = tls_server
    with _tls_socket(url, certificate) as tls:
        tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n" * 20)  # one write, answered inline
        responses = _read_responses(tls, 20)
    assert all(r.endswith(b"hello over tls") for r in responses)
    assert server.stats["workers"] <= 1  # the handshake's worker at most: requests run in the driver


def test_records_read_ahead_by_a_body_read_are_served(
    tls_server: tuple[HttpServer, str], certificate: tuple[Path, Path]
) -> None:
    """A body read that waited may pull the next request's records into the TLS object too; the
    socket then never says "readable" for them, yet they must be answered (not left to time out)."""
    READING_BODY.clear()
    with _tls_socket(url := tls_server[1], certificate) as tls:
        tls.sendall(b"POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n")
        assert READING_BODY.wait(10), "the handler did not start"
        tls.sendall(b"body")  # one record...
        tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")  # ...and the next request in another
        first, second = _read_responses(tls, 2)
    assert first.endswith(b"\r\n\r\nbody") and second.endswith(b"hello over tls") and url


def test_every_fresh_connection_is_answered(
    tls_server: tuple[HttpServer, str], certificate: tuple[Path, Path]
) -> None:
    """A handshake can finish inline (the client's last flight already there) and must keep its
    connection: before the fix in _start ~1-2% of fresh connections were closed unanswered."""
    _, url = tls_server
    for n in range(300):
        with _tls_socket(url, certificate) as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while chunk := tls.recv(65536):
                data += chunk
        assert data.endswith(b"hello over tls"), f"connection {n} was closed unanswered: {data!r}"


def test_alpn_selects_http11(tls_server: tuple[HttpServer, str], certificate: tuple[Path, Path]) -> None:
    """A client offering only http/1.1 gets it (one offering h2 gets HTTP/2: test_http2.py)."""
    _, url = tls_server
    context = ssl.create_default_context(cafile=str(certificate[0]))
    context.set_alpn_protocols(["http/1.1"])
    raw = socket.create_connection(("127.0.0.1", _port(url)), timeout=5)
    with context.wrap_socket(raw, server_hostname="localhost") as tls:
        assert tls.selected_alpn_protocol() == "http/1.1"
        tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := tls.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and data.endswith(b"hello over tls")


@pytest.mark.parametrize(
    "first_bytes", [b"", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x16\x03\x01\x00\x05hello"]
)
def test_a_silent_or_garbage_handshake_is_closed_and_others_are_served(
    tls_server: tuple[HttpServer, str], certificate: tuple[Path, Path], first_bytes: bytes
) -> None:
    server, url = tls_server
    with socket.create_connection(("127.0.0.1", _port(url)), timeout=60) as bad:
        if first_bytes:
            bad.sendall(first_bytes)
        with _client(certificate) as client:  # the server serves others meanwhile
            assert client.get(url + "/").status_code == 200
        started = time.monotonic()
        received = b""
        try:
            while chunk := bad.recv(65536):
                received += chunk  # a TLS alert, perhaps; never an HTTP answer
        except ConnectionResetError:
            pass
        assert time.monotonic() - started < 45, "the handshake timeout did not close the connection"
    assert b"HTTP/1.1" not in received
    _wait(lambda: server.open_connections == 0, "the failed connection to be released")


def test_a_client_that_rejects_the_certificate_does_not_hurt_the_server(
    tls_server: tuple[HttpServer, str], certificate: tuple[Path, Path]
) -> None:
    server, url = tls_server
    for _ in range(3):
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(url + "/", verify=True, timeout=10)  # the system CAs do not know our certificate
    wrong_name = ssl.create_default_context(cafile=str(certificate[0]))
    with (
        socket.create_connection(("127.0.0.1", _port(url)), timeout=5) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        wrong_name.wrap_socket(raw, server_hostname="other.example")
    with _client(certificate) as client:
        assert client.get(url + "/").text == "hello over tls"
    _wait(lambda: server.open_connections == 0, "rejected connections to be released")


def test_event_stream_heartbeats_are_encrypted(
    tls_server: tuple[HttpServer, str], certificate: tuple[Path, Path]
) -> None:
    """Heartbeats are written by the stream monitor straight to the socket view: still TLS records."""
    _, url = tls_server
    with _client(certificate) as client, client.stream("GET", url + "/ticks") as response:
        lines: list[str] = []
        for line in response.iter_lines():
            lines.append(line)
            if lines.count(": ping") >= 3:
                break
    assert lines[0] == "data: first" and lines.count(": ping") >= 3


def test_a_client_leaving_an_event_stream_over_tls_is_released(
    tls_server: tuple[HttpServer, str], certificate: tuple[Path, Path]
) -> None:
    server, url = tls_server
    with _tls_socket(url, certificate) as tls:
        tls.sendall(b"GET /ticks HTTP/1.1\r\nHost: x\r\n\r\n")
        received = b""
        while b"data: first" not in received:
            chunk = tls.recv(65536)
            assert chunk, f"closed before the first event: {received!r}"
            received += chunk
        assert server.open_connections == 1
    _wait(lambda: server.open_connections == 0, "the stream's connection to be released")


def test_topic_fan_out_over_tls(tls_server: tuple[HttpServer, str], certificate: tuple[Path, Path]) -> None:
    """Published items go out from the publisher's task (the view's send), larger than a socket buffer."""
    _, url = tls_server
    count = 60  # 1.2 MB: more than the socket buffers take at once, so records wait in the backlog
    with _client(certificate) as subscriber, subscriber.stream("GET", url + "/news") as response:
        with _client(certificate) as publisher:
            assert publisher.get(url + f"/publish?count={count}").json() == {"published": count}
        ids: list[int] = []
        for line in response.iter_lines():
            if line.startswith("id: "):
                ids.append(int(line[4:]))
            elif line.startswith("data: "):
                assert line == f"data: {EVENT_PAYLOAD}"
            if len(ids) == count:
                break
    assert ids == list(range(count))


def test_close_ends_idle_tls_connections_at_once(certificate: tuple[Path, Path]) -> None:
    context = server_context(str(certificate[0]), str(certificate[1]))
    server = HttpServer("127.0.0.1", 0, routes=_routes(Topic()), ssl_context=context, shutdown_grace=60)
    thread = ServerThread(server)
    url = thread.start().replace("http://", "https://")
    with _client(certificate) as client:
        assert client.get(url + "/").status_code == 200  # the connection stays open, idle
        started = time.monotonic()
        thread.stop()
    assert time.monotonic() - started < 30, "close() waited for an idle TLS connection"


# -- the stream service over TLS ------------------------------------------------------------------

_LISTENING = re.compile(r"^listening on (https://\S+)$", re.MULTILINE)


@pytest.fixture
def stream_service(tmp_path: Path, certificate: tuple[Path, Path]) -> Iterator[ServiceProcess]:
    stdout, stderr = tmp_path / "stdout.log", tmp_path / "stderr.log"
    command = [sys.executable, "-m", "stream_service", "--host", "127.0.0.1", "--port", "0", "--access-log"]
    command += ["--certfile", str(certificate[0]), "--keyfile", str(certificate[1])]
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err)
    service = ServiceProcess(process, "", stdout, stderr)
    try:
        _wait(
            lambda: _LISTENING.search(service.stdout_text()) is not None or process.poll() is not None,
            "start",
            20,
        )
        match = _LISTENING.search(service.stdout_text())
        assert match, service.stderr_text()
        service.url = match.group(1)
        yield service
    finally:
        service.stop()


def test_stream_service_serves_sse_over_tls(
    stream_service: ServiceProcess, certificate: tuple[Path, Path]
) -> None:
    with _client(certificate) as client:
        with client.stream("GET", stream_service.url + "/events?count=3&interval_ms=10") as response:
            assert response.headers["content-type"] == "text/event-stream"
            events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
        assert [event["n"] for event in events] == [1, 2, 3]
        completion = client.post(
            stream_service.url + "/v1/chat/completions",
            json={"model": "flowno-echo", "messages": [{"role": "user", "content": "hi"}]},
        )
        assert completion.status_code == 200


def test_service_refuses_a_key_without_certificate(certificate: tuple[Path, Path]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "echo_service", "--port", "0", "--keyfile", str(certificate[1])],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode != 0 and b"--keyfile needs --certfile" in result.stderr
