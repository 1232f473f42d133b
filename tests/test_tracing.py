"""W3C trace context (server/tracing.py, protocol/trace_context.py): read, exposed, carried onward."""

from __future__ import annotations

import json
import logging
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from flowno import spawn
from service_process import start_service

from flowno_io import HttpClient, HttpServer, Response
from flowno_io import sleep as flowno_io_sleep
from flowno_io.protocol.trace_context import TraceContext, current_trace
from flowno_io.server.access_log import AccessLogMiddleware
from flowno_io.server.tracing import TracingMiddleware, run_in_trace
from flowno_io.testing import ServerThread, run

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{PARENT}-01"


def fetch(url: str, headers: dict[str, str] | None = None) -> Any:
    request = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


@pytest.fixture(scope="module")
def downstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The echo service in its own process (flowno keeps one selector per process, so two loops
    in two threads of one process cannot both do I/O): ``/echo`` answers the headers it received."""
    service = start_service("echo_service", tmp_path_factory.mktemp("echo"))
    try:
        yield service.url
    finally:
        service.stop()


def seen(answer: Response) -> dict[str, str | None]:
    headers = answer.decode_json()["headers"]
    return {"traceparent": headers.get("traceparent"), "tracestate": headers.get("tracestate")}


def relay_server(downstream: str) -> HttpServer:
    """Calls ``downstream`` with an HttpClient from its handler, in the handler's task and a spawned one."""
    client = HttpClient()
    server = HttpServer("127.0.0.1", 0, middleware=[TracingMiddleware()])

    @server.route("/relay")
    async def relay(request):  # type: ignore[no-untyped-def]
        first = seen(await client.get(downstream + "/echo"))
        second = seen(await client.get(downstream + "/echo"))
        return {"own": request.trace.traceparent, "calls": [first, second]}

    @server.route("/spawned")
    async def spawned(request):  # type: ignore[no-untyped-def]
        async def call() -> Any:
            return seen(await client.get(downstream + "/echo"))

        plain = await spawn(call())
        carried = await spawn(run_in_trace(request.trace, call()))
        return {"plain": await plain.join(), "carried": await carried.join()}

    return server


def test_trace_carried_to_a_second_server_with_a_new_parent_id(downstream: str) -> None:
    with ServerThread(relay_server(downstream)) as relay:
        answer = fetch(relay + "/relay", {"traceparent": TRACEPARENT, "tracestate": "congo=t61rcWkgMzE"})
        own = answer["own"].split("-")
        assert own[1] == TRACE_ID and own[2] != PARENT  # the server's own span
        parents = set()
        for seen in answer["calls"]:
            version, trace_id, parent_id, flags = seen["traceparent"].split("-")
            assert (version, trace_id, flags) == ("00", TRACE_ID, "01")
            assert parent_id != PARENT and len(parent_id) == 16
            parents.add(parent_id)
            assert seen["tracestate"] == "congo=t61rcWkgMzE"
        assert len(parents) == 2  # each call its own parent id


def test_a_trace_is_started_when_none_or_an_invalid_one_comes(downstream: str) -> None:
    with ServerThread(relay_server(downstream)) as relay:
        ids = set()
        for headers in (
            {},
            {"traceparent": "00-" + "0" * 32 + "-00f067aa0ba902b7-01"},
            {"traceparent": "junk"},
        ):
            answer = fetch(relay + "/relay", headers)
            trace_id = answer["own"].split("-")[1]
            assert trace_id != "0" * 32
            assert {seen["traceparent"].split("-")[1] for seen in answer["calls"]} == {trace_id}
            ids.add(trace_id)
        assert len(ids) == 3


def test_spawned_tasks_do_not_inherit_unless_run_in_trace(downstream: str) -> None:
    with ServerThread(relay_server(downstream)) as relay:
        answer = fetch(relay + "/spawned", {"traceparent": TRACEPARENT})
        assert answer["plain"]["traceparent"] is None
        assert answer["carried"]["traceparent"].split("-")[1] == TRACE_ID


def test_client_outside_a_handler_sends_no_traceparent(downstream: str) -> None:
    assert current_trace.get() is None
    assert seen(run(HttpClient().get(downstream + "/echo")))["traceparent"] is None


