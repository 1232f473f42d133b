"""The bad-input corpus: each raw request in ``tests/corpus/requests/`` gets the outcome that
``expected.toml`` names for it, over a real socket, from one server for the whole module.

Request smuggling variants, header injection, control bytes, overlong lines, too many headers,
odd methods, targets and versions, trailers, Upgrade, empty lines. Each file is sent over a socket
whole, and split in two across reads (with a pause) at a few boundaries: inside the request line,
after its CRLF, just before the head ends. Each file is also fed to the sans-IO parser whole, one
byte at a time, and split in two at every boundary (every CR and LF and a sample of the others for
the files over 2 KB): all must see the same requests and fail with the same status.
"""

from __future__ import annotations

import socket
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pytest
from rawhttp import read_response, read_responses, read_until_closed, status_of
from test_http11_limits import byte_at_a_time, parse

from flowno_io import HttpServer, Request, Response
from flowno_io.testing import ServerThread

CORPUS = Path(__file__).parent / "corpus" / "requests"
#: The body of GET /admin: it must never reach a client (a smuggled request was answered).
SMUGGLED = b"SMUGGLED"
GET_HELLO = b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"
#: Statuses the routing answers on a connection it keeps; every other 4xx/5xx closes it.
_ROUTING_STATUSES = {404, 405}


@dataclass(frozen=True)
class Expectation:
    """What the server must do with one corpus file (see ``expected.toml``)."""

    statuses: tuple[int, ...]
    then: Literal["close", "open"]
    why: str
    xfail: str | None = None
    body: bytes | None = None


def load_expectations() -> dict[str, Expectation]:
    """``expected.toml`` as ``{file name: Expectation}``."""
    table = tomllib.loads((CORPUS / "expected.toml").read_text())
    expectations = {}
    for name, entry in table.items():
        assert entry["then"] in ("close", "open"), name
        body = entry.get("body")
        expectations[name] = Expectation(
            tuple(entry["statuses"]),
            entry["then"],
            entry["why"],
            entry.get("xfail"),
            None if body is None else body.encode("latin-1"),
        )
    return expectations


EXPECTATIONS = load_expectations()


def _params() -> list[object]:
    params: list[object] = []
    for name, expectation in sorted(EXPECTATIONS.items()):
        marks = []
        if expectation.xfail:
            marks.append(pytest.mark.xfail(reason=expectation.xfail, raises=AssertionError, strict=True))
        params.append(pytest.param(name, marks=marks, id=name.removesuffix(".http")))
    return params


def corpus_server() -> HttpServer:
    """The server every corpus file is sent to (default limits; 0.5 s header and keep-alive timeouts)."""
    # The HTTP/1.1 corpus: HTTP/2 off, so the preface file is HTTP/1.1's 505 (with HTTP/2 on it opens
    # an HTTP/2 connection; test_http2.py checks every other file gets the same bytes either way).
    server = HttpServer("127.0.0.1", 0, header_timeout=0.5, keepalive_timeout=0.5, http2=False)
    server.add_route("/hello", lambda request: "Hello", methods=["GET"])
    server.add_route("/admin", lambda request: SMUGGLED, methods=["GET"])

    async def echo(request: Request) -> Response:
        return Response(await request.body(), content_type="application/octet-stream")

    server.add_route("/echo", echo, methods=["POST"])
    return server


@pytest.fixture(scope="module")
def corpus_url() -> Iterator[str]:
    """One server for the module; afterwards no task raised and no connection is left open."""
    thread = ServerThread(corpus_server())
    url = thread.start()
    try:
        yield url
    finally:
        thread.stop()
    assert thread.loop.exceptions == {}, f"exceptions escaped into the loop: {thread.loop.exceptions}"
    assert thread.server.open_connections == 0


def split_responses(data: bytes) -> list[bytes]:
    """Content-Length-framed responses (every corpus answer is one), exactly covering ``data``."""
    responses = []
    while data:
        head_end = data.find(b"\r\n\r\n")
        assert head_end > 0, f"not a response head: {data[:200]!r}"
        length = 0
        for line in data[:head_end].split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        end = head_end + 4 + length
        assert len(data) >= end, f"response cut short: {data!r}"
        responses.append(data[:end])
        data = data[end:]
    return responses


