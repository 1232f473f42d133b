"""CORS (server/cors.py): preflights, actual requests, refused origins, Vary, errors; the services' --cors-origin."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from rawhttp import read_until_closed
from service_process import ServiceProcess, start_service

from flowno_io import EventSourceResponse, HttpServer, Request, Response
from flowno_io.server.cors import CORSMiddleware

Serve = Callable[[HttpServer], str]
APP = "http://app.example:3000"
EVIL = "http://evil.example"


def _routes() -> dict[Any, Any]:
    async def data(request: Request) -> Response:
        return Response.json({"ok": True}, headers={"X-Request-Id": "7"})

    async def post(request: Request) -> Any:
        return {"got": await request.json()}

    async def events(request: Request) -> EventSourceResponse:
        return EventSourceResponse(iter(["a", "b"]), ping_interval=None)

    async def boom(request: Request) -> Response:
        raise RuntimeError("boom")

    return {("GET", "/data"): data, ("POST", "/data"): post, ("GET", "/events"): events, "/boom": boom}


def _server(cors: CORSMiddleware) -> HttpServer:
    return HttpServer("127.0.0.1", 0, routes=_routes(), middleware=[cors])


def _preflight(
    url: str, origin: str, method: str = "POST", headers: str | None = "content-type"
) -> httpx.Response:
    request_headers = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers is not None:
        request_headers["Access-Control-Request-Headers"] = headers
    return httpx.options(url, headers=request_headers)


def _cors_fields(response: httpx.Response) -> dict[str, str]:
    return {name: value for name, value in response.headers.items() if name.startswith("access-control-")}


def test_preflight_of_an_allowed_origin_is_answered_without_an_options_route(serve: Serve) -> None:
    url = serve(_server(CORSMiddleware([APP], max_age=123)))
    response = _preflight(url + "/data", APP)
    assert response.status_code == 204 and response.content == b""
    assert _cors_fields(response) == {
        "access-control-allow-origin": APP,
        "access-control-allow-methods": "GET, HEAD, POST",
        "access-control-allow-headers": "content-type, last-event-id",
        "access-control-max-age": "123",
    }
    assert "Origin" in response.headers["vary"]


def test_without_the_middleware_a_preflight_is_a_405(serve: Serve) -> None:
    """What a browser met before: the route has no OPTIONS handler (one loop per process: own test)."""
    url = serve(HttpServer("127.0.0.1", 0, routes=_routes()))
    assert _preflight(url + "/data", APP).status_code == 405


@pytest.mark.parametrize(
    ("origin", "method", "headers"),
    [(EVIL, "POST", "content-type"), (APP, "DELETE", None), (APP, "POST", "content-type, x-secret")],
)
def test_refused_preflight_has_no_cors_headers(
    serve: Serve, origin: str, method: str, headers: str | None
) -> None:
    url = serve(_server(CORSMiddleware([APP])))
    response = _preflight(url + "/data", origin, method, headers)
    assert response.status_code == 403
    assert _cors_fields(response) == {}
    assert "CORS preflight refused" in response.json()["error"]


def test_actual_request_from_an_allowed_origin(serve: Serve) -> None:
    url = serve(_server(CORSMiddleware([APP], expose_headers=["X-Request-Id"])))
    response = httpx.get(url + "/data", headers={"Origin": APP})
    assert response.json() == {"ok": True}
    assert _cors_fields(response) == {
        "access-control-allow-origin": APP,
        "access-control-expose-headers": "X-Request-Id",
    }
    assert response.headers["vary"] == "Origin"
    posted = httpx.post(url + "/data", json={"n": 1}, headers={"Origin": APP})
    assert posted.json() == {"got": {"n": 1}} and posted.headers["access-control-allow-origin"] == APP


def test_refused_origin_gets_the_response_without_cors_headers(serve: Serve) -> None:
    url = serve(_server(CORSMiddleware([APP])))
    response = httpx.get(url + "/data", headers={"Origin": EVIL})
    assert response.status_code == 200 and _cors_fields(response) == {}
    assert response.headers["vary"] == "Origin"
    plain = httpx.get(url + "/data")  # no Origin (curl, a server): same answer, still Vary
    assert _cors_fields(plain) == {} and plain.headers["vary"] == "Origin"


def test_wildcard_without_credentials_is_a_star_and_does_not_vary(serve: Serve) -> None:
    url = serve(_server(CORSMiddleware(["*"])))
    response = httpx.get(url + "/data", headers={"Origin": EVIL})
    assert response.headers["access-control-allow-origin"] == "*"
    assert "vary" not in response.headers
    assert _preflight(url + "/data", EVIL).headers["access-control-allow-origin"] == "*"


def test_wildcard_with_credentials_echoes_the_origin(serve: Serve) -> None:
    url = serve(_server(CORSMiddleware(["*"], allow_credentials=True, allow_headers=["*"])))
    response = httpx.get(url + "/data", headers={"Origin": EVIL})
    assert response.headers["access-control-allow-origin"] == EVIL
    assert response.headers["access-control-allow-credentials"] == "true"
    assert response.headers["vary"] == "Origin"
    preflight = _preflight(url + "/data", EVIL, "PUT", "x-anything, content-type")
    assert preflight.status_code == 403  # PUT is not among the methods
    preflight = _preflight(url + "/data", EVIL, "POST", "x-anything, content-type")
    assert preflight.headers["access-control-allow-headers"] == "x-anything, content-type"


def test_event_stream_carries_cors_headers(serve: Serve) -> None:
    url = serve(_server(CORSMiddleware([APP])))
    with httpx.stream("GET", url + "/events", headers={"Origin": APP}) as response:
        assert response.headers["access-control-allow-origin"] == APP
        assert response.headers["content-type"] == "text/event-stream"
        assert response.read() == b"data: a\n\ndata: b\n\n"


def test_errors_the_server_answers_carry_cors_headers(serve: Serve) -> None:
    url = serve(_server(CORSMiddleware([APP])))
    crashed = httpx.get(url + "/boom", headers={"Origin": APP})
    assert crashed.status_code == 500 and crashed.headers["access-control-allow-origin"] == APP
    bad_json = httpx.post(
        url + "/data", content=b"{nope", headers={"Origin": APP, "Content-Type": "application/json"}
    )
    assert bad_json.status_code == 400 and bad_json.headers["access-control-allow-origin"] == APP
    refused = httpx.get(url + "/boom", headers={"Origin": EVIL})
    assert refused.status_code == 500 and _cors_fields(refused) == {}
    # A request whose head cannot be parsed has no Origin to answer.
    port = int(url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /data HTTP/1.1\r\nOrigin: " + APP.encode() + b"\r\n\r\n")  # no Host: 400
        raw = read_until_closed(sock)
    assert raw.startswith(b"HTTP/1.1 400") and b"access-control" not in raw.lower()


def test_origins_are_validated() -> None:
    with pytest.raises(ValueError, match="scheme://host"):
        CORSMiddleware(["app.example"])
    with pytest.raises(ValueError, match="scheme://host"):
        CORSMiddleware(["http://app.example/path"])
    assert CORSMiddleware(["HTTP://App.Example:3000/"]).origin_allowed(APP)


# -- the services ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stream_service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    service = start_service(
        "stream_service",
        tmp_path_factory.mktemp("stream-cors"),
        "--cors-origin",
        APP,
        "--cors-origin",
        "http://b.example",
    )
    try:
        yield service
    finally:
        service.stop()


def test_stream_service_takes_cors_origins(stream_service: ServiceProcess) -> None:
    url = stream_service.url
    preflight = _preflight(url + "/v1/chat/completions", "http://b.example")
    assert (
        preflight.status_code == 204
        and preflight.headers["access-control-allow-origin"] == "http://b.example"
    )
    with httpx.stream("GET", url + "/events?count=2&interval_ms=0", headers={"Origin": APP}) as response:
        assert response.headers["access-control-allow-origin"] == APP
        assert response.read().count(b"data: ") == 2
    refused = httpx.get(url + "/health", headers={"Origin": EVIL})
    assert refused.status_code == 200 and "access-control-allow-origin" not in refused.headers


def test_echo_service_takes_a_wildcard_origin(tmp_path: Path) -> None:
    service = start_service("echo_service", tmp_path, "--cors-origin", "*")
    try:
        response = httpx.get(service.url + "/", headers={"Origin": EVIL})
        assert response.headers["access-control-allow-origin"] == "*"
    finally:
        service.stop()


def test_a_bad_cors_origin_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "echo_service", "--port", "0", "--cors-origin", "not-an-origin"],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode != 0 and b"--cors-origin" in result.stderr
