"""Event-stream load metrics: events lost, duplicated or out of order by id, and reconnects.

A scripted server (``loadtest.testing.ScriptedServer``, standard-library threads) sends exact
event streams, including broken ones a real service would not send; the orchestrator runs on this
process's flowno loop, each phase bounded by one stream and a duration. The last test runs the
command line against the stream service's ``/events`` (ids and ``Last-Event-ID`` resume).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

from flowno_io.testing import ServerThread
from loadtest.runner import run_scenario
from loadtest.scenario import RequestSpec, Scenario
from loadtest.stats import StreamStats
from loadtest.testing import ScriptedServer, header_value, sse_response
from stream_service.app import build_server

ROOT = Path(__file__).resolve().parents[1]
NO_CONTENT = b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n"


def one_stream(url: str, reconnect: bool = False) -> StreamStats:
    """Open one stream (reconnecting if asked) and return the phase's stream statistics."""
    scenario = Scenario(
        "ids",
        url,
        "sse",
        (RequestSpec("GET /events", path="/events"),),
        concurrency=(1,),
        duration=15.0,  # bounds a hang only: one stream (count=1) ends the phase
        count=1,
        timeout=5.0,
        reconnect=reconnect,
    ).checked()
    (phase,) = run_scenario(scenario).phases
    stats = phase.stats
    assert isinstance(stats, StreamStats)
    assert stats.failed == 0, dict(stats.errors)
    return stats


def events(*ids: int) -> bytes:
    return sse_response([(n, f'{{"n":{n}}}') for n in ids])


def test_a_stream_that_skips_an_id_counts_it_as_lost() -> None:
    with ScriptedServer(lambda number, head: events(1, 2, 4, 5)) as url:
        stats = one_stream(url)
    assert (stats.events, stats.lost, stats.duplicated, stats.out_of_order) == (4, 1, 0, 0)
    assert stats.completed == 1


def test_late_and_repeated_ids_are_out_of_order_and_duplicated_not_lost() -> None:
    with ScriptedServer(lambda number, head: events(1, 2, 4, 3, 3, 5)) as url:
        stats = one_stream(url)
    assert (stats.events, stats.lost, stats.duplicated, stats.out_of_order) == (6, 0, 1, 1)


def test_an_in_order_stream_has_nothing_lost() -> None:
    with ScriptedServer(lambda number, head: events(*range(1, 21))) as url:
        stats = one_stream(url)
    assert (stats.events, stats.lost, stats.duplicated, stats.out_of_order, stats.reconnects) == (
        20,
        0,
        0,
        0,
        0,
    )


class ResumingScript:
    """Sends ids 1-5 and closes; resumes after ``Last-Event-ID`` (skipping ``skip`` ids) up to 10
    and closes; then answers 204 (nothing left), as the stream service does."""

    def __init__(self, skip: int = 0) -> None:
        self.skip = skip
        self.last_event_ids: list[str | None] = []
        self._lock = threading.Lock()

    def __call__(self, number: int, head: bytes) -> bytes:
        last = header_value(head, "Last-Event-ID")
        with self._lock:
            self.last_event_ids.append(last)
        after = int(last) if last is not None else 0
        if after >= 10:
            return NO_CONTENT
        end = 5 if after < 5 else 10
        return events(*range(after + 1 + self.skip * (after > 0), end + 1))


def test_reconnect_resumes_after_the_last_event_id_with_no_loss() -> None:
    script = ResumingScript()
    with ScriptedServer(script) as url:
        stats = one_stream(url, reconnect=True)
    assert script.last_event_ids == [None, "5", "10"]
    assert stats.events == 10
    assert (stats.lost, stats.duplicated, stats.out_of_order, stats.reconnect_lost) == (0, 0, 0, 0)
    assert stats.reconnects == 2  # after id 5 (resumed) and after id 10 (answered 204)
    assert stats.time_to_resume.count == 1 and stats.time_to_resume.max > 0
    assert stats.completed == 1 and stats.cut == 0


def test_ids_skipped_across_a_reconnect_are_counted() -> None:
    script = ResumingScript(skip=2)  # resumes at 8 instead of 6
    with ScriptedServer(script) as url:
        stats = one_stream(url, reconnect=True)
    assert script.last_event_ids == [None, "5", "10"]
    assert stats.events == 8
    assert (stats.lost, stats.reconnect_lost) == (2, 2)


def test_without_reconnect_a_closed_stream_is_not_reopened() -> None:
    script = ResumingScript()
    with ScriptedServer(script) as url:
        stats = one_stream(url, reconnect=False)
    assert script.last_event_ids == [None]
    assert (stats.events, stats.reconnects, stats.lost) == (5, 0, 0)


def test_reconnect_against_the_stream_service(tmp_path: Path) -> None:
    with ServerThread(build_server("127.0.0.1", 0)) as url:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "loadtest",
                "sse",
                url + "/events?count=20&interval_ms=5",
                "-c",
                "2",
                "-n",
                "2",
                "-d",
                "15",  # bounds a hang only: two streams of 0.1 s end the phase
                "--reconnect",
                "--threshold",
                "lost==0",
                "--no-progress",
                "-o",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
            check=False,
        )
    assert done.returncode == 0, done.stdout + done.stderr
    (phase,) = json.loads((tmp_path / "loadtest.json").read_text())["phases"]
    ids = phase["event_ids"]
    assert phase["summary"]["events"] == 40
    assert (ids["lost"], ids["duplicated"], ids["out_of_order"], ids["untracked"]) == (0, 0, 0, 0)
    # each stream ended after id 20; the reconnect with Last-Event-ID: 20 got 204 (complete)
    assert ids["reconnects"] == 2 and phase["summary"]["completed"] == 2
