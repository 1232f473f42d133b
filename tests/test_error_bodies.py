"""One error body shape, ``{"error": message, "status": code, ...}``, from the library and both
services; ``/status/204`` carries no JSON content type; the first Ctrl-C says how long the service
waits and that a second one forces the exit."""

from __future__ import annotations

import json
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from service_process import start_service, wait_exit

from echo_service.app import build_server as build_echo
from flowno_io import HttpServer
from stream_service.app import build_server as build_stream

Fetch = tuple[int, dict[str, str], bytes]


def _fetch(url: str, method: str = "GET", body: bytes | None = None, **headers: str) -> Fetch:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read()


def _assert_error_shape(status: int, headers: dict[str, str], body: bytes, expected: int) -> dict[str, Any]:
    assert status == expected, body
    assert headers["content-type"] == "application/json"
    error = json.loads(body)
    assert isinstance(error["error"], str) and error["error"]
    assert error["status"] == expected, error
    return error


def test_library_404_and_405_bodies(serve: Callable[[HttpServer], str]) -> None:
    server = HttpServer("127.0.0.1", 0)
    server.add_route("/only-get", lambda request: "ok", methods=["GET"])
    url = serve(server)
    error = _assert_error_shape(*_fetch(url + "/nowhere"), 404)
    assert error == {"error": "not found", "status": 404, "path": "/nowhere"}
    status, headers, body = _fetch(url + "/only-get", "DELETE")
    error = _assert_error_shape(status, headers, body, 405)
    assert error == {"error": "method DELETE not allowed", "status": 405, "allow": ["GET", "HEAD"]}
    assert headers["allow"] == "GET, HEAD"


def _service_errors(url: str, requests: list[tuple[str, str, bytes | None, int]]) -> list[dict[str, Any]]:
    found = []
    for method, path, body, expected in requests:
        found.append(_assert_error_shape(*_fetch(url + path, method, body), expected))
    return found


def test_echo_service_errors_share_the_shape(serve: Callable[[HttpServer], str]) -> None:
    # (a service handler that crashes answers 500 in this shape: test_validation.py)
    url = serve(build_echo("127.0.0.1", 0))
    errors = _service_errors(
        url,
        [
            ("GET", "/nowhere", None, 404),
            ("POST", "/health", b"", 405),
            ("GET", "/delay/soon", None, 400),
            ("GET", "/bytes/99999999999999999999999999", None, 400),
            ("GET", "/status/100", None, 400),
        ],
    )
    assert errors[0]["path"] == "/nowhere"
    assert errors[1]["allow"] == ["GET", "HEAD"]
    assert errors[3]["value"] == "99999999999999999999999999"  # as sent: a string, never a huge number


def test_stream_service_errors_share_the_shape(serve: Callable[[HttpServer], str]) -> None:
    url = serve(build_stream("127.0.0.1", 0))
    _service_errors(
        url,
        [
            ("GET", "/nowhere", None, 404),
            ("DELETE", "/events", None, 405),
            ("GET", "/events?count=x", None, 400),
            ("GET", "/ticker?count=0", None, 400),
        ],
    )
    # The OpenAI-compatible routes keep OpenAI's shape (its clients read error.message) plus status.
    status, headers, body = _fetch(url + "/v1/chat/completions", "POST", b'{"messages": 3}')
    assert status == 400 and headers["content-type"] == "application/json"
    error = json.loads(body)
    assert error["status"] == 400 and error["error"]["type"] == "invalid_request_error"
    assert "messages" in error["error"]["message"]
    status, _, body = _fetch(url + "/v1/chat/completions", "POST", b"{not json", **{"Content-Type": "x"})
    assert status == 400 and json.loads(body)["status"] == 400


@pytest.mark.parametrize("code", [204, 304])
def test_status_without_body_has_no_content_type(serve: Callable[[HttpServer], str], code: int) -> None:
    url = serve(build_echo("127.0.0.1", 0))
    with socket.create_connection((url.split("//")[1].split(":")[0], int(url.rsplit(":", 1)[1])), 10) as sock:
        sock.sendall(f"GET /status/{code} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(f"HTTP/1.1 {code} ".encode())
    assert b"content-type" not in head.lower()
    assert body == b""


def test_server_rejections_share_the_shape(serve: Callable[[HttpServer], str]) -> None:
    url = serve(HttpServer("127.0.0.1", 0, max_body_bytes=10, routes={"/": lambda request: "ok"}))
    _assert_error_shape(*_fetch(url + "/", "POST", b"x" * 100), 413)


def test_first_ctrl_c_says_how_long_it_waits_and_how_to_force(tmp_path: Path) -> None:
    service = start_service("echo_service", tmp_path)
    try:
        host, port = service.url.split("//")[1].rsplit(":", 1)
        # An in-flight request, so the stop has something to wait for.
        with socket.create_connection((host, int(port)), 10) as sock:
            sock.sendall(b"GET /delay/1500 HTTP/1.1\r\nHost: t\r\n\r\n")
            service.process.send_signal(signal.SIGINT)
            deadline = time.monotonic() + 30
            while "Ctrl-C again" not in service.stderr_text() and time.monotonic() < deadline:
                time.sleep(0.05)
            log = service.stderr_text()
            assert "stopping: waiting up to 10 s for in-flight requests to finish" in log
            assert "press Ctrl-C again (or send a second SIGTERM) to exit at once" in log
            assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")  # the in-flight request finished
        assert wait_exit(service.process, 30) == 0
    finally:
        service.stop()
