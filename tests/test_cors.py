"""CORS (server/cors.py): preflights, actual requests, refused origins, Vary, errors; the services' --cors-origin."""

from __future__ import annotations

import html
import http.server
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
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


# -- a real browser -------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PAGE = """<!doctype html><html><body><pre id="result">pending</pre><script>
const api = new URLSearchParams(location.search).get("api");
const out = {};
function finish() {
  if (("events" in out || "eventsError" in out) && ("post" in out || "postError" in out)) {
    document.getElementById("result").textContent = JSON.stringify(out);
  }
}
const source = new EventSource(api + "/events");
const seen = [];
source.onmessage = (event) => {
  seen.push(event.data);
  if (seen.length === 2) { source.close(); out.events = seen; finish(); }
};
source.onerror = () => { if (seen.length < 2) { source.close(); out.eventsError = true; finish(); } };
fetch(api + "/data", {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify({n: 1})})
  .then((response) => response.json())
  .then((body) => { out.post = body; finish(); })
  .catch((error) => { out.postError = String(error); finish(); });
</script></body></html>"""


class _PageServer(http.server.ThreadingHTTPServer):
    """The page's origin: a stdlib server on its own port, serving one HTML page."""

    def __init__(self, page: str) -> None:
        body = page.encode()

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


def _browse(url: str, profile: Path) -> dict[str, Any]:
    """Load ``url`` in headless Chromium; the JSON the page wrote into #result."""
    assert CHROMIUM is not None
    command = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        f"--user-data-dir={profile}", "--virtual-time-budget=10000", "--dump-dom", url,
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, timeout=90)
    match = re.search(rb'<pre id="result">(.*?)</pre>', result.stdout, re.DOTALL)
    assert match, result.stdout[-2000:] + result.stderr[-2000:]
    text = html.unescape(match.group(1).decode())
    assert text != "pending", "the page did not finish (both the stream and the POST must settle)"
    return dict(json.loads(text))


@pytest.mark.skipif(CHROMIUM is None, reason="needs headless chromium (apt-get install chromium)")
@pytest.mark.parametrize("allowed", [True, False])
def test_a_page_on_another_origin_in_chromium(serve: Serve, tmp_path: Path, allowed: bool) -> None:
    """A page on port A consumes /events and POSTs JSON to the API on port B (preflighted)."""
    page = _PageServer(PAGE)
    try:
        api = serve(_server(CORSMiddleware([page.origin if allowed else "http://elsewhere.example"])))
        result = _browse(f"{page.origin}/?api={api}", tmp_path / "profile")
    finally:
        page.stop()
    if allowed:
        assert result == {"events": ["a", "b"], "post": {"got": {"n": 1}}}
    else:
        assert result["eventsError"] is True and "Failed to fetch" in result["postError"]
