"""Prometheus metrics for an :class:`~flowno_io.HttpServer` (extra ``flowno-io[metrics]``).

:func:`enable_metrics` (or ``server.enable_metrics()``) adds a :class:`MetricsMiddleware` (which
the server merges into the observer its exchange calls, ``server/observer.py``) and a
``GET /metrics`` route answering the Prometheus text format. Series (prefix ``flowno_``):

* ``http_server_requests_total{route,method,status}``: responses by route *pattern* (the matched
  ``/users/{id:int}``, never the raw path, so the series stay few; ``unmatched`` when no route
  matched), including the errors the server answers itself (400/413/431/505/500, by error hook);
* ``http_server_request_duration_seconds{route,method}``: a histogram, from the middleware's start
  to the response head chosen (a streaming response's head, not its end);
* ``http_server_open_connections``, ``http_server_active_streams`` (gauges) and
  ``http_server_stream_items_sent_total`` (SSE events and other streamed pieces), read from the
  server's own state when scraped, not counted on the request path.

**Several processes** (``run(app, workers=N)``): prometheus_client's multiprocess mode. Call
:func:`use_multiprocess_dir` *before anything imports prometheus_client* (the services do it when
``--workers`` is over 1); each worker then writes its values to files in that directory, and a
scrape of any worker sums every worker's counters and histograms (and live gauges). The gauges
and the stream-item count of the other workers are as of their last request or scrape (refreshed
at most once a second on the request path).

The client's pool can be watched too: :class:`~flowno_io.client.metrics.ClientPoolCollector`
(connections active/idle and waiting requests by origin, read when scraped).
"""

from __future__ import annotations

import math
import os
import tempfile
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from time import perf_counter
from typing import TYPE_CHECKING, Any

from ..protocol.models import Response
from .middleware import CallNext, ErrorAnswer
from .request import Request

if TYPE_CHECKING:
    from .server import HttpServer

__all__ = [
    "DEFAULT_BUCKETS",
    "UNMATCHED_ROUTE",
    "MetricsMiddleware",
    "enable_metrics",
    "multiprocess_mode",
    "use_multiprocess_dir",
]

#: Latency buckets in seconds: 100 µs to 10 s.
DEFAULT_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
)
#: The ``route`` label of a request no route matched (or answered before routing).
UNMATCHED_ROUTE = "unmatched"
#: Seconds between two refreshes of the live gauges from the request path (multiprocess mode).
REFRESH_INTERVAL = 1.0
_ENV = "PROMETHEUS_MULTIPROC_DIR"


def multiprocess_mode() -> bool:
    """True when prometheus_client writes its values to ``PROMETHEUS_MULTIPROC_DIR``."""
    return bool(os.environ.get(_ENV) or os.environ.get(_ENV.lower()))


def use_multiprocess_dir(directory: str | None = None) -> str:
    """Set ``PROMETHEUS_MULTIPROC_DIR`` (a new temporary directory by default) unless it is set.

    Call it in the parent before the workers fork and before prometheus_client is imported.
    Returns the directory.
    """
    current = os.environ.get(_ENV)
    if current:
        return current
    directory = directory or tempfile.mkdtemp(prefix="flowno-io-metrics-")
    os.makedirs(directory, exist_ok=True)
    os.environ[_ENV] = directory
    return directory


#: Durations a series keeps unsorted before folding them into its buckets (at most ~8 KiB each).
FOLD_EVERY = 1024


class _Series:
    """One ``(route, method, status)``'s count, latency sum and bucket counts (one process).

    A response's duration is appended to ``pending`` (one C call on the hot path); they are folded
    into ``count``, ``total`` and ``buckets`` every ``FOLD_EVERY`` responses and when scraped, by
    sorting them and bisecting once per bound, in C. ``count`` also counts the responses the server
    answered itself (``on_error``), which are not timed.
    """

    __slots__ = ("buckets", "count", "pending", "total")

    def __init__(self, size: int) -> None:
        self.count = 0
        self.total = 0.0
        self.buckets = [0] * size  # the last one is +Inf
        self.pending: list[float] = []

    def record(self, bounds: tuple[float, ...], seconds: float) -> None:
        pending = self.pending
        pending.append(seconds)
        if len(pending) >= FOLD_EVERY:
            self.fold(bounds)

    def fold(self, bounds: tuple[float, ...]) -> None:
        """Move the pending durations into the count, the sum and the buckets."""
        pending = self.pending
        if not pending:
            return
        self.pending = []
        pending.sort()
        self.count += len(pending)
        self.total += sum(pending)
        buckets, below = self.buckets, 0
        for index, bound in enumerate(bounds):  # bucket i: bounds[i-1] < seconds <= bounds[i]
            within = bisect_right(pending, bound, below)
            buckets[index] += within - below
            below = within
        buckets[-1] += len(pending) - below


