"""Open-loop arrival schedule: due times, claims, the send window, and falling behind."""

from __future__ import annotations

import pytest

from loadtest.schedule import ArrivalSchedule, planned_requests


def test_due_times_are_evenly_spaced_from_the_start() -> None:
    schedule = ArrivalSchedule(rate=4, start=10.0, duration=1.0)
    assert [schedule.due(i) for i in range(4)] == [10.0, 10.25, 10.5, 10.75]
    assert schedule.planned == 4


def test_planned_counts_due_times_before_the_end() -> None:
    assert planned_requests(10, 1.0, None) == 10  # 0.0 .. 0.9
    assert planned_requests(2.5, 1.0, None) == 3  # 0.0, 0.4, 0.8
    assert planned_requests(3, 0.1, None) == 1  # only t=0 fits
    assert planned_requests(1000, 10.0, 500) == 500  # the count is a cap
    assert planned_requests(7, None, 20) == 20
    assert planned_requests(0.1 * 3, 10.0, None) == 3  # no float round-up to 4


def test_invalid_schedules_are_refused() -> None:
    with pytest.raises(ValueError):
        planned_requests(0, 1.0, None)
    with pytest.raises(ValueError):
        planned_requests(10, None, None)


def test_claims_are_in_order_and_stop_at_the_plan() -> None:
    schedule = ArrivalSchedule(rate=100, start=0.0, count=3)
    assert [schedule.claim(now=0.0) for _ in range(4)] == [0, 1, 2, None]
    assert schedule.unsent == 0 and schedule.behind() == 0.0
    assert schedule.window_end == pytest.approx(0.03)


def test_a_late_claim_keeps_its_original_due_time() -> None:
    """Claiming late does not move the due time: latency is charged from when it was due."""
    schedule = ArrivalSchedule(rate=10, start=0.0, duration=10.0)
    index = schedule.claim(now=5.0)  # a stall: the generator comes back 5 s in
    assert index == 0 and schedule.due(index) == 0.0


def test_window_closes_and_reports_how_far_behind() -> None:
    schedule = ArrivalSchedule(rate=100, start=0.0, duration=1.0)
    for _ in range(40):
        assert schedule.claim(now=0.5) is not None
    assert schedule.claim(now=1.0) is None
    assert schedule.unsent == 60
    assert schedule.behind() == pytest.approx(1.0 - 0.40)
