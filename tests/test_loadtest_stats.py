"""Phase bookkeeping: outcomes, errors by kind, endpoints, the bounded timeline, stream stats."""

from __future__ import annotations

import pytest

from loadtest.stats import RequestStats, StreamStats, Timeline, latency_summary


def test_responses_and_errors_are_counted_by_kind_and_status() -> None:
    stats = RequestStats()
    stats.record_response("a", 0.1, 0.001, status=200, ok=True, size=10)
    stats.record_response("a", 0.2, 0.002, status=503, ok=False, size=5)
    stats.record_response("b", 0.3, 0.003, status=404, ok=True)  # expected by the scenario
    stats.record_error("b", 0.4, 1.0, "ReadTimeout", "read timed out")
    stats.record_error("b", 0.5, 1.0, "ReadTimeout", "read timed out")
    assert (stats.completed, stats.ok, stats.failed) == (5, 2, 3)
    assert dict(stats.errors) == {"HTTP 503": 1, "ReadTimeout": 2}
    assert stats.error_samples["ReadTimeout"] == ["read timed out"]
    assert dict(stats.statuses) == {200: 1, 503: 1, 404: 1}
    assert stats.bytes_received == 15
    assert (stats.by_name["a"].ok, stats.by_name["a"].failed) == (1, 1)
    assert (stats.by_name["b"].ok, stats.by_name["b"].failed) == (1, 2)
    assert stats.latency.max == 1_000_000


def test_open_loop_latency_and_service_time_are_kept_apart() -> None:
    stats = RequestStats()
    stats.record_lag(0.5)
    stats.record_response("a", 1.0, 0.501, status=200, ok=True, service=0.001)
    assert stats.latency.max == 501_000
    assert stats.service_time.max == 1_000
    assert stats.send_lag.max == 500_000


def test_latency_summary_is_in_milliseconds() -> None:
    stats = RequestStats()
    for ms in range(1, 101):
        stats.record_response("a", 0.0, ms / 1000, status=200, ok=True)
    summary = latency_summary(stats.latency)
    assert summary["min"] == 1.0 and summary["max"] == 100.0
    assert summary["p50"] == pytest.approx(50, rel=0.004)
    assert summary["p99"] == pytest.approx(99, rel=0.004)
    assert summary["mean"] == pytest.approx(50.5)


def test_timeline_rows_per_interval() -> None:
    timeline = Timeline(interval=1.0)
    for offset, latency in ((0.1, 1000), (0.9, 3000), (1.5, 2000)):
        timeline.record(offset, latency)
    timeline.record(1.6, 9000, ok=False)
    rows = timeline.rows()
    assert [row["completed"] for row in rows] == [2, 2]
    assert [row["errors"] for row in rows] == [0, 1]
    assert rows[1]["max_ms"] == 9.0 and rows[0]["throughput"] == 2.0


def test_timeline_memory_is_bounded_for_long_runs() -> None:
    timeline = Timeline(interval=1.0, max_intervals=10)
    for second in range(1000):
        timeline.record(second + 0.5, 100)
    rows = timeline.rows()
    assert len(rows) <= 10
    assert sum(row["completed"] for row in rows) == 1000
    assert timeline.interval == 128.0


def test_timeline_partial_last_interval_is_not_diluted() -> None:
    timeline = Timeline(interval=1.0)
    for i in range(100):
        timeline.record(i / 100, 100)  # 100/s during the first second
    for i in range(50):
        timeline.record(1.0 + i / 100, 100)  # 100/s during half of the second one
    rows = timeline.rows(end=1.5)
    assert rows[-1]["width"] == 0.5 and rows[-1]["throughput"] == 100.0
    timeline.record(2.005, 100)  # a completion just after the second interval
    merged = timeline.rows(end=2.01)  # a sliver of an interval merges into the one before
    assert len(merged) == 2
    assert merged[-1]["width"] == 1.01 and merged[-1]["completed"] == 51


def test_stream_stats() -> None:
    stats = StreamStats()
    stats.started = 3
    stats.record_open(200)
    stats.record_first_event(0.1, 0.004)
    stats.record_event(0.12, gap=0.02)
    stats.record_event(0.14, gap=0.02)
    stats.record_end(0.05, cut=False)
    stats.record_open(200)
    stats.record_first_event(0.2, 0.006)
    stats.record_end(1.0, cut=True)
    stats.record_open(500)
    stats.record_failure(0.3, "HTTP 500", "")
    assert (stats.opened, stats.completed, stats.cut, stats.failed, stats.events) == (2, 1, 1, 1, 4)
    assert stats.time_to_first_event.count == 2 and stats.time_to_first_event.max == 6000
    assert stats.event_gap.count == 2
    assert stats.stream_duration.count == 1
    assert dict(stats.errors) == {"HTTP 500": 1}
    assert sum(row["events_per_s"] for row in stats.timeline.rows()) == 4.0


def test_service_times_equal_to_the_latencies_are_kept_once_and_read_back_exactly() -> None:
    stats = RequestStats()
    for ms in (1, 2, 3):
        stats.record_response("a", 0.0, ms / 1000, status=200, ok=True, service=ms / 1000)
    early = stats.service_time.to_dict()  # read mid-run: made from the latencies
    assert early == stats.latency.to_dict()
    stats.record_response("a", 0.0, 0.5, status=200, ok=True, service=0.004)  # a late open-loop start
    stats.record_response("a", 0.0, 0.005, status=200, ok=True)
    assert stats.service_time.count == stats.latency.count == 5
    assert stats.service_time.max == 5000 and stats.latency.max == 500_000
    merged = RequestStats()
    merged.merge(stats)
    merged.merge(RequestStats.from_state(stats.to_state()))
    assert merged.service_time.count == 10 and merged.service_time.max == 5000


def test_a_late_start_after_equal_service_times_keeps_them_all() -> None:
    stats = RequestStats()
    stats.record_response("a", 0.0, 0.001, status=200, ok=True, service=0.001)
    stats.record_response("a", 0.0, 0.9, status=200, ok=True, service=0.002)
    assert stats.service_time.count == 2
    assert (stats.service_time.min, stats.service_time.max) == (1000, 2000)
