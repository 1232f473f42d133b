"""Prometheus metrics (server/metrics.py): /metrics parsed with prometheus_client's own parser."""

from __future__ import annotations

import http.client
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from rawhttp import read_until_closed
from service_process import start_service

from flowno_io import EventSourceResponse, HttpServer, Response
from flowno_io.server.metrics import FOLD_EVERY, _Series, enable_metrics
from flowno_io.testing import ServerThread


def samples(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of ``url/metrics``: ``(name, labels) -> value``."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as answer:
        assert answer.headers["Content-Type"].startswith("text/plain; version=")
        text = answer.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            answer.read()
            return answer.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def metered() -> Iterator[str]:
    server = HttpServer("127.0.0.1", 0)

    @server.route("/items/{id:int}", methods=["GET"])
    def item(request):  # type: ignore[no-untyped-def]
        return {"id": request.path_params["id"]}

    @server.route("/boom")
    def boom(request):  # type: ignore[no-untyped-def]
        raise RuntimeError("boom")

    @server.route("/events")
    def events(request):  # type: ignore[no-untyped-def]
        return EventSourceResponse(["a", "b", "c"])

    enable_metrics(server)
    with ServerThread(server) as url:
        yield url


def test_requests_counted_by_route_pattern_method_and_status(metered: str) -> None:
    for n in range(3):
        assert get(f"{metered}/items/{n}") == 200
    assert get(f"{metered}/nowhere") == 404
    assert get(f"{metered}/boom") == 500
    with socket.create_connection(("127.0.0.1", int(metered.rsplit(":", 1)[1])), timeout=5) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
        assert read_until_closed(sock).startswith(b"HTTP/1.1 400")
    found = samples(metered)
    name = "flowno_http_server_requests_total"
    # The pattern, not the three raw paths: one series.
    assert value(found, name, route="/items/{id:int}", method="GET", status="200") == 3
    assert not any(dict(labels).get("route", "").startswith("/items/0") for _, labels in found)
    assert value(found, name, route="unmatched", method="GET", status="404") == 1
    assert value(found, name, route="/boom", method="GET", status="500") == 1
    # The head failed to parse: no method known.
    assert value(found, name, route="unmatched", method="-", status="400") == 1
    hist = "flowno_http_server_request_duration_seconds"
    assert value(found, hist + "_count", route="/items/{id:int}", method="GET") == 3
    assert value(found, hist + "_bucket", route="/items/{id:int}", method="GET", le="+Inf") == 3
    assert 0 < value(found, hist + "_sum", route="/items/{id:int}", method="GET") < 30
    assert value(found, "flowno_http_server_open_connections") >= 1  # the scrape's own


def test_interleaved_routes_methods_and_statuses_each_go_to_their_own_series() -> None:
    """The observer finds the last response's series again without a key (server/observer.py):
    runs of one series and alternations between series of one route (another status, another
    method) are each counted where they belong."""
    server = HttpServer("127.0.0.1", 0)

    @server.route("/answer/{code:int}", methods=["GET", "HEAD"])
    def answer(request):  # type: ignore[no-untyped-def]
        return Response(b"x", request.path_params["code"])

    enable_metrics(server)
    codes = [200, 200, 201, 200, 201, 201, 404]
    with ServerThread(server) as url:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)  # keep-alive
        try:
            asked = [(method, code) for method in ("GET", "HEAD", "GET") for code in codes]
            asked += [("GET", 200), ("HEAD", 200), ("GET", 200)]  # only the method changes
            for method, code in asked:
                connection.request(method, f"/answer/{code}")
                connection.getresponse().read()
        finally:
            connection.close()
        found = samples(url)
    name = "flowno_http_server_requests_total"
    route = "/answer/{code:int}"
    assert value(found, name, route=route, method="GET", status="200") == 8
    assert value(found, name, route=route, method="GET", status="201") == 6
    assert value(found, name, route=route, method="GET", status="404") == 2
    assert value(found, name, route=route, method="HEAD", status="200") == 4
    assert value(found, name, route=route, method="HEAD", status="201") == 3
    assert value(found, name, route=route, method="HEAD", status="404") == 1
    hist = "flowno_http_server_request_duration_seconds"
    assert value(found, hist + "_count", route=route, method="GET") == 16
    assert value(found, hist + "_count", route=route, method="HEAD") == 8


def test_stream_items_and_streams(metered: str) -> None:
    with urllib.request.urlopen(metered + "/events", timeout=10) as answer:
        assert answer.read() == b"data: a\n\ndata: b\n\ndata: c\n\n"
    found = samples(metered)
    assert value(found, "flowno_http_server_stream_items_sent_total") == 3
    assert value(found, "flowno_http_server_active_streams") == 0
    assert value(found, "flowno_http_server_requests_total", route="/events", method="GET", status="200") == 1


