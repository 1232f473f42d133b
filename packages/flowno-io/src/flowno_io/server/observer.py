"""Metrics, trace context and ``Server-Timing`` observed by the exchange itself, not a middleware link.

Each middleware link costs a coroutine frame, an ``await`` and a response copy per request, so the
observability middleware (:class:`~flowno_io.server.metrics.MetricsMiddleware`,
:class:`~flowno_io.server.tracing.TracingMiddleware`,
:class:`~flowno_io.server.tracing.ServerTimingMiddleware`,
:class:`~flowno_io.server.tracing.ObservabilityMiddleware`) is taken out of the chain when added to
a server and merged into one :class:`ExchangeObserver`. The exchange (``server/exchange.py``) calls
it twice, as plain functions:

* :meth:`ExchangeObserver.begin` before the middleware chain and the handler: one clock read, and
  ``request.trace`` (parsed only if something reads it); the exchange then runs the chain with it
  as the current trace (:func:`~flowno_io.server.tracing.run_in_trace`);
* :meth:`ExchangeObserver.end` when the response head is chosen: a second clock read, shared by
  the latency histogram and ``Server-Timing``; the count and bucket of the response's series; and
  the ``Server-Timing`` field, as one pre-formatted header line the framing appends (no copy of
  the response).

The merged observer runs outside every middleware of the chain, whatever their order: the trace
is set before any middleware runs (the access log sees it), and the time covers the chain. A second
middleware of a kind already merged stays an ordinary link of the chain.

Numbers (``bench/experiments/observability_overhead.py``, hello keep-alive, server CPU per
request): the three as middleware cost +25 %; merged here, see ``bench/README.md``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence
from time import perf_counter
from typing import Any

from ..protocol.models import Response
from ..protocol.trace_context import TraceContext
from .metrics import UNMATCHED_ROUTE, MetricsMiddleware, _Series
from .middleware import Middleware
from .request import Request
from .tracing import (
    ObservabilityMiddleware,
    ServerTimingMiddleware,
    TracingMiddleware,
    _stamp,
)

__all__ = ["ExchangeObserver", "split_observers"]

_from_fields = TraceContext.from_fields


class ExchangeObserver:
    """What the merged observability middleware do to each exchange (see the module docstring).

    Attributes:
        metrics: the ``MetricsMiddleware`` recording responses, or ``None``.
        tracing: read or start ``request.trace`` and make it current while the chain runs.
        server_timing: the ``Server-Timing`` metric name, or ``None``.
    """

    __slots__ = ("_series", "_shared", "_timing_line", "metrics", "server_timing", "tracing")

    def __init__(
        self,
        metrics: MetricsMiddleware | None = None,
        *,
        tracing: bool = False,
        server_timing: str | None = None,
    ) -> None:
        self.metrics = metrics
        self.tracing = tracing
        self.server_timing = server_timing
        self._shared = metrics is not None and metrics.shared
        self._series = None if metrics is None else metrics._series
        self._timing_line = (
            None if server_timing is None else b"Server-Timing: %b;dur=%%.3f\r\n" % server_timing.encode()
        )

    def __repr__(self) -> str:
        return (
            f"<ExchangeObserver metrics={self.metrics is not None} tracing={self.tracing} "
            f"server_timing={self.server_timing}>"
        )

    def begin(self, request: Request) -> float:
        """Before the chain: set ``request.trace`` (when tracing); returns the start time."""
        if self.tracing:
            request.trace = _from_fields(request.headers._fields)
        return perf_counter()

    def end(self, request: Request, response: Any, start: float) -> tuple[Any, bytes]:
        """When the head is chosen: record it; the response to send and header lines to add.

        A plain response gets ``Server-Timing`` as the returned line (the handler's response,
        possibly shared, is not copied), unless it has a ``Server-Timing`` of its own: then a copy
        with the metric appended to it. A streaming response (made for this request) is changed
        in place.
        """
        now = perf_counter()
        seconds = now - start
        series = self._series
        if series is not None:
            key = (request.route or UNMATCHED_ROUTE, request.method, response.status_code)
            found = series.get(key)
            if type(found) is _Series:  # one process: plain counters, read when scraped
                found.count += 1
                found.total += seconds
                found.buckets[bisect_left(self.metrics.bounds, seconds)] += 1  # type: ignore[union-attr]
            else:
                self.metrics.record(request, response.status_code, start, now)  # type: ignore[union-attr]
        line = self._timing_line
        if line is None:
            return response, b""
        if type(response) is Response and "server-timing" not in response.headers._fields:
            return response, line % (seconds * 1000)
        return _stamp(response, f"{self.server_timing};dur={seconds * 1000:.3f}"), b""


def split_observers(middleware: Sequence[Middleware]) -> tuple[ExchangeObserver | None, list[Middleware]]:
    """The observer merged from the observability middleware in ``middleware``, and the others.

    The first middleware of each kind (metrics, tracing, Server-Timing) is merged; a later one of a
    kind already merged stays in the chain.
    """
    metrics: MetricsMiddleware | None = None
    tracing = False
    timing: str | None = None
    rest: list[Middleware] = []
    merged = False
    for layer in middleware:
        if type(layer) is ObservabilityMiddleware and not (
            (layer.metrics is not None and metrics is not None)
            or (layer.tracing and tracing)
            or (layer.server_timing is not None and timing is not None)
        ):
            metrics = layer.metrics if layer.metrics is not None else metrics
            tracing = tracing or layer.tracing
            timing = layer.server_timing if layer.server_timing is not None else timing
        elif type(layer) is MetricsMiddleware and metrics is None:
            metrics = layer
        elif type(layer) is TracingMiddleware and not tracing:
            tracing = True
        elif type(layer) is ServerTimingMiddleware and timing is None:
            timing = layer.metric
        else:
            rest.append(layer)
            continue
        merged = True
    if not merged:
        return None, rest
    return ExchangeObserver(metrics, tracing=tracing, server_timing=timing), rest
