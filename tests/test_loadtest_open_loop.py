"""Open-loop timing against an HttpServer that stalls once: latency must include the queueing delay.

The server runs on the same flowno loop as the load generator (one loop per process). Its handler
sleeps ``STALL`` seconds on one request; with one request in flight at a time, every arrival due
during the stall waits. A coordinated-omission-free measurement charges that wait to those
requests (latency from their intended send time); the service time (from the actual send) shows
one slow request only, which is what a closed-loop tool would report.

The machine running the tests may be busy (other processes take the CPU for tens of milliseconds
at a time), so the assertions compare counts that differ by an order of magnitude (dozens of
requests waited behind the stall, one was stalled) instead of exact counts near a threshold, the
rate is low enough that the generator catches up with time to spare, and timing bounds are lower
bounds (the stall is *at least* this long) or loose upper ones.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from flowno import EventLoop, spawn

from flowno_io import HttpServer, Request, sleep
from loadtest.histogram import LogLinearHistogram
from loadtest.report import summary_table
from loadtest.runner import RunResult, run_scenario_async
from loadtest.scenario import Mode, RequestSpec, Scenario
from loadtest.stats import RequestStats

STALL = 0.5  # seconds the server stalls once
RATE = 50.0  # arrivals per second: one due every 20 ms (the generator catches up within ~0.1 s)
DURATION = 2.0  # seconds of arrivals: 100 planned
STALL_AT = 5  # the request that stalls (after a warm-up of 0.1 s)
#: Arrivals due during the stall, less the last 0.1 s of it: each of them waited more than 100 ms.
QUEUED_BEHIND_STALL = round((STALL - 0.1) * RATE)  # 20


def count_at_least(histogram: LogLinearHistogram, microseconds: int) -> int:
    """Values recorded at or above ``microseconds`` (to bucket precision)."""
    return sum(n for low, _high, n in histogram.buckets() if low >= microseconds)


def stalling_handler() -> Callable[[Request], Any]:
    served = 0

    async def handler(request: Request) -> str:
        nonlocal served
        served += 1
        if served == STALL_AT:
            await sleep(STALL)
        return "ok"

    return handler


def run_against_stalling_server(mode: Mode, **scenario_options: Any) -> RunResult:
    server = HttpServer("127.0.0.1", 0, routes={"/": stalling_handler()})
    server.bind()

    async def main() -> RunResult:
        await spawn(server.serve())
        try:
            scenario = Scenario(
                name="stall",
                target=f"http://127.0.0.1:{server.port}",
                mode=mode,
                requests=(RequestSpec("GET /"),),
                concurrency=(1,),
                timeout=5.0,
                **scenario_options,
            ).checked()
            return await run_scenario_async(scenario)
        finally:
            await server.close()

    result: RunResult = EventLoop().run_until_complete(main(), join=True)
    return result


def test_open_loop_latency_includes_the_queueing_delay_of_a_stall() -> None:
    result = run_against_stalling_server("open", rates=(RATE,), duration=DURATION)
    (phase,) = result.phases
    stats = phase.stats
    assert isinstance(stats, RequestStats)
    assert phase.planned == round(RATE * DURATION)
    # Every planned arrival was either answered or reported unsent (a generator starved of CPU by
    # other programs may not catch up after the stall: that is reported, not lost).
    assert stats.failed == 0 and stats.ok + phase.unsent == phase.planned

    # Arrivals due during the stall waited behind it: each one's latency counts from when it was
    # due, so at least QUEUED_BEHIND_STALL requests (20) are slower than 100 ms...
    slow = count_at_least(stats.latency, 100_000)
    assert slow >= QUEUED_BEHIND_STALL, slow
    assert stats.latency.max >= STALL * 1e6 * 0.95

    # ... while measured from their actual send only the stalled request itself took the whole
    # stall. (A busy machine may delay a few other requests past 100 ms, never dozens.)
    assert count_at_least(stats.service_time, round(STALL * 1e6 * 0.95)) >= 1
    slow_service = count_at_least(stats.service_time, 100_000)
    assert 1 <= slow_service <= slow // 4, (slow_service, slow)
    assert stats.service_time.value_at_percentile(50) < stats.latency.value_at_percentile(90)

    # The generator reports how late it started those requests.
    assert stats.send_lag.max >= STALL * 1e6 * 0.9


def test_closed_loop_shows_the_coordinated_omission_the_open_loop_corrects() -> None:
    result = run_against_stalling_server("closed", duration=1.0)
    (phase,) = result.phases
    stats = phase.stats
    assert isinstance(stats, RequestStats)
    assert stats.failed == 0
    # One slow sample: the requests a user would have sent during the stall were never sent.
    # (A busy machine adds slow samples of its own when it takes the CPU away for 100 ms: a few
    # of the hundreds sent, not a share of them.)
    assert count_at_least(stats.latency, round(STALL * 1e6 * 0.95)) >= 1
    slow = count_at_least(stats.latency, 100_000)
    assert 1 <= slow <= max(3, stats.ok // 10), (slow, stats.ok)

    # The wrk-style correction back-fills what requests sent on schedule would have waited: the
    # stall holds dozens of corrected samples over 100 ms, and the summary says so.
    corrected = phase.corrected_latency()
    assert corrected.max == stats.latency.max
    # (How many depends on the interval the closed loop measured: a machine so loaded that the
    # loop is slow everywhere back-fills fewer; the correction always adds slow samples.)
    assert count_at_least(corrected, 100_000) > count_at_least(stats.latency, 100_000)
    assert corrected.value_at_percentile(99) > 10 * stats.latency.value_at_percentile(50)
    summary = phase.summary()
    assert summary["co_p99_ms"] > summary["p99_ms"]
    assert "understates it; corrected for coordinated omission p99 is" in summary_table(result)


def test_open_loop_that_cannot_keep_up_reports_unsent_requests() -> None:
    server = HttpServer("127.0.0.1", 0)

    async def slow(request: Request) -> str:
        await sleep(0.02)  # at most 50 requests/s with one in flight
        return "ok"

    server.add_route("/", slow)
    server.bind()

    async def main() -> RunResult:
        await spawn(server.serve())
        try:
            scenario = Scenario(
                "overload",
                f"http://127.0.0.1:{server.port}",
                "open",
                (RequestSpec("GET /"),),
                concurrency=(1,),
                rates=(200.0,),
                duration=0.5,
            ).checked()
            return await run_scenario_async(scenario)
        finally:
            await server.close()

    result: RunResult = EventLoop().run_until_complete(main(), join=True)
    (phase,) = result.phases
    assert phase.planned == 100
    assert 50 <= phase.unsent < phase.planned  # some were sent; most could not be
    assert phase.behind >= 0.2
    assert "never sent" in summary_table(result)
    # An open loop that did not keep its schedule fails its checks by default ...
    failed = [outcome.threshold.text for outcome in result.check() if not outcome.passed]
    assert failed == ["unsent==0"]
    assert "FAILED" in summary_table(result) and "unsent==0 failed in phase 0" in summary_table(result)
    # ... unless told otherwise.
    result.scenario = dataclasses.replace(result.scenario, schedule_check=False)
    assert result.check() == []