def check_response_rules(response: bytes) -> None:
    """The rules every corpus response obeys, whatever the request."""
    head = response.split(b"\r\n\r\n", 1)[0].lower()
    assert SMUGGLED not in response, "a smuggled request was answered"
    assert b"\r\nset-cookie:" not in head, "a header was injected into the response"
    status = status_of(response)
    if status >= 400 and status not in _ROUTING_STATUSES:
        assert b"\r\nconnection: close\r\n" in head + b"\r\n", f"{status} without Connection: close"


def test_every_corpus_file_has_an_expectation_and_every_expectation_a_file() -> None:
    files = {path.name for path in CORPUS.glob("*.http")}
    assert files == set(EXPECTATIONS)
    assert len(files) >= 80


#: The pause between the two parts of a split request, so that the server reads them apart (if the
#: machine is so loaded that they arrive together, the test is weaker, never wrong).
SPLIT_PAUSE = 0.02


def socket_split_points(raw: bytes) -> list[int]:
    """Where the socket test splits a file: inside the request line, after it, before the head ends."""
    line_end = raw.find(b"\r\n")
    head_end = raw.find(b"\r\n\r\n")
    points = {line_end // 2, line_end + 2, head_end + 3}
    return sorted(point for point in points if 0 < point < len(raw))


def send_and_check(url: str, name: str, parts: list[bytes]) -> None:
    """Send ``parts`` (pausing between them) and check the responses against ``expected.toml``."""
    expected = EXPECTATIONS[name]
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for number, part in enumerate(parts):
            if number:
                time.sleep(SPLIT_PAUSE)
            sock.sendall(part)
        if expected.then == "close":
            responses = split_responses(read_until_closed(sock, timeout=5))
        else:
            responses = read_responses(sock, len(expected.statuses)) if expected.statuses else []
        for response in responses:
            check_response_rules(response)
        assert tuple(status_of(r) for r in responses) == expected.statuses, expected.why
        if expected.body is not None:
            assert responses[-1].partition(b"\r\n\r\n")[2] == expected.body, expected.why
        if expected.then == "open":
            sock.sendall(GET_HELLO)
            assert read_response(sock).endswith(b"\r\n\r\nHello"), "the connection was not kept usable"


@pytest.mark.parametrize("name", _params())
def test_corpus_request_over_a_socket(corpus_url: str, name: str) -> None:
    raw = (CORPUS / name).read_bytes()
    send_and_check(corpus_url, name, [raw] if raw else [])


@pytest.mark.parametrize("name", _params())
def test_corpus_request_split_across_reads_over_a_socket(corpus_url: str, name: str) -> None:
    raw = (CORPUS / name).read_bytes()
    for point in socket_split_points(raw):
        send_and_check(corpus_url, name, [raw[:point], raw[point:]])


#: Files up to this size are split at every boundary; larger ones around every CR and LF and at a sample.
SPLIT_EVERY_BOUNDARY_UNDER = 2048


def sans_io_split_points(raw: bytes) -> list[int]:
    """Every boundary of a small file; for a large one, around every CR and LF, and every 97th."""
    if len(raw) <= SPLIT_EVERY_BOUNDARY_UNDER:
        return list(range(1, len(raw)))
    points = set(range(1, len(raw), 97))
    for index, byte in enumerate(raw):
        if byte in b"\r\n":
            points.update((index, index + 1))
    return sorted(point for point in points if 0 < point < len(raw))


def corpus_outcome(chunks: list[bytes]) -> tuple[list[tuple[str, bytes, str]], int | None]:
    """The request heads the parser sees in ``chunks``, and the status of its error if any."""
    outcome = parse(chunks)
    return outcome.heads, outcome.error


@pytest.mark.parametrize("name", sorted(EXPECTATIONS), ids=lambda name: name.removesuffix(".http"))
def test_corpus_request_parses_the_same_whole_byte_at_a_time_and_split(name: str) -> None:
    raw = (CORPUS / name).read_bytes()
    whole = corpus_outcome([raw])
    assert corpus_outcome(byte_at_a_time(raw)) == whole, "byte at a time"
    for point in sans_io_split_points(raw):
        assert corpus_outcome([raw[:point], raw[point:]]) == whole, f"split at {point}"
    error = whole[1]
    expected = EXPECTATIONS[name]
    if error is not None and not expected.xfail and expected.statuses:
        assert expected.statuses[-1] == error  # the status the wire test sees comes from the parser
