"""The echo service end to end: ``python -m echo_service`` as a subprocess on an ephemeral port.

Every endpoint over HTTP (httpx), the JSON access log, errors, env-var fallbacks, and shutdown:
SIGTERM lets an in-flight request finish, and leaves no process behind with ``--workers 2``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers import HANG_TIMEOUT, wait_for
from service_process import STARTUP_TIMEOUT, ServiceProcess, start_service, wait_exit

from flowno_io import HttpServer, Request
from flowno_io.testing import ServerThread


def children_of(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    service = start_service("echo_service", tmp_path_factory.mktemp("echo"), "--access-log")
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def client(echo: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=echo.url, timeout=10) as client:
        yield client


# -- endpoints ----------------------------------------------------------------------------------


def test_index_lists_every_route(client: httpx.Client) -> None:
    response = client.get("/")
    assert response.status_code == 200
    routes = {route["path"]: route for route in response.json()["routes"]}
    expected = {"/", "/echo", "/echo/raw", "/delay/{ms}", "/bytes/{n}", "/status/{code}", "/health"}
    assert set(routes) == expected
    assert routes["/echo"]["methods"] == ["*"]
    assert routes["/health"]["methods"] == ["GET", "HEAD"]
    assert all(route["summary"] for route in routes.values())


def test_echo_returns_the_request_as_json(client: httpx.Client) -> None:
    response = client.post(
        "/echo?a=1&a=2&b=x%20y", content="héllo", headers={"X-Trace": "t1", "Content-Type": "text/plain"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    data = response.json()
    assert data["method"] == "POST"
    assert data["path"] == "/echo"
    assert data["query"] == {"a": ["1", "2"], "b": "x y"}
    assert data["query_string"] == "a=1&a=2&b=x%20y"
    assert data["headers"]["x-trace"] == "t1"
    assert data["headers"]["content-type"] == "text/plain"
    assert data["body"] == "héllo"
    assert data["body_encoding"] == "utf-8"
    assert data["body_bytes"] == len("héllo".encode())
    assert data["client"]["host"] == "127.0.0.1"
    assert isinstance(data["client"]["port"], int)


def test_echo_sends_a_non_utf8_body_as_base64(client: httpx.Client) -> None:
    body = bytes([0xFF, 0x00, 0x80, 0x41])
    data = client.put("/echo", content=body).json()
    assert data["method"] == "PUT"
    assert data["body_encoding"] == "base64"
    assert base64.b64decode(data["body"]) == body


@pytest.mark.parametrize("method", ["GET", "DELETE", "PATCH", "OPTIONS"])
def test_echo_answers_any_method(client: httpx.Client, method: str) -> None:
    response = client.request(method, "/echo")
    assert response.status_code == 200
    assert response.json()["method"] == method
    assert response.json()["body"] == ""


def test_echo_raw_returns_the_body_with_its_content_type(client: httpx.Client) -> None:
    body = bytes(range(256)) * 40
    response = client.post("/echo/raw", content=body, headers={"Content-Type": "image/x-test"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/x-test"
    assert response.content == body
    response = client.post("/echo/raw", content=b"plain")
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.content == b"plain"


def test_delay_waits_and_is_capped(client: httpx.Client) -> None:
    start = time.monotonic()
    response = client.get("/delay/200")
    assert response.status_code == 200
    assert time.monotonic() - start >= 0.19
    assert response.json()["delay_ms"] == 200
    over = client.get("/delay/10001")
    assert over.status_code == 400
    assert over.json()["param"] == "ms"
    assert client.get("/delay/abc").status_code == 400


def test_bytes_are_deterministic_and_capped(client: httpx.Client) -> None:
    response = client.get("/bytes/1000")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/octet-stream"
    assert response.content == (bytes(range(256)) * 4)[:1000]
    seeded = client.get("/bytes/4096", params={"seed": 42}).content
    assert seeded == random.Random(42).randbytes(4096)
    assert client.get("/bytes/4096", params={"seed": 42}).content == seeded
    assert client.get("/bytes/0").content == b""
    big = client.get(f"/bytes/{10 * 1024 * 1024}")
    assert len(big.content) == 10 * 1024 * 1024
    assert client.get(f"/bytes/{10 * 1024 * 1024 + 1}").status_code == 400
    assert client.get("/bytes/-1").status_code == 400
    assert client.get("/bytes/5", params={"seed": "x"}).status_code == 400


@pytest.mark.parametrize("code", [200, 201, 204, 301, 404, 418, 500, 503, 599])
def test_status_answers_the_code(client: httpx.Client, code: int) -> None:
    response = client.get(f"/status/{code}", follow_redirects=False)
    assert response.status_code == code
    if code != 204:
        assert response.json() == {"status": code}


@pytest.mark.parametrize("code", ["99", "100", "199", "600", "abc", "2000"])
def test_status_rejects_invalid_codes(client: httpx.Client, code: str) -> None:
    response = client.get(f"/status/{code}")
    assert response.status_code == 400
    assert response.json()["param"] == "code"
    assert "error" in response.json()


def test_health_reports_uptime_connections_requests_pid(client: httpx.Client, echo: ServiceProcess) -> None:
    first = client.get("/health").json()
    second = client.get("/health").json()
    assert first["status"] == "ok"
    assert first["pid"] == echo.process.pid
    assert second["requests_served"] > first["requests_served"]
    assert second["uptime_s"] >= first["uptime_s"] > 0
    assert second["open_connections"] >= 1


def test_unknown_path_404_and_wrong_method_405_are_json(client: httpx.Client) -> None:
    missing = client.get("/no/such/path")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not found"
    wrong = client.delete("/health")
    assert wrong.status_code == 405
    assert wrong.headers["allow"] == "GET, HEAD"
    assert wrong.json()["allow"] == ["GET", "HEAD"]


def test_head_gets_no_body(client: httpx.Client) -> None:
    response = client.head("/bytes/100")
    assert response.status_code == 200
    assert response.headers["content-length"] == "100"
    assert response.content == b""


def test_access_log_has_one_json_line_per_request(client: httpx.Client, echo: ServiceProcess) -> None:
    marker = f"/status/{random.choice([418, 429, 451])}"
    client.get(marker, params={"probe": "access-log"})
    client.get("/no-such-route-for-access-log")

    def records() -> list[dict[str, object]]:
        return [json.loads(line) for line in echo.stdout_text().splitlines() if line.startswith("{")]

    # the log is written after each response: wait for the second request's line
    wait_for(
        lambda: any(r.get("path") == "/no-such-route-for-access-log" for r in records()),
        message="the access log line never appeared",
    )
    [line] = [r for r in records() if r["path"] == marker and r.get("query") == "probe=access-log"]
    assert line["method"] == "GET"
    assert line["status"] == int(marker.rsplit("/", 1)[1])
    assert line["bytes"] == len(json.dumps({"status": line["status"]}, separators=(",", ":")))
    assert isinstance(line["duration_ms"], float | int)
    assert str(line["client"]).startswith("127.0.0.1:")
    [missing] = [r for r in records() if r["path"] == "/no-such-route-for-access-log"]
    assert missing["status"] == 404


def _raw_exchange(url: str, data: bytes, *, close_write: bool = False) -> bytes:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(data)
        if close_write:
            sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_body_over_the_limit_is_a_413_json(echo: ServiceProcess) -> None:
    answer = _raw_exchange(echo.url, b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 20000000\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413 ")
    assert "error" in json.loads(body)


def test_client_leaving_mid_body_is_logged_as_499_without_a_traceback(echo: ServiceProcess) -> None:
    request = b"POST /echo?probe=client-left HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc"
    assert _raw_exchange(echo.url, request, close_write=True) == b""
    wait_for(lambda: "probe=client-left" in echo.stdout_text(), message="no access log line for the 499")
    [line] = [json.loads(text) for text in echo.stdout_text().splitlines() if "probe=client-left" in text]
    assert line["status"] == 499
    assert line["error"] == "ReadError"
    assert "echo_service.errors" not in echo.stderr_text()


def test_access_log_is_off_by_default_and_env_gives_host_and_port(tmp_path: Path) -> None:
    service = start_service(
        "echo_service", tmp_path, env={"ECHO_HOST": "127.0.0.1", "ECHO_PORT": "0"}, port_args=False
    )
    try:
        assert service.url.startswith("http://127.0.0.1:")
        assert httpx.get(service.url + "/health", timeout=10).status_code == 200
    finally:
        service.stop()
    assert service.process.returncode == 0
    assert [line for line in service.stdout_text().splitlines() if line.startswith("{")] == []


def test_bad_command_line_exits_non_zero(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "echo_service", "--workers", "0"], capture_output=True, timeout=30
    )
    assert result.returncode != 0
    assert b"--workers" in result.stderr


def test_handler_crash_is_a_500_json_logged_with_its_traceback(caplog: pytest.LogCaptureFixture) -> None:
    from flowno_io.service import RouteTable

    table = RouteTable("crash_test", access_log=True)

    @table.route("/boom", methods=["GET"])
    def boom(request: Request) -> str:
        raise RuntimeError("kaboom")

    server = HttpServer("127.0.0.1", 0)
    table.install(server)
    with caplog.at_level(logging.INFO), ServerThread(server) as url:
        response = httpx.get(url + "/boom", timeout=10)
    assert response.status_code == 500
    assert response.json() == {"error": "internal server error", "status": 500}
    [error] = [r for r in caplog.records if r.name == "crash_test.errors"]
    assert error.exc_info is not None and "kaboom" in str(error.exc_info[1])
    [access] = [json.loads(r.getMessage()) for r in caplog.records if r.name == "crash_test.access"]
    assert access["status"] == 500 and access["path"] == "/boom"


# -- shutdown -----------------------------------------------------------------------------------


def test_sigterm_lets_an_in_flight_request_finish(tmp_path: Path) -> None:
    service = start_service("echo_service", tmp_path)
    try:
        results: list[httpx.Response] = []
        thread = threading.Thread(
            target=lambda: results.append(httpx.get(service.url + "/delay/700", timeout=10))
        )
        thread.start()
        # /delay holds one connection; /health makes a second one.
        wait_for(
            lambda: httpx.get(service.url + "/health", timeout=HANG_TIMEOUT).json()["open_connections"] >= 2,
            message="the /delay request never arrived",
        )
        service.process.send_signal(signal.SIGTERM)
        thread.join(HANG_TIMEOUT)
        assert wait_exit(service.process, HANG_TIMEOUT) == 0
        assert [r.status_code for r in results] == [200]
        with pytest.raises(httpx.ConnectError):
            httpx.get(service.url + "/health", timeout=2)
    finally:
        service.stop()
    assert "SIGTERM: closing" in service.stderr_text()


def test_sigterm_with_workers_leaves_no_process_behind(tmp_path: Path) -> None:
    service = start_service("echo_service", tmp_path, "--workers", "2")
    try:
        wait_for(lambda: len(children_of(service.process.pid)) == 2, STARTUP_TIMEOUT, "two workers never ran")
        workers = children_of(service.process.pid)
        pids = {httpx.get(service.url + "/health", timeout=10).json()["pid"] for _ in range(10)}
        assert pids <= set(workers)
        service.process.send_signal(signal.SIGTERM)
        assert wait_exit(service.process, 15) == 0
        assert not [pid for pid in workers if pid_alive(pid)]
    finally:
        service.stop()
