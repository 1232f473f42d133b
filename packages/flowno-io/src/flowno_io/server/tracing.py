"""Trace context through the server and the handler's own calls, and ``Server-Timing``.

Added to a server, these middleware are not links of its chain: the server merges them into one
observer its exchange calls directly (``server/observer.py``), outside every other middleware.
Their ``__call__`` is what they do as ordinary middleware (composed by hand).

:class:`TracingMiddleware` reads the request's W3C ``traceparent``/``tracestate`` (or starts a new
trace), stores the :class:`~flowno_io.protocol.trace_context.TraceContext` as ``request.trace``,
and runs the rest of the chain with it as :data:`~flowno_io.protocol.trace_context.current_trace`:
an ``HttpClient`` call awaited by the handler sends ``traceparent`` with the same trace id and a
new parent id, and ``tracestate`` unchanged.

**How the context follows the handler.** flowno runs every task in the loop thread's one
``contextvars`` context (it sets its own ``_current_task`` there before each step), so a
``ContextVar`` set by a handler would leak to whatever task the loop steps next, and an exchange
may start inline in the server's driver task and finish in a worker task. So the middleware sets
``current_trace`` around *each step* of the chain's coroutine and resets it before the step
returns to the loop (:func:`run_in_trace`): code awaited by the handler, in the same task, sees
it; any other task does not. A task the handler *spawns* does not inherit it; spawn
``run_in_trace(request.trace, coroutine)`` instead to carry it there.

:class:`ServerTimingMiddleware` adds ``Server-Timing: app;dur=<ms>``: the time from the
middleware's start to the response head being chosen (for a streaming response, to its head, not
its end). Put it innermost of the two so ``dur`` covers the handler and little else.

Example:
    >>> import urllib.request
    >>> from flowno_io import HttpServer
    >>> from flowno_io.testing import ServerThread
    >>> server = HttpServer("127.0.0.1", 0, routes={"/": lambda r: r.trace.trace_id},
    ...                     middleware=[TracingMiddleware(), ServerTimingMiddleware()])
    >>> parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    >>> with ServerThread(server) as url:
    ...     asked = urllib.request.Request(url + "/", headers={"traceparent": parent})
    ...     answer = urllib.request.urlopen(asked)
    ...     answer.read(), answer.headers["Server-Timing"].startswith("app;dur=")
    (b'4bf92f3577b34da6a3ce929d0e0e4736', True)
"""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from time import perf_counter
from typing import Any

from ..protocol.headers import Headers
from ..protocol.models import Response
from ..protocol.trace_context import TraceCarrier, TraceContext, trace_slot
from .middleware import CallNext
from .request import Request

__all__ = [
    "ObservabilityMiddleware",
    "ServerTimingMiddleware",
    "TracingMiddleware",
    "run_in_trace",
]


_NOTHING = object()


class _InTrace:
    """Awaits ``coroutine`` with ``trace`` current (``current_trace``) during each of its steps.

    ``pending``: the coroutine already ran its first step (see :func:`run_in_trace`), which yielded
    this command; it is passed on first.
    """

    __slots__ = ("_coroutine", "_pending", "_slot", "_trace")

    def __init__(
        self,
        coroutine: Coroutine[Any, Any, Any],
        trace: TraceContext | TraceCarrier,
        pending: Any = _NOTHING,
    ) -> None:
        self._coroutine = coroutine
        self._trace = trace
        self._pending = pending
        self._slot = trace_slot()  # the coroutine's steps all run in this thread

    def __await__(self) -> Generator[Any, Any, Any]:
        return self

    def __iter__(self) -> _InTrace:
        return self

    def __next__(self) -> Any:
        pending = self._pending
        if pending is not _NOTHING:
            self._pending = _NOTHING
            return pending
        return self.send(None)

    def send(self, value: Any) -> Any:
        slot = self._slot
        previous = slot.trace
        slot.trace = self._trace
        try:
            return self._coroutine.send(value)
        finally:
            slot.trace = previous

    def throw(self, *exc_info: Any) -> Any:
        slot = self._slot
        previous = slot.trace
        slot.trace = self._trace
        try:
            return self._coroutine.throw(*exc_info)
        finally:
            slot.trace = previous

    def close(self) -> None:
        self._coroutine.close()


