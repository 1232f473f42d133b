"""``RequestStats`` keeps each latency once (a batch per endpoint and interval) and records the
batches in bulk: every view (the phase's, each endpoint's, each interval's) must be what recording
each response directly in it gives, whenever it is read."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from loadtest.histogram import LogLinearHistogram
from loadtest.stats import BATCH_LIMIT, RequestStats, Timeline


class _Direct:
    """The views recorded one response at a time, as ``RequestStats`` did before batching."""

    def __init__(self, interval: float) -> None:
        self.latency = LogLinearHistogram()
        self.endpoints: dict[str, tuple[LogLinearHistogram, list[int]]] = {}
        self.timeline = Timeline(interval)

    def record(self, name: str, offset: float, latency: float, ok: bool) -> None:
        microseconds = max(0, round(latency * 1e6))
        self.latency.record(microseconds)
        histogram, outcomes = self.endpoints.setdefault(name, (LogLinearHistogram(), [0, 0]))
        histogram.record(microseconds)
        outcomes[0 if ok else 1] += 1
        self.timeline.record(offset, microseconds, ok)


VIEWS = ("latency", "endpoints", "timeline")


def _assert_same(stats: RequestStats, direct: _Direct, first: str = "latency") -> None:
    """Each view equals the direct one; ``first`` is read first (each must bring itself up to date)."""

    def latency() -> None:
        assert stats.latency.to_dict() == direct.latency.to_dict()

    def endpoints() -> None:
        assert list(stats.by_name) == list(direct.endpoints)  # (in the order they first completed)
        for name, (histogram, (ok, failed)) in direct.endpoints.items():
            endpoint = stats.by_name[name]
            assert endpoint.latency.to_dict() == histogram.to_dict(), name
            assert (endpoint.ok, endpoint.failed) == (ok, failed), name

    def timeline() -> None:
        assert stats.timeline.to_state() == direct.timeline.to_state()
        assert stats.timeline.rows(end=1e9) == direct.timeline.rows(end=1e9)

    checks = {"latency": latency, "endpoints": endpoints, "timeline": timeline}
    checks.pop(first)()
    for check in checks.values():
        check()
    assert stats.completed == direct.latency.count


def _run(stats: RequestStats, direct: _Direct, responses: list[tuple[str, float, float, bool]]) -> None:
    for name, offset, latency, ok in responses:
        stats.record_response(name, offset, latency, status=200 if ok else 500, ok=ok, service=latency)
        direct.record(name, offset, latency, ok)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["GET /", "POST /items", "GET /slow"]),
            st.floats(min_value=0.0, max_value=2.0),  # seconds since the previous completion
            st.floats(min_value=-0.001, max_value=30.0),  # latency (a clock step back: below 0)
            st.booleans(),
        ),
        max_size=200,
    ),
    st.dictionaries(st.integers(min_value=0, max_value=200), st.sampled_from(VIEWS), max_size=4),
    st.sampled_from(VIEWS),
)
def test_every_view_equals_recording_each_response_in_it(
    steps: list[tuple[str, float, float, bool]], reads: dict[int, str], last: str
) -> None:
    """Completions in time order (as the runner makes them), read at arbitrary points mid-run."""
    stats, direct = RequestStats(0.5), _Direct(0.5)
    offset = 0.0
    for index, (name, gap, latency, ok) in enumerate(steps):
        if index in reads:
            _assert_same(stats, direct, reads[index])  # a read (a progress line) mid-run
        offset += gap
        _run(stats, direct, [(name, offset, latency, ok)])
    _assert_same(stats, direct, last)


def test_views_stay_exact_past_a_full_batch_a_coarsened_timeline_and_out_of_order_offsets() -> None:
    rng = random.Random(12)
    stats, direct = RequestStats(1.0), _Direct(1.0)
    # one interval holding more than a batch of one endpoint
    _run(stats, direct, [("a", 0.5, rng.uniform(0.001, 0.05), True) for _ in range(BATCH_LIMIT + 10)])
    # more intervals than the timeline keeps (it coarsens), with completions out of order
    responses = [
        ("ab"[rng.randrange(2)], rng.uniform(0, 600), rng.expovariate(500), rng.random() > 0.1)
        for _ in range(3000)
    ]
    _run(stats, direct, sorted(responses[:2000], key=lambda response: response[1]) + responses[2000:])
    _assert_same(stats, direct, "timeline")
    assert stats.timeline.interval > 1.0  # (coarsened)


def test_state_and_merge_include_the_latencies_not_yet_recorded() -> None:
    stats, direct = RequestStats(), _Direct(1.0)
    _run(stats, direct, [("a", 0.1 * i, 0.001 * (i % 7 + 1), i % 5 > 0) for i in range(30)])
    state = stats.to_state()  # (nothing read before)
    for first in VIEWS:
        _assert_same(RequestStats.from_state(state), direct, first)
    # A phase rebuilt with another timeline interval than the default, recorded into further.
    finer, finer_direct = RequestStats(0.25), _Direct(0.25)
    _run(finer, finer_direct, [("a", 0.1 * i, 0.001, True) for i in range(10)])
    rebuilt = RequestStats.from_state(finer.to_state())
    _run(rebuilt, finer_direct, [("a", 1.0 + 0.1 * i, 0.002, True) for i in range(10)])
    _assert_same(rebuilt, finer_direct, "timeline")
    fresh, merged_direct = RequestStats(), _Direct(1.0)
    _run(fresh, merged_direct, [("b", 0.2, 0.003, True)])
    fresh.merge(stats)  # ``stats`` was just flushed by to_state: give it pending latencies again
    _run(stats, direct, [("a", 3.5, 0.009, True)])
    fresh.merge(stats)
    assert fresh.by_name["a"].latency.count == 30 + 30 + 1
    assert fresh.latency.count == 1 + 30 + 31
    # (0.1 s apart: 10 per interval, "b" in the first, the late one alone in the fourth)
    assert [row["completed"] for row in fresh.timeline.rows()] == [1 + 10 + 10, 20, 20, 1]


def test_statuses_counted_since_the_last_read_are_kept() -> None:
    stats = RequestStats()
    stats.record_response("a", 0.1, 0.001, status=200, ok=True)
    assert dict(stats.statuses) == {200: 1}
    stats.record_response("a", 0.2, 0.001, status=200, ok=True)
    stats.record_response("a", 0.3, 0.001, status=503, ok=False)
    assert dict(stats.statuses) == {200: 2, 503: 1}
    assert RequestStats.from_state(stats.to_state()).statuses == stats.statuses


@given(st.lists(st.integers(min_value=0, max_value=2**45), max_size=300))
def test_record_many_equals_recording_one_by_one(values: list[int]) -> None:
    """Any shape, values past ``max_bits`` clamped, into a histogram that already holds some."""
    for shape in ((8, 37), (5, 37), (5, 30), (2, 3)):
        together, apart = LogLinearHistogram(*shape), LogLinearHistogram(*shape)
        together.record(7)
        apart.record(7)
        together.record_many(values)
        for value in values:
            apart.record(value)
        assert together.to_dict() == apart.to_dict(), shape


def test_record_many_refuses_a_negative_value_and_records_nothing() -> None:
    histogram = LogLinearHistogram()
    with pytest.raises(ValueError, match="non-negative"):
        histogram.record_many([5, -1, 9])
    assert histogram.count == 0 and histogram.to_dict()["counts"] == {}