def test_access_log_lines_carry_the_trace_id() -> None:
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    log = logging.getLogger("test_tracing.access")
    log.addHandler(Keep())
    log.setLevel(logging.INFO)
    server = HttpServer(
        "127.0.0.1", 0, routes={"/": lambda r: {}}, middleware=[TracingMiddleware(), AccessLogMiddleware(log)]
    )
    with ServerThread(server) as url:
        fetch(url + "/", {"traceparent": TRACEPARENT})
    assert json.loads(lines[0])["trace_id"] == TRACE_ID


def test_parse_rules() -> None:
    assert TraceContext.from_headers("ff-" + TRACE_ID + "-" + PARENT + "-01").parent_id is None
    assert TraceContext.from_headers(TRACEPARENT.upper()).parent_id is None  # lowercase only
    assert TraceContext.from_headers(TRACEPARENT, "x" * 600).tracestate is None
    unsampled = TraceContext.from_headers(f"00-{TRACE_ID}-{PARENT}-00")
    assert not unsampled.sampled and unsampled.child_traceparent().endswith("-00")


def test_plain_handler_and_middleware_see_the_trace() -> None:
    """Merged into the exchange (server/observer.py), tracing runs before every middleware, whatever
    their order, and a plain handler runs with the trace current."""

    async def seen_by_middleware(request, call_next):  # type: ignore[no-untyped-def]
        current = current_trace.get()
        response = await call_next(request)
        response.headers.set("X-Middleware-Saw", "none" if current is None else current.trace_id)
        return response

    server = HttpServer(
        "127.0.0.1",
        0,
        routes={"/": lambda r: {"current": current_trace.get().trace_id, "own": r.trace.trace_id}},
        middleware=[seen_by_middleware, TracingMiddleware()],
    )
    with ServerThread(server) as url:
        request = urllib.request.Request(url + "/", headers={"traceparent": TRACEPARENT})
        with urllib.request.urlopen(request, timeout=10) as answer:
            assert json.loads(answer.read()) == {"current": TRACE_ID, "own": TRACE_ID}
            assert answer.headers["X-Middleware-Saw"] == TRACE_ID
    assert current_trace.get() is None


def test_current_trace_is_per_thread_and_resets_to_the_previous_one() -> None:
    """``current_trace`` keeps one slot per thread: a trace made current in one thread is not seen
    by another, and ``reset`` puts back what was current before (nested ``set``)."""
    outer, inner = TraceContext.from_headers(TRACEPARENT), TraceContext.from_headers(None)
    seen_elsewhere: list[object] = []
    entered, checked = threading.Event(), threading.Event()

    def other_thread() -> None:
        entered.wait(10)
        seen_elsewhere.append(current_trace.get())
        checked.set()

    thread = threading.Thread(target=other_thread)
    thread.start()
    first = current_trace.set(outer)
    second = current_trace.set(inner)
    entered.set()
    checked.wait(10)
    thread.join(10)
    assert current_trace.get() is inner
    current_trace.reset(second)
    assert current_trace.get() is outer
    current_trace.reset(first)
    assert current_trace.get() is None
    assert seen_elsewhere == [None]


def test_a_requests_trace_is_made_once_whoever_reads_it_first() -> None:
    """The server makes ``request.trace`` only when something reads it (the slot holds the
    request): read through ``current_trace`` first, through ``request.trace`` first, or only
    after an ``await``, every read of one request gives the same trace, with one span id, and a
    request that comes without a ``traceparent`` gets a new trace id."""
    server = HttpServer("127.0.0.1", 0, middleware=[TracingMiddleware()])

    @server.route("/current-first")
    def current_first(request):  # type: ignore[no-untyped-def]
        first = current_trace.get()
        return {"same": first is request.trace is current_trace.get(), "span": first.span_id}

    @server.route("/request-first")
    def request_first(request):  # type: ignore[no-untyped-def]
        first = request.trace
        return {"same": first is current_trace.get() is request.trace, "span": first.span_id}

    @server.route("/after-await")
    async def after_await(request):  # type: ignore[no-untyped-def]
        await flowno_io_sleep(0)
        first = current_trace.get()
        return {"same": first is request.trace, "span": first.span_id, "id": first.trace_id}

    with ServerThread(server) as url:
        spans = set()
        for path in ("/current-first", "/request-first", "/after-await"):
            answer = fetch(url + path, {"traceparent": TRACEPARENT})
            assert answer["same"] is True, path
            spans.add(answer["span"])
        assert len(spans) == 3  # a new span per request
        assert PARENT not in spans
        fresh = fetch(url + "/after-await")
        assert fresh["same"] is True and fresh["id"] != TRACE_ID and len(fresh["id"]) == 32
    assert current_trace.get() is None