async def run_in_trace(trace: TraceContext | TraceCarrier, coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Await ``coroutine`` with ``trace`` as the current trace during each of its steps.

    ``trace`` may be the request itself (the server passes it): its trace is then made only if
    something reads it.

    The server runs each request's middleware and handler in it; a handler spawning a task uses it
    to carry its trace there: ``await spawn(run_in_trace(request.trace, notify(client)))``.
    The first step runs here, without a wrapper object: most exchanges end in it (the handler did
    not wait).
    """
    slot = trace_slot()
    previous = slot.trace
    slot.trace = trace
    try:
        command = coroutine.send(None)
    except StopIteration as done:
        return done.value
    finally:
        slot.trace = previous
    return await _InTrace(coroutine, trace, command)


class TracingMiddleware:
    """Give every request a W3C trace context (``request.trace``), carried by the handler's calls.

    The access log (``AccessLogMiddleware``, the services' route table) writes ``trace_id`` when a
    request has one: put this middleware outside it.
    """

    def __repr__(self) -> str:
        return "<TracingMiddleware>"

    async def __call__(self, request: Request, call_next: CallNext) -> Any:
        trace = request.trace = _trace_of(request)
        return await run_in_trace(trace, call_next(request))  # type: ignore[arg-type]


def _trace_of(request: Request) -> TraceContext:
    fields = request.headers._fields  # lower-case names; a repeated traceparent: the first
    parent, state = fields.get("traceparent"), fields.get("tracestate")
    return TraceContext.from_headers(
        None if parent is None else parent[0], None if state is None else ",".join(state)
    )


class ServerTimingMiddleware:
    """Add ``Server-Timing: app;dur=<milliseconds>`` to every response a handler chose.

    Args:
        metric: the metric name in the header (default ``app``).
    """

    def __init__(self, metric: str = "app") -> None:
        self.metric = metric

    def __repr__(self) -> str:
        return f"<ServerTimingMiddleware {self.metric}>"

    async def __call__(self, request: Request, call_next: CallNext) -> Any:
        start = perf_counter()
        response = await call_next(request)
        return _stamp(response, f"{self.metric};dur={(perf_counter() - start) * 1000:.3f}")


class ObservabilityMiddleware:
    """Metrics, tracing and ``Server-Timing`` in one middleware (one link of the chain, one clock).

    What :class:`~flowno_io.server.metrics.MetricsMiddleware`, :class:`TracingMiddleware` and
    :class:`ServerTimingMiddleware` do, each optional; the services use it (each link of the
    middleware chain costs a few microseconds per request).

    Args:
        metrics: record into this ``MetricsMiddleware`` (from ``enable_metrics(server,
            add_middleware=False)``), or ``None``.
        tracing: read or start the W3C trace context (``request.trace``) and carry it.
        server_timing: the ``Server-Timing`` metric name (``"app"``), or ``None`` for none.
    """

    def __init__(
        self, metrics: Any = None, *, tracing: bool = True, server_timing: str | None = "app"
    ) -> None:
        self.metrics = metrics
        self.tracing = tracing
        self.server_timing = server_timing
        if metrics is not None:
            self.on_error = metrics.on_error

    def __repr__(self) -> str:
        return (
            f"<ObservabilityMiddleware metrics={self.metrics is not None} tracing={self.tracing} "
            f"server_timing={self.server_timing}>"
        )

    async def __call__(self, request: Request, call_next: CallNext) -> Any:
        start = perf_counter()
        if self.tracing:
            trace = request.trace = _trace_of(request)
            response = await run_in_trace(trace, call_next(request))  # type: ignore[arg-type]
        else:
            response = await call_next(request)
        now = perf_counter()
        if self.metrics is not None:
            self.metrics.record(request, response.status_code, start, now)
        if self.server_timing is not None:
            response = _stamp(response, f"{self.server_timing};dur={(now - start) * 1000:.3f}")
        return response


def _stamp(response: Any, value: str) -> Any:
    """``response`` with ``value`` added to its ``Server-Timing``."""
    if type(response) is Response:
        return _with_field(response, "server-timing", value)
    headers = response.headers  # a streaming response: made for this request, changed in place
    current = headers.get("server-timing")
    headers.set("Server-Timing", value if current is None else f"{current}, {value}")
    return response


def _with_field(response: Response, name: str, value: str) -> Response:
    """A copy of ``response`` with ``value`` appended to its ``name`` field (lower case, one
    comma-separated line), made without ``copy_response``'s generic copy: it runs on every request."""
    fields = dict(response.headers._fields)
    current = fields.get(name)
    fields[name] = [value] if current is None else [", ".join([*current, value])]
    headers = Headers.__new__(Headers)
    headers._fields = fields
    clone = Response.__new__(Response)
    clone.body = response.body
    clone.status_code = response.status_code
    clone.reason = response.reason
    clone.http_version = response.http_version
    clone.headers = headers
    return clone
