"""The orchestrator sends a traceparent per request, reads Server-Timing and reports the split:
the server's own time, and the rest (network + queueing), next to the client-measured latency."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from service_process import ServiceProcess, start_service

from loadtest.cli import main

REQUESTS = 150


@pytest.fixture(scope="module")
def echo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    service = start_service("echo_service", tmp_path_factory.mktemp("echo"), "--access-log")
    try:
        yield service
    finally:
        service.stop()


def test_report_splits_server_time_from_the_rest(echo: ServiceProcess, tmp_path: Path) -> None:
    out = tmp_path / "run"
    code = main(["closed", echo.url + "/echo/raw", "-c", "1,4", "-n", str(REQUESTS), "-o", str(out), "-q"])
    assert code == 0
    result = json.loads((out / "loadtest.json").read_text())
    for phase in result["phases"]:
        server, outside = phase["server_time_ms"], phase["outside_server_ms"]
        latency = phase["latency_ms"]
        # Plausible: both parts positive, the server's part below the whole at the median.
        assert 0 < server["p50"] <= latency["p50"]
        assert 0 < outside["p50"] <= latency["p50"]
        assert phase["histograms_us"]["server_time"]["count"] == REQUESTS
        assert phase["histograms_us"]["outside_server"]["count"] == REQUESTS
    summary = (out / "summary.txt").read_text()
    assert "server p99" in summary and "outside p99" in summary
    html = (out / "loadtest.html").read_text()
    assert "server time (Server-Timing)" in html
    assert "outside the server (network + queueing)" in html
    assert "server p99" in html  # the sweep's latency chart


def test_each_request_carries_its_own_trace(echo: ServiceProcess, tmp_path: Path) -> None:
    before = echo.stdout_text().count('"trace_id"')
    code = main(["closed", echo.url + "/echo/raw?tagged=1", "-c", "2", "-n", "50", "--no-files", "-q"])
    assert code == 0
    lines = [json.loads(line) for line in echo.stdout_text().splitlines() if '"query":"tagged=1"' in line]
    assert len(lines) == 50 and echo.stdout_text().count('"trace_id"') - before == 50
    assert len({line["trace_id"] for line in lines}) == 50
