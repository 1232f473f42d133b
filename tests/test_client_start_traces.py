"""``HttpClient(start_traces=True)``: each request outside a traced handler starts its own W3C
trace. The raw heads the server receives are checked byte by byte: the ``traceparent`` line added
to a cached plain head must be where the full head builder puts it."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from client_servers import RawServer, read_request, response_bytes

from flowno_io import HttpClient, Timeout
from flowno_io.testing import run

TRACEPARENT = re.compile(rb"traceparent: 00-([0-9a-f]{32})-([0-9a-f]{16})-01\r\n")


class Recorder:
    """A keep-alive server that answers 200 to every request and keeps each request's bytes."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.server = RawServer(self._serve).start()

    def _serve(self, conn: socket.socket, index: int) -> None:
        while request := read_request(conn):
            self.requests.append(request)
            conn.sendall(response_bytes(b"ok"))


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    recorder = Recorder()
    try:
        yield recorder
    finally:
        recorder.server.stop()
    assert not recorder.server.errors


def _send(url: str, calls: list[tuple[str, dict[str, Any]]], **options: Any) -> None:
    async def main() -> None:
        async with HttpClient(timeout=Timeout(10), **options) as client:
            for method, arguments in calls:
                response = await client.request(method, url, **arguments)
                assert response.status_code == 200

    run(main())


def _without_traceparent(request: bytes) -> bytes:
    return TRACEPARENT.sub(b"", request)


def test_each_request_starts_its_own_trace_on_every_head_path(recorder: Recorder) -> None:
    calls: list[tuple[str, dict[str, Any]]] = [
        ("GET", {}),  # the cached plain head
        ("GET", {}),
        ("GET", {"headers": {"x-run": "7"}}),  # own headers appended to the plain head
        ("POST", {"data": b"body"}),  # a head built field by field
        ("POST", {"data": b"body", "headers": {"x-run": "8"}}),
        ("GET", {"params": {"q": "1"}}),
    ]
    _send(recorder.server.url + "/path", calls, start_traces=True)
    ids = []
    for request in recorder.requests:
        found = TRACEPARENT.findall(request)
        assert len(found) == 1, request
        trace_id, parent_id = found[0]
        assert int(trace_id, 16) and int(parent_id, 16)  # (never all zeros)
        ids.append(trace_id)
    assert len(set(ids)) == len(calls)  # a new trace for each request
    assert b"x-run: 7\r\n" in recorder.requests[2]
    assert recorder.requests[3].endswith(b"\r\n\r\nbody")
    assert b"x-run: 8\r\n" in recorder.requests[4] and recorder.requests[4].endswith(b"\r\n\r\nbody")


def test_the_heads_are_those_of_the_same_requests_with_the_header_given(recorder: Recorder) -> None:
    """The ``traceparent`` line comes where the full head builder puts a request's own header:
    after the client's fields, after the request's other headers, before the blank line."""
    given = b"00-" + b"a" * 32 + b"-" + b"b" * 16 + b"-01"
    calls: list[tuple[str, dict[str, Any]]] = [("GET", {}), ("GET", {"headers": {"x-run": "7"}})]
    _send(recorder.server.url + "/path", calls, start_traces=True, headers={"x-client": "c"})
    started = recorder.requests[:]
    recorder.requests.clear()
    explicit: list[tuple[str, dict[str, Any]]] = [
        ("GET", {"headers": {"traceparent": given.decode()}}),
        ("GET", {"headers": {"x-run": "7", "traceparent": given.decode()}}),
    ]
    _send(recorder.server.url + "/path", explicit, headers={"x-client": "c"})
    assert len(started) == len(recorder.requests) == 2
    for mine, reference in zip(started, recorder.requests, strict=True):
        assert TRACEPARENT.sub(b"traceparent: " + given + b"\r\n", mine) == reference
    line = TRACEPARENT.search(started[1])
    assert line is not None and started[1].endswith(b"x-client: c\r\nx-run: 7\r\n" + line[0] + b"\r\n")


def test_a_requests_own_traceparent_is_sent_as_given(recorder: Recorder) -> None:
    given = "00-" + "c" * 32 + "-" + "d" * 16 + "-00"
    _send(recorder.server.url + "/", [("GET", {"headers": {"traceparent": given}})], start_traces=True)
    (request,) = recorder.requests
    assert request.count(b"traceparent") == 1 and f"traceparent: {given}\r\n".encode() in request


def test_the_clients_own_traceparent_is_sent_as_given(recorder: Recorder) -> None:
    given = "00-" + "e" * 32 + "-" + "f" * 16 + "-01"
    calls: list[tuple[str, dict[str, Any]]] = [("GET", {}), ("POST", {"data": b"x"})]
    _send(recorder.server.url + "/", calls, start_traces=True, headers={"traceparent": given})
    assert len(recorder.requests) == 2
    for request in recorder.requests:
        assert request.count(b"traceparent") == 1 and f"traceparent: {given}\r\n".encode() in request


def test_no_trace_is_started_by_default(recorder: Recorder) -> None:
    _send(recorder.server.url + "/", [("GET", {}), ("GET", {"headers": {"x-run": "1"}})])
    assert len(recorder.requests) == 2
    assert all(b"traceparent" not in request for request in recorder.requests)
    assert [_without_traceparent(request) for request in recorder.requests] == recorder.requests


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_start_traces_must_be_a_bool(value: object) -> None:
    with pytest.raises(TypeError, match="HttpClient start_traces must be True or False"):
        HttpClient(start_traces=value)  # type: ignore[arg-type]
