"""Merging results: the merge of two result files equals one run's histograms; ``--processes``.

The first tests build results from known samples (no timing): one run records every sample,
two runs record half each, and the merged file must equal the one run exactly. The last runs
the command line with two generator processes against an HttpServer served from a thread here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flowno_io import HttpServer
from flowno_io.testing import ServerThread
from loadtest.cli import main
from loadtest.report import write_json
from loadtest.result import PhaseResult, ResultMergeError, RunResult, merge_results
from loadtest.scenario import Mode, RequestSpec, Scenario
from loadtest.stats import RequestStats, StreamStats

ROOT = Path(__file__).resolve().parents[1]
SPECS = (RequestSpec("GET /a", path="/a"), RequestSpec("GET /b", path="/b"))


def sample(i: int) -> tuple[str, float, float, bool]:
    """Request ``i``: name, offset (s), latency (s), ok; heavy-tailed and deterministic."""
    latency = (1 + (i * 7919) % 997) / 1000 * (50 if i % 97 == 0 else 1)
    return SPECS[i % 2].name, (i % 300) / 100, latency, i % 50 != 0


def run_of(samples: range | list[int], users: int, mode: Mode = "closed") -> RunResult:
    stats = RequestStats()
    for i in samples:
        name, offset, latency, ok = sample(i)
        if ok:
            stats.record_response(name, offset, latency, status=200, ok=True, size=10, service=latency / 2)
        else:
            stats.record_error(name, offset, latency, "ReadTimeout", f"timed out #{i}")
    scenario = Scenario("merge", "http://127.0.0.1:1", mode, SPECS, (users,), duration=3.0)
    phase = PhaseResult(0, mode, users, None, 3.0, None, "2026-01-01T00:00:00+00:00", stats)
    phase.elapsed, phase.users_started, phase.finished = 3.0, users, True
    return RunResult(scenario, [phase], "2026-01-01T00:00:00+00:00", "2026-01-01T00:00:03+00:00")


def comparable(phase: dict[str, Any]) -> dict[str, Any]:
    """What must be equal between the merged and the single run: everything measured."""
    state = phase["state"]["stats"]
    return {
        "histograms": state["histograms"],
        "counters": state["counters"],
        "statuses": state["statuses"],
        "errors": state["errors"],
        "endpoints": state["endpoints"],
        "timeline": phase["timeline"],
        "latency_ms": phase["latency_ms"],
        "corrected_latency_ms": phase["corrected_latency_ms"],
        "summary": {k: v for k, v in phase["summary"].items() if not k.startswith("gen_")},
    }


def test_the_merge_of_two_result_files_equals_one_run(tmp_path: Path) -> None:
    whole = run_of(range(6000), users=10)
    write_json(run_of(range(0, 6000, 2), users=6), tmp_path / "a.json")
    write_json(run_of(range(1, 6000, 2), users=4), tmp_path / "b.json")
    status = main(
        ["merge", str(tmp_path / "a.json"), str(tmp_path / "b.json"), "-o", str(tmp_path / "m"), "-q"]
    )
    assert status == 0
    merged = json.loads((tmp_path / "m" / "loadtest.json").read_text())
    (phase,) = merged["phases"]
    (expected,) = whole.to_dict()["phases"]
    assert comparable(phase) == comparable(expected)
    assert phase["concurrency"] == 10 and merged["processes"] == 2
    assert phase["summary"]["requests"] == 6000


def test_merging_in_memory_matches_the_files_and_keeps_exact_extremes() -> None:
    halves = [run_of(range(0, 1000, 2), 1), run_of(range(1, 1000, 2), 1)]
    merged = merge_results(halves)
    whole = run_of(range(1000), 2)
    stats, expected = merged.phases[0].stats, whole.phases[0].stats
    assert isinstance(stats, RequestStats) and isinstance(expected, RequestStats)
    assert list(stats.latency.buckets()) == list(expected.latency.buckets())
    assert (stats.latency.min, stats.latency.max, stats.latency.total) == (
        expected.latency.min,
        expected.latency.max,
        expected.latency.total,
    )
    assert merged.phases[0].summary()["co_p99_ms"] == whole.phases[0].summary()["co_p99_ms"]


def test_stream_results_merge_too() -> None:
    def streams(lost: int) -> RunResult:
        stats = StreamStats()
        stats.started = stats.opened = stats.completed = 2
        stats.lost, stats.reconnects = lost, 1
        stats.record_first_event(0.1, 0.003)
        stats.record_event(0.2, 0.02)
        scenario = Scenario("s", "http://127.0.0.1:1", "sse", SPECS[:1], (2,), duration=1.0)
        phase = PhaseResult(0, "sse", 2, None, 1.0, None, "2026-01-01T00:00:00+00:00", stats)
        phase.elapsed = 1.0
        return RunResult(scenario, [phase])

    merged = merge_results([RunResult.from_dict(streams(1).to_dict()), streams(2)])
    summary = merged.phases[0].summary()
    assert (summary["streams"], summary["events"], summary["lost"], summary["reconnects"]) == (4, 4, 3, 2)


def test_results_of_different_modes_do_not_merge(tmp_path: Path) -> None:
    streams = RunResult(Scenario("s", "http://127.0.0.1:1", "sse", SPECS[:1], (1,), duration=1.0))
    with pytest.raises(ResultMergeError, match="cannot merge a sse run of 0 phases"):
        merge_results([run_of(range(10), 1), streams])
    (tmp_path / "bad.json").write_text('{"phases": []}')
    with pytest.raises(SystemExit) as exit_info:
        main(["merge", str(tmp_path / "bad.json"), "--no-files"])
    assert exit_info.value.code == 2


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    server = HttpServer("127.0.0.1", 0, routes={"/": lambda request: "ok"})
    with ServerThread(server) as url:
        yield url


def test_two_generator_processes_share_the_load_and_report_once(server_url: str, tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "loadtest",
            "closed",
            server_url + "/",
            "-c",
            "5",
            "-n",
            "301",
            "--processes",
            "2",
            "--threshold",
            "requests==301",
            "--no-progress",
            "-o",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=90,  # bounds a hang only
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    data = json.loads((tmp_path / "loadtest.json").read_text())
    (phase,) = data["phases"]
    assert data["processes"] == 2 and phase["generator"]["processes"] == 2
    assert phase["concurrency"] == 5 and phase["summary"]["users_started"] == 5
    assert phase["summary"]["requests"] == 301 and phase["summary"]["failed"] == 0
    assert phase["state"]["stats"]["histograms"]["latency"]["count"] == 301
    assert "(2 generator processes, merged)" in done.stdout
