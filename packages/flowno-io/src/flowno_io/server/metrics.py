"""Prometheus metrics for an :class:`~flowno_io.HttpServer` (extra ``flowno-io[metrics]``).

:func:`enable_metrics` (or ``server.enable_metrics()``) adds a :class:`MetricsMiddleware` and a
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

The client's pool can be watched too: :class:`~flowno_io.client.metrics.ClientPoolCollector`.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
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


class MetricsMiddleware:
    """Count and time every response of ``server`` (see the module docstring).

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
        self.registry = CollectorRegistry(auto_describe=True) if registry is None else registry
        self.requests = Counter(
            f"{prefix}http_server_requests",
            "Responses by route pattern, method and status.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.duration = Histogram(
            f"{prefix}http_server_request_duration_seconds",
            "Seconds from the request's dispatch to its response head, by route pattern and method.",
            ["route", "method"],
            buckets=buckets,
            registry=self.registry,
        )
        self.open_connections = Gauge(
            f"{prefix}http_server_open_connections",
            "Connections open.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.active_streams = Gauge(
            f"{prefix}http_server_active_streams",
            "Streaming responses being sent.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )
        self.stream_items = Counter(
            f"{prefix}http_server_stream_items_sent",
            "Pieces of streaming responses sent (SSE events).",
            registry=self.registry,
        )
        self._items_counted = 0
        self._refreshed = 0.0
        # (route, method, status) -> (counter child, histogram child): labels() once per series.
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def __repr__(self) -> str:
        return f"<MetricsMiddleware {len(self._children)} series>"

    def _child(self, route: str, method: str, status: int) -> tuple[Any, Any]:
        key = (route, method, status)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = (
                self.requests.labels(route, method, str(status)),
                self.duration.labels(route, method),
            )
        return child

    async def __call__(self, request: Request, call_next: CallNext) -> Any:
        start = perf_counter()
        response = await call_next(request)
        now = perf_counter()
        counter, histogram = self._child(
            request.route or UNMATCHED_ROUTE, request.method, response.status_code
        )
        counter.inc()
        histogram.observe(now - start)
        if now - self._refreshed > REFRESH_INTERVAL:
            self._refreshed = now
            self.refresh()
        return response

    def on_error(self, answer: ErrorAnswer) -> None:
        """Count an error the server answers itself."""
        request = answer.request
        route = request.route if request is not None and request.route else UNMATCHED_ROUTE
        self._child(route, answer.method or "-", answer.status)[0].inc()

    def refresh(self) -> None:
        """Read the server's connections and streams into the gauges (at scrape time, and ~1/s)."""
        server = self.server
        if server is None:
            return
        from .streaming import _monitors

        self.open_connections.set(server.open_connections)
        monitor = _monitors.get(server)
        if monitor is None:
            self.active_streams.set(0)
            return
        self.active_streams.set(len(monitor.streams))
        items = monitor.items_sent()
        if items > self._items_counted:
            self.stream_items.inc(items - self._items_counted)
            self._items_counted = items

    def exposition(self) -> tuple[bytes, str]:
        """The metrics in the Prometheus text format, and its content type."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

        self._refreshed = perf_counter()
        self.refresh()
        if multiprocess_mode():
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def endpoint(self, request: Request) -> Response:
        """The ``GET /metrics`` handler."""
        body, content_type = self.exposition()
        return Response(body, 200, {"Content-Type": content_type, "Cache-Control": "no-store"})


def enable_metrics(server: HttpServer, path: str = "/metrics", **options: Any) -> MetricsMiddleware:
    """Add a :class:`MetricsMiddleware` to ``server`` (inside those already added) and ``GET path``.

    ``options`` go to :class:`MetricsMiddleware`. Returns the middleware.

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
    server.add_middleware(metrics)
    server.add_route(path, metrics.endpoint, ["GET"])
    return metrics
