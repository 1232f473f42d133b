"""Prometheus view of an :class:`~flowno_io.HttpClient`'s connection pool (extra ``flowno-io[metrics]``).

:class:`ClientPoolCollector` reads the pool's state when scraped, so the client pays nothing per
request: ``flowno_http_client_connections{origin,state}`` (``active``: in use or being opened;
``idle``: kept alive), ``flowno_http_client_waiting_requests{origin}`` (waiting for a
connection at ``max_connections_per_host``), ``flowno_http_client_connections_opened_total``, and
``flowno_http_client_requests_total{origin}`` / ``flowno_http_client_errors_total{origin}``
(requests sent, and those that failed before a response head: from two dicts the client updates
per request).

Example:
    >>> from prometheus_client import CollectorRegistry, generate_latest
    >>> from flowno_io import HttpClient
    >>> registry = CollectorRegistry()
    >>> _ = registry.register(ClientPoolCollector(HttpClient()))
    >>> b"flowno_http_client_connections_opened_total 0.0" in generate_latest(registry)
    True
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, cast

from .client import HttpClient
from .pool import Origin

__all__ = ["ClientPoolCollector"]


class ClientPoolCollector:
    """Register on a ``prometheus_client`` registry: ``registry.register(ClientPoolCollector(client))``.

    Args:
        client: the client whose pool is read.
        prefix: prepended to every metric name.
    """

    def __init__(self, client: HttpClient, prefix: str = "flowno_") -> None:
        self.client = client
        self.prefix = prefix

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        pool = self.client.pool
        connections = GaugeMetricFamily(
            f"{self.prefix}http_client_connections",
            "Pool connections by origin: active (in use or opening) and idle (kept alive).",
            labels=["origin", "state"],
        )
        waiting = GaugeMetricFamily(
            f"{self.prefix}http_client_waiting_requests",
            "Requests waiting for a connection (max_connections_per_host reached).",
            labels=["origin"],
        )
        for key in list(pool._hosts):
            origin = cast(Origin, key)  # a proxied pool's key is (origin or "proxy", proxy URL)
            name = _origin_name(origin)
            connections.add_metric([name, "active"], pool.active_connections(origin))
            connections.add_metric([name, "idle"], pool.idle_connections(origin))
            waiting.add_metric([name], pool.waiting_requests(origin))
        requests = CounterMetricFamily(
            f"{self.prefix}http_client_requests", "Requests sent, by origin.", labels=["origin"]
        )
        errors = CounterMetricFamily(
            f"{self.prefix}http_client_errors",
            "Requests that failed before a response head (connect, write, read, protocol error, timeout).",
            labels=["origin"],
        )
        for origin, count in list(self.client.requests_by_origin.items()):
            name = _origin_name(origin)
            requests.add_metric([name], count)
            errors.add_metric([name], self.client.errors_by_origin.get(origin, 0))
        yield connections
        yield waiting
        yield requests
        yield errors
        yield CounterMetricFamily(
            f"{self.prefix}http_client_connections_opened",
            "Connections the pool opened.",
            pool.connections_opened,
        )

    def describe(self) -> list[Any]:
        return []


def _origin_name(origin: Origin) -> str:
    if len(origin) == 3:
        scheme, host, port = origin
        return f"{scheme}://{host}:{port}"
    return f"{origin[0]} via {origin[1]}"
