"""Metrics, trace context and ``Server-Timing`` observed by the exchange itself, not a middleware link.

Each middleware link costs a coroutine frame, an ``await`` and a response copy per request, so the
observability middleware (:class:`~flowno_io.server.metrics.MetricsMiddleware`,
:class:`~flowno_io.server.tracing.TracingMiddleware`,
:class:`~flowno_io.server.tracing.ServerTimingMiddleware`,
:class:`~flowno_io.server.tracing.ObservabilityMiddleware`) is taken out of the chain when added to
a server and merged into one :class:`ExchangeObserver`. The exchange (``server/exchange.py``):

* reads the clock before the middleware chain and the handler, and, when tracing, makes the
  request current while they run (``request`` in the trace slot, or
  :func:`~flowno_io.server.tracing.run_in_trace` for a coroutine): ``request.trace`` is made
  from its headers only if something reads it (``current_trace``, the client, the access log);
* calls :meth:`ExchangeObserver.end`, a plain function, when the response head is chosen: a
  second clock read, shared by the latency histogram and ``Server-Timing``; the count and bucket
  of the response's series; and the ``Server-Timing`` field, as one pre-formatted header line the
  framing appends (no copy of the response).

The merged observer runs outside every middleware of the chain, whatever their order: the trace
is current before any middleware runs (the access log sees it), and the time covers the chain. A
second middleware of a kind already merged stays an ordinary link of the chain.

Cost, hello keep-alive (``bench/experiments/observability_inprocess.py``, ``cg_server.sh``;
``make bench``'s ``observability`` row): the three as middleware links cost +25 % CPU per request;
merged here, metrics and tracing add +5 % of the instructions (callgrind): one call, two clock
reads, the trace slot set and put back around the handler, a dict look-up and an append for the
histogram (folded into its buckets every ``FOLD_EVERY`` responses); ``Server-Timing`` adds a
pre-formatted line.
"""

from __future__ import annotations

from collections.abc import Sequence
from time import perf_counter
from typing import Any

from ..protocol.models import Response
from .metrics import FOLD_EVERY, UNMATCHED_ROUTE, MetricsMiddleware, _Series
from .middleware import Middleware
from .request import Request
from .tracing import (
    ObservabilityMiddleware,
    ServerTimingMiddleware,
    TracingMiddleware,
    _stamp,
    run_in_trace,
)

__all__ = ["TIMING_LINES", "ExchangeObserver", "observe", "split_observers"]

#: ``Server-Timing`` lines are kept pre-formatted for durations under this many microseconds
#: (5 ms: at most 5,000 lines of ~40 bytes, made as durations occur); longer ones are formatted.
TIMING_LINES = 5_000


class ExchangeObserver:
    """What the merged observability middleware do to each exchange (see the module docstring).

    Attributes:
        metrics: the ``MetricsMiddleware`` recording responses, or ``None``.
        tracing: make the request's trace (``request.trace``, made when read) current while the
            chain runs.
        server_timing: the ``Server-Timing`` metric name, or ``None``.
    """

    __slots__ = (
        "_bounds",
        "_last_method",
        "_last_route",
        "_last_series",
        "_last_status",
        "_series",
        "_timing_format",
        "_timing_lines",
        "metrics",
        "server_timing",
        "tracing",
    )

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
        self._series = None if metrics is None else metrics._series
        self._bounds = () if metrics is None else metrics.bounds
        # The series the last response went to, and its labels: most responses follow one of the
        # same route, method and status, found without building and hashing a key.
        self._last_route: str | None = None
        self._last_method = ""
        self._last_status = 0
        self._last_series: _Series | None = None
        self._timing_format = b"Server-Timing: %b;dur=%%.3f\r\n" % (server_timing or "").encode()
        #: The ``Server-Timing`` line of each duration under ``TIMING_LINES`` µs, made when first used.
        self._timing_lines: list[bytes | None] | None = (
            None if server_timing is None else [None] * TIMING_LINES
        )

    def __repr__(self) -> str:
        return (
            f"<ExchangeObserver metrics={self.metrics is not None} tracing={self.tracing} "
            f"server_timing={self.server_timing}>"
        )

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
            route, method, status = request.route, request.method, response.status_code
            if route is self._last_route and method == self._last_method and status == self._last_status:
                found: Any = self._last_series
            else:
                found = series.get((route or UNMATCHED_ROUTE, method, status))
                if type(found) is _Series:
                    self._last_route, self._last_method, self._last_status = route, method, status
                    self._last_series = found
            if type(found) is _Series:  # one process: folded into counts when scraped
                pending = found.pending
                pending.append(seconds)
                if len(pending) >= FOLD_EVERY:
                    found.fold(self._bounds)
            else:  # a new series, or multiprocess mode
                self.metrics.record(request, response.status_code, start, now)  # type: ignore[union-attr]
        lines = self._timing_lines
        if lines is None:
            return response, b""
        if type(response) is Response and "server-timing" not in response.headers._fields:
            micros = int(seconds * 1e6)
            if micros >= TIMING_LINES:
                return response, self._timing_format % (micros / 1000)
            line = lines[micros]
            if line is None:  # made once per microsecond value: formatting a float costs more
                line = lines[micros] = self._timing_format % (micros / 1000)
            return response, line
        return _stamp(response, f"{self.server_timing};dur={seconds * 1000:.3f}"), b""


async def observe(observer: ExchangeObserver, server: Any, request: Request) -> Any:
    """The response to ``request`` through ``server``'s chain and handler, observed, with
    ``Server-Timing`` in its headers (a copy): for a framing that takes no extra lines (HTTP/2)."""
    start = perf_counter()
    chain = server._chain
    if chain is None:
        result = await server._call_handler(request)
    else:
        result = await (run_in_trace(request, chain(request)) if server._tracing else chain(request))
    result, extra = observer.end(request, result, start)
    if extra:
        result = _stamp(result, extra[len(b"Server-Timing: ") : -2].decode())
    return result


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
