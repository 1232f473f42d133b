"""The echo service: what the client sent, back to it; delays, sized bodies, any status.

Routes:

* ``ANY /echo`` → JSON: method, path, query, headers, body (UTF-8 text, or base64 when it is not
  UTF-8; ``body_encoding`` says which), client address.
* ``ANY /echo/raw`` → the request body, with the request's ``Content-Type``.
* ``GET /delay/{ms}`` → JSON after ``ms`` milliseconds (at most :data:`MAX_DELAY_MS`).
* ``GET /bytes/{n}`` → ``n`` deterministic bytes (at most :data:`MAX_BYTES`): the pattern
  ``00 01 .. ff`` repeated, or with ``?seed=S`` a seeded PRNG's bytes.
* ``GET /status/{code}`` → that status (200-599) with a JSON body.
* ``GET /health`` → uptime, open connections, requests served, pid.
* ``GET /`` → the route list.

Bad input (a non-integer, a value over a cap) → 400 with a JSON error body.

Example:
    >>> from flowno_io.testing import ServerThread
    >>> import urllib.request, json
    >>> with ServerThread(build_server("127.0.0.1", 0)) as url:
    ...     json.load(urllib.request.urlopen(url + "/echo?x=1"))["query"]
    {'x': '1'}
"""

from __future__ import annotations

import base64
import os
import random
import time
from typing import Any

from flowno_io import HttpServer, Request, Response, sleep
from flowno_io.service import RouteTable, json_error

__all__ = ["MAX_BYTES", "MAX_DELAY_MS", "build_server", "pattern_bytes", "seeded_bytes"]

#: Longest ``/delay/{ms}`` accepted, in milliseconds (more → 400).
MAX_DELAY_MS = 10_000
#: Largest ``/bytes/{n}`` accepted (more → 400).
MAX_BYTES = 10 * 1024 * 1024
#: Largest ``?seed=`` accepted by ``/bytes/{n}``.
MAX_SEED = 2**64 - 1

_PATTERN = bytes(range(256))


def _int_param(value: str, name: str, low: int, high: int) -> int | Response:
    """``value`` as an int within ``[low, high]``, or a 400 JSON error response."""
    if not value.isascii() or not value.isdigit():
        return json_error(400, f"{name} must be a non-negative integer", param=name, value=value)
    # Compare digits before converting: int() refuses over 4,300 digits, and the value is echoed
    # back as the text it was (JSON numbers beyond 64 bits cannot be encoded).
    number = int(value) if len(value.lstrip("0")) <= len(str(high)) else None
    if number is None or not low <= number <= high:
        return json_error(400, f"{name} must be within {low}-{high}", param=name, value=value)
    return number


def pattern_bytes(n: int) -> bytes:
    """``n`` bytes of the repeating pattern ``00 01 02 .. ff``.

    >>> pattern_bytes(3), len(pattern_bytes(1000))
    (b'\\x00\\x01\\x02', 1000)
    """
    repeats, rest = divmod(n, len(_PATTERN))
    return _PATTERN * repeats + _PATTERN[:rest]


def seeded_bytes(n: int, seed: int) -> bytes:
    """``n`` bytes from ``random.Random(seed)`` (the same bytes for the same seed, every run).

    >>> seeded_bytes(4, 7) == seeded_bytes(4, 7), seeded_bytes(4, 7) == seeded_bytes(4, 8)
    (True, False)
    """
    return random.Random(seed).randbytes(n)


def build_server(
    host: str = "127.0.0.1", port: int = 8080, *, access_log: bool = False, **limits: Any
) -> HttpServer:
    """The echo service's :class:`HttpServer` (not yet bound), with every route.

    Args:
        host: address to bind.
        port: port to bind (``0``: any free one).
        access_log: write one JSON access-log line per request (logger ``echo_service.access``).
        limits: passed to :class:`HttpServer` (``max_body_bytes``, timeouts...).
    """
    server = HttpServer(host, port, **limits)
    table = RouteTable("echo_service", access_log=access_log)
    started = time.monotonic()

    @table.route("/", methods=["GET"], summary="this list of routes")
    def index(request: Request) -> dict[str, Any]:
        return {"service": "echo", "routes": table.describe()}

    @table.route("/echo", summary="the request as JSON (body as text, or base64 when not UTF-8)")
    async def echo(request: Request) -> dict[str, Any]:
        body = await request.body()
        try:
            text, encoding = body.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(body).decode("ascii"), "base64"
        query: dict[str, str | list[str]] = {
            name: values[0] if len(values) == 1 else values
            for name, values in request.query_params_all.items()
        }
        headers: dict[str, str | list[str]] = {}
        for name, value in request.headers:
            previous = headers.get(name)
            if previous is None:
                headers[name] = value
            elif isinstance(previous, list):
                previous.append(value)
            else:
                headers[name] = [previous, value]
        return {
            "method": request.method,
            "path": request.path,
            "query_string": request.query_string,
            "query": query,
            "http_version": request.http_version,
            "headers": headers,
            "body": text,
            "body_encoding": encoding,
            "body_bytes": len(body),
            "client": {"host": request.client[0], "port": request.client[1]},
        }

    @table.route("/echo/raw", summary="the request body back, with the same Content-Type")
    async def echo_raw(request: Request) -> Response:
        body = await request.body()
        content_type = request.headers.get("content-type") or "application/octet-stream"
        return Response(body, content_type=content_type)

    @table.route("/delay/{ms}", methods=["GET"], summary=f"answer after ms milliseconds (max {MAX_DELAY_MS})")
    async def delay(request: Request) -> Response | dict[str, Any]:
        ms = _int_param(request.path_params["ms"], "ms", 0, MAX_DELAY_MS)
        if isinstance(ms, Response):
            return ms
        start = time.monotonic()
        await sleep(ms / 1000)
        return {"delay_ms": ms, "elapsed_ms": round((time.monotonic() - start) * 1000, 3)}

    @table.route("/bytes/{n}", methods=["GET"], summary=f"n deterministic bytes (max {MAX_BYTES}; ?seed=S)")
    def sized_bytes(request: Request) -> Response:
        n = _int_param(request.path_params["n"], "n", 0, MAX_BYTES)
        if isinstance(n, Response):
            return n
        seed_text = request.query_params.get("seed")
        if seed_text is None:
            return Response(pattern_bytes(n), content_type="application/octet-stream")
        seed = _int_param(seed_text, "seed", 0, MAX_SEED)
        if isinstance(seed, Response):
            return seed
        return Response(seeded_bytes(n, seed), content_type="application/octet-stream")

    @table.route("/status/{code}", methods=["GET"], summary="answer with this status (200-599)")
    def status(request: Request) -> Response:
        text = request.path_params["code"]
        code = _int_param(text, "code", 100, 599)
        if isinstance(code, Response):
            return code
        if code < 200:  # a 1xx is never a final response: a client would wait for the real one
            return json_error(400, "code must be within 200-599 (1xx is informational only)", param="code")
        if code in (204, 304):  # no body: no Content-Type either
            return Response(b"", code)
        return Response.json({"status": code}, code)

    @table.route("/health", methods=["GET"], summary="uptime, open connections, requests served, pid")
    def health(request: Request) -> dict[str, Any]:
        return {
            "status": "ok",
            "service": "echo",
            "uptime_s": round(time.monotonic() - started, 3),
            "open_connections": server.open_connections,
            "requests_served": server.stats["requests_served"],
            "connections_accepted": server.stats["connections_accepted"],
            "pid": os.getpid(),
        }

    table.install(server)
    return server