def test_a_second_scrape_counts_the_first(metered: str) -> None:
    samples(metered)
    found = samples(metered)
    assert (
        value(found, "flowno_http_server_requests_total", route="/metrics", method="GET", status="200") == 1
    )


def test_the_server_method_and_metrics_off() -> None:
    server = HttpServer("127.0.0.1", 0, routes={"/": lambda r: "hi"})
    metrics = server.enable_metrics(path="/_metrics")
    assert metrics in server.middleware
    with ServerThread(server) as url:
        assert get(url + "/") == 200
        assert get(url + "/_metrics") == 200


def test_echo_service_with_two_workers_aggregates(tmp_path: Path) -> None:
    service = start_service("echo_service", tmp_path, "--workers", "2", env={"PROMETHEUS_MULTIPROC_DIR": ""})
    try:
        total = 40
        for _ in range(total):  # a new connection each: SO_REUSEPORT spreads them over both workers
            assert get(service.url + "/echo/raw") == 200
        for _ in range(4):  # whichever worker answers the scrape sums both
            found = samples(service.url)
            assert (
                value(
                    found,
                    "flowno_http_server_requests_total",
                    route="/echo/raw",
                    method="GET",
                    status="200",
                )
                == total
            )
            assert (
                value(
                    found,
                    "flowno_http_server_request_duration_seconds_count",
                    route="/echo/raw",
                    method="GET",
                )
                == total
            )
    finally:
        service.stop()


def test_no_metrics_option(tmp_path: Path) -> None:
    service = start_service("echo_service", tmp_path, "--no-metrics")
    try:
        assert get(service.url + "/metrics") == 404
    finally:
        service.stop()


def test_client_pool_collector(tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from flowno_io import ConnectError, HttpClient
    from flowno_io.client.metrics import ClientPoolCollector
    from flowno_io.testing import run

    service = start_service("echo_service", tmp_path, "--no-metrics")
    try:
        client = HttpClient()
        registry = CollectorRegistry()
        registry.register(ClientPoolCollector(client))

        async def three() -> None:
            for _ in range(3):
                await client.get(service.url + "/echo/raw")

        run(three())
        text = generate_latest(registry).decode()
        found = {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
        origin = service.url  # http://127.0.0.1:PORT
        assert value(found, "flowno_http_client_connections", origin=origin, state="idle") == 1
        assert value(found, "flowno_http_client_connections", origin=origin, state="active") == 0
        assert value(found, "flowno_http_client_connections_opened_total") == 1
        assert value(found, "flowno_http_client_requests_total", origin=origin) == 3
        assert value(found, "flowno_http_client_errors_total", origin=origin) == 0

        async def refused() -> None:
            with socket.socket() as sock:  # a port nothing listens on: bound, never listening
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
                try:
                    await client.get(f"http://127.0.0.1:{port}/")
                except ConnectError:
                    return
            raise AssertionError("connected to a port nothing listens on")

        run(refused())
        text = generate_latest(registry).decode()
        errors = [
            sample
            for family in text_string_to_metric_families(text)
            for sample in family.samples
            if sample.name == "flowno_http_client_errors_total" and sample.value == 1
        ]
        assert len(errors) == 1 and errors[0].labels["origin"] != origin
        client.close()
    finally:
        service.stop()


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.one_of(st.sampled_from([0.005, 0.01, 0.25, 10.0]), st.floats(0, 20, allow_nan=False)),
        max_size=3 * FOLD_EVERY,
    ),
    st.integers(0, 5),
)
def test_series_buckets_match_counting_each_duration(durations: list[float], errors: int) -> None:
    """The durations appended and folded in batches (every FOLD_EVERY, and before a scrape) give
    the count, sum and buckets of counting each one on its own; a duration equal to a bound falls
    in that bound's bucket (``le``); answers the server made itself count but are not timed."""
    bounds = (0.005, 0.01, 0.25, 10.0)
    series = _Series(len(bounds) + 1)
    expected = [0] * (len(bounds) + 1)
    for index, seconds in enumerate(durations):
        series.record(bounds, seconds)
        expected[next((i for i, bound in enumerate(bounds) if seconds <= bound), len(bounds))] += 1
        if index < errors:
            series.count += 1  # what on_error does
    assert len(series.pending) < FOLD_EVERY
    series.fold(bounds)
    assert series.pending == []
    assert series.buckets == expected
    assert series.count == len(durations) + min(errors, len(durations))
    assert series.total == pytest.approx(sum(durations))