class _SharedSeries:
    """The same, written to prometheus_client's metrics (its multiprocess files)."""

    __slots__ = ("counter", "histogram")

    def __init__(self, counter: Any, histogram: Any) -> None:
        self.counter = counter
        self.histogram = histogram

    def record(self, bounds: tuple[float, ...], seconds: float) -> None:
        self.counter.inc()
        self.histogram.observe(seconds)


class MetricsMiddleware:
    """Count and time every response of ``server`` (see the module docstring).

    In one process the request path only adds to plain counters (a dict look-up, two additions
    and a ``bisect``); a collector turns them into Prometheus families when scraped. In
    multiprocess mode it writes prometheus_client's metrics instead, whose values live in the
    shared files.

    Args:
        server: the server whose connections and streams the gauges show (``None``: no gauges).
        registry: a ``prometheus_client.CollectorRegistry`` (default: a new one of this middleware).
        buckets: the latency histogram's bucket bounds in seconds.
        prefix: prepended to every metric name.
    """

    def __init__(
        self,
        server: HttpServer | None = None,
        *,
        registry: Any = None,
        buckets: Sequence[float] = DEFAULT_BUCKETS,
        prefix: str = "flowno_",
    ) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.server = server
        self.prefix = prefix
        self.bounds = tuple(sorted(float(bound) for bound in buckets))
        self.registry = CollectorRegistry(auto_describe=True) if registry is None else registry
        self.shared = multiprocess_mode()
        #: ``(route, method, status)`` -> its series.
        self._series: dict[tuple[str, str, int], _Series | _SharedSeries] = {}
        self._items_counted = 0
        self._refreshed = 0.0
        if not self.shared:
            self.registry.register(_Collector(self))
            return
        self.requests = Counter(
            f"{prefix}http_server_requests",
            _REQUESTS_HELP,
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            f"{prefix}http_server_request_duration_seconds",
            _DURATION_HELP,
            ["route", "method"],
            buckets=self.bounds,
            registry=self.registry,
        )
        self.open_connections = Gauge(
            f"{prefix}http_server_open_connections",
            _CONNECTIONS_HELP,
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.active_streams = Gauge(
            f"{prefix}http_server_active_streams",
            _STREAMS_HELP,
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.stream_items = Counter(
            f"{prefix}http_server_stream_items_sent", _ITEMS_HELP, registry=self.registry
        )

    def __repr__(self) -> str:
        return f"<MetricsMiddleware {len(self._series)} series>"

    def _new_series(self, key: tuple[str, str, int]) -> _Series | _SharedSeries:
        route, method, status = key
        series: _Series | _SharedSeries
        if self.shared:
            series = _SharedSeries(
                self.requests.labels(route, method, str(status)), self.duration.labels(route, method)
            )
        else:
            series = _Series(len(self.bounds) + 1)
        self._series[key] = series
        return series

    async def __call__(self, request: Request, call_next: CallNext) -> Any:
        start = perf_counter()
        response = await call_next(request)
        self.record(request, response.status_code, start, perf_counter())
        return response

    def record(self, request: Request, status: int, start: float, now: float) -> None:
        """Count one response of ``request`` that took ``now - start`` seconds."""
        key = (request.route or UNMATCHED_ROUTE, request.method, status)
        series = self._series.get(key) or self._new_series(key)
        series.record(self.bounds, now - start)
        if self.shared and now - self._refreshed > REFRESH_INTERVAL:
            self._refreshed = now
            self.refresh()

    def on_error(self, answer: ErrorAnswer) -> None:
        """Count an error the server answers itself (in the count, not the latency histogram)."""
        request = answer.request
        route = request.route if request is not None and request.route else UNMATCHED_ROUTE
        key = (route, answer.method or "-", answer.status)
        series = self._series.get(key) or self._new_series(key)
        if isinstance(series, _Series):
            series.count += 1
        else:
            series.counter.inc()

    def live_values(self) -> tuple[int, int, int]:
        """Open connections, active streams, and stream items sent so far, read from the server."""
        server = self.server
        if server is None:
            return 0, 0, 0
        from .streaming import _monitors

        monitor = _monitors.get(server)
        if monitor is None:
            return server.open_connections, 0, 0
        return server.open_connections, len(monitor.streams), monitor.items_sent()

    def refresh(self) -> None:
        """Multiprocess mode: write the live values to the shared gauges (at scrape time, ~1/s)."""
        if not self.shared:
            return
        connections, streams, items = self.live_values()
        self.open_connections.set(connections)
        self.active_streams.set(streams)
        if items > self._items_counted:
            self.stream_items.inc(items - self._items_counted)
            self._items_counted = items

    def exposition(self) -> tuple[bytes, str]:
        """The metrics in the Prometheus text format, and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        if self.shared:
            from prometheus_client import multiprocess

            self._refreshed = perf_counter()
            self.refresh()
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def endpoint(self, request: Request) -> Response:
        """The ``GET /metrics`` handler."""
        body, content_type = self.exposition()
        return Response(body, 200, {"Content-Type": content_type, "Cache-Control": "no-store"})


_REQUESTS_HELP = "Responses by route pattern, method and status."
_DURATION_HELP = "Seconds from the request's dispatch to its response head, by route pattern and method."
_CONNECTIONS_HELP = "Connections open."
_STREAMS_HELP = "Streaming responses being sent."
_ITEMS_HELP = "Pieces of streaming responses sent (SSE events)."


class _Collector:
    """One process's counters as Prometheus families, made when scraped."""

    def __init__(self, metrics: MetricsMiddleware) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        metrics = self.metrics
        prefix = metrics.prefix
        requests = CounterMetricFamily(
            f"{prefix}http_server_requests", _REQUESTS_HELP, labels=["route", "method", "status"]
        )
        duration = HistogramMetricFamily(
            f"{prefix}http_server_request_duration_seconds", _DURATION_HELP, labels=["route", "method"]
        )
        by_route: dict[tuple[str, str], tuple[list[int], float]] = {}
        for (route, method, status), series in list(metrics._series.items()):
            assert isinstance(series, _Series)
            series.fold(metrics.bounds)
            requests.add_metric([route, method, str(status)], series.count)
            if not any(series.buckets):
                continue  # only answered by the server itself: counted, not timed
            buckets, total = by_route.get((route, method), ([0] * len(series.buckets), 0.0))
            by_route[(route, method)] = (
                [a + b for a, b in zip(buckets, series.buckets, strict=True)],
                total + series.total,
            )
        for (route, method), (buckets, total) in by_route.items():
            cumulative, running = [], 0
            for bound, count in zip([*metrics.bounds, math.inf], buckets, strict=True):
                running += count
                cumulative.append((_bound_text(bound), running))
            duration.add_metric([route, method], cumulative, total)
        connections, streams, items = metrics.live_values()
        yield requests
        yield duration
        yield GaugeMetricFamily(f"{prefix}http_server_open_connections", _CONNECTIONS_HELP, connections)
        yield GaugeMetricFamily(f"{prefix}http_server_active_streams", _STREAMS_HELP, streams)
        yield CounterMetricFamily(f"{prefix}http_server_stream_items_sent", _ITEMS_HELP, items)

    def describe(self) -> list[Any]:
        return []


def _bound_text(bound: float) -> str:
    return "+Inf" if bound == math.inf else repr(float(bound))


def enable_metrics(
    server: HttpServer, path: str = "/metrics", *, add_middleware: bool = True, **options: Any
) -> MetricsMiddleware:
    """Add a :class:`MetricsMiddleware` to ``server`` (inside those already added) and ``GET path``.

    ``options`` go to :class:`MetricsMiddleware`. Returns the middleware. ``add_middleware=False``
    adds only the route: the caller records responses itself (``ObservabilityMiddleware`` does).

    Example:
        >>> import urllib.request
        >>> from flowno_io import HttpServer
        >>> from flowno_io.testing import ServerThread
        >>> from prometheus_client.parser import text_string_to_metric_families
        >>> server = HttpServer("127.0.0.1", 0, routes={"/items/{id}": lambda r: "x"})
        >>> _ = enable_metrics(server)
        >>> with ServerThread(server) as url:
        ...     _ = urllib.request.urlopen(url + "/items/7").read()
        ...     text = urllib.request.urlopen(url + "/metrics").read().decode()
        >>> [s.labels for f in text_string_to_metric_families(text) for s in f.samples
        ...  if s.name == "flowno_http_server_requests_total"]
        [{'method': 'GET', 'route': '/items/{id}', 'status': '200'}]
    """
    metrics = MetricsMiddleware(server, **options)
    if add_middleware:
        server.add_middleware(metrics)
    server.add_route(path, metrics.endpoint, ["GET"])
    return metrics
