"""The runner's process settings: a run collects garbage less eagerly, and puts the GC back.

A scripted server (``loadtest.testing.ScriptedServer``, standard-library threads in this process)
looks at the process's GC settings while it answers, so they are seen as they are during a run.
"""

from __future__ import annotations

import gc

from loadtest.runner import RUN_GC_THRESHOLD, run_scenario
from loadtest.scenario import RequestSpec, Scenario
from loadtest.stats import RequestStats
from loadtest.testing import ScriptedServer

OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"


def test_a_run_freezes_start_up_objects_and_raises_the_gc_threshold_then_restores_both() -> None:
    seen: list[tuple[tuple[int, int, int], int]] = []

    def script(number: int, head: bytes) -> bytes:
        seen.append((gc.get_threshold(), gc.get_freeze_count()))
        return OK

    before = gc.get_threshold()
    with ScriptedServer(script) as url:
        scenario = Scenario(
            "gc",
            url,
            "closed",
            (RequestSpec("GET /", path="/"),),
            concurrency=(2,),
            duration=15.0,  # bounds a hang only: the count ends the phase
            count=5,
            timeout=5.0,
        ).checked()
        (phase,) = run_scenario(scenario).phases
    stats = phase.stats
    assert isinstance(stats, RequestStats)
    assert stats.ok == 5, dict(stats.errors)
    assert seen and all(thresholds[0] == RUN_GC_THRESHOLD for thresholds, _ in seen)
    assert all(thresholds[1:] == before[1:] for thresholds, _ in seen)
    assert all(frozen > 0 for _, frozen in seen)  # the start-up's objects are left alone
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
