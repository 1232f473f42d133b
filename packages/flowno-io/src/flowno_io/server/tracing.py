"""Trace context through the server and the handler's own calls, and ``Server-Timing``.

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

from ..protocol.models import Response
from ..protocol.trace_context import TraceContext, current_trace
from .middleware import CallNext, copy_response
from .request import Request

__all__ = ["ServerTimingMiddleware", "TracingMiddleware", "run_in_trace"]


class _InTrace:
    """Awaits ``coroutine`` with ``current_trace`` set to ``trace`` during each of its steps."""

    __slots__ = ("_coroutine", "_trace")

    def __init__(self, coroutine: Coroutine[Any, Any, Any], trace: TraceContext) -> None:
        self._coroutine = coroutine
        self._trace = trace

    def __await__(self) -> Generator[Any, Any, Any]:
        return self

    def __iter__(self) -> _InTrace:
        return self

    def __next__(self) -> Any:
        return self.send(None)

    def send(self, value: Any) -> Any:
        token = current_trace.set(self._trace)
        try:
            return self._coroutine.send(value)
        finally:
            current_trace.reset(token)

    def throw(self, *exc_info: Any) -> Any:
        token = current_trace.set(self._trace)
        try:
            return self._coroutine.throw(*exc_info)
        finally:
            current_trace.reset(token)

    def close(self) -> None:
        self._coroutine.close()


async def run_in_trace(trace: TraceContext, coroutine: Coroutine[Any, Any, Any]) -> Any:
    """Await ``coroutine`` with ``trace`` as the current trace (for a task a handler spawns).

    Example: ``await spawn(run_in_trace(request.trace, notify(client)))``.
    """
    return await _InTrace(coroutine, trace)


class TracingMiddleware:
    """Give every request a W3C trace context (``request.trace``), carried by the handler's calls.

    The access log (``AccessLogMiddleware``, the services' route table) writes ``trace_id`` when a
    request has one: put this middleware outside it.
    """

    def __repr__(self) -> str:
        return "<TracingMiddleware>"

    async def __call__(self, request: Request, call_next: CallNext) -> Any:
        headers = request.headers
        trace = TraceContext.from_headers(headers.get("traceparent"), headers.get("tracestate"))
        request.trace = trace
        return await _InTrace(call_next(request), trace)  # type: ignore[arg-type]


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
        value = f"{self.metric};dur={(perf_counter() - start) * 1000:.3f}"
        if isinstance(response, Response):
            response = copy_response(response)
        headers = response.headers
        current = headers.get("server-timing")
        headers.set("Server-Timing", value if current is None else f"{current}, {value}")
        return response
