"""Thresholds (k6-style pass/fail checks): parsing, checking phases, and the exit status of a run.

The command-line runs go to an HttpServer on 127.0.0.1 served from a thread of this process; the
orchestrator runs as a subprocess (one flowno loop per process), bounded by a request count.
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
from loadtest.thresholds import (
    THRESHOLD_EXIT_STATUS,
    ThresholdError,
    check_thresholds,
    parse_threshold,
    run_checks,
)

ROOT = Path(__file__).resolve().parents[1]


def phase(index: int = 0, **summary: Any) -> dict[str, Any]:
    return {"label": f"c={index + 1}", "summary": {"phase": index, **summary}, "endpoints": {}}


@pytest.mark.parametrize(
    ("text", "key", "operator", "limit"),
    [
        ("p99<50ms", "p99_ms", "<", 50.0),
        ("p99 < 0.05s", "p99_ms", "<", 50.0),
        ("p99.9<=1500us", "p99.9_ms", "<=", 1.5),
        ("max<2", "max_ms", "<", 2.0),
        ("co_p99<100ms", "co_p99_ms", "<", 100.0),
        ("error_rate<0.01", "error_rate", "<", 0.01),
        ("error_rate<1%", "error_rate", "<", 0.01),
        ("rps>1000", "throughput_rps", ">", 1000.0),
        ("unsent==0", "unsent", "==", 0.0),
        ("behind<=1s", "behind_s", "<=", 1.0),
        ("behind<=500ms", "behind_s", "<=", 0.5),
        ("lost==0", "lost", "==", 0.0),
    ],
)
def test_parse(text: str, key: str, operator: str, limit: float) -> None:
    threshold = parse_threshold(text)
    assert (threshold.key, threshold.operator, threshold.endpoint) == (key, operator, None)
    assert threshold.limit == pytest.approx(limit)


def test_parse_endpoint() -> None:
    threshold = parse_threshold("p99{GET /bytes/1024}<20ms")
    assert (threshold.endpoint, threshold.key, threshold.limit) == ("GET /bytes/1024", "p99_ms", 20.0)


@pytest.mark.parametrize(
    "text", ["p99", "p99<", "p99<<5", "p99<5kg", "rps>5ms", "p99<5%", "unsent{GET /}==0", "p99<fast"]
)
def test_invalid_thresholds_are_refused(text: str) -> None:
    with pytest.raises(ThresholdError):
        parse_threshold(text)


def test_a_failed_threshold_says_by_how_much() -> None:
    (outcome,) = check_thresholds([parse_threshold("rps>1000")], [phase(0, throughput_rps=750.0)])
    assert not outcome.passed
    assert outcome.message() == ("rps>1000 failed in phase 0 (c=1): rps = 750, 250 (25%) under the limit")
    (outcome,) = check_thresholds([parse_threshold("p99<50ms")], [phase(0, p99_ms=12.5)])
    assert outcome.passed and outcome.message() == "p99<50ms held in phase 0 (c=1): p99 = 12.5 ms"


def test_every_phase_is_checked_and_a_missing_metric_fails() -> None:
    outcomes = check_thresholds(
        [parse_threshold("p99<50ms")], [phase(0, p99_ms=10.0), phase(1, p99_ms=60.0), phase(2)]
    )
    assert [outcome.passed for outcome in outcomes] == [True, False, False]
    assert "no such metric" in outcomes[2].message()


def test_endpoint_thresholds_read_that_request_only() -> None:
    data = phase(0, p99_ms=100.0)
    data["endpoints"] = {
        "fast": {"completed": 100, "ok": 100, "failed": 0, "throughput": 50.0, "latency_ms": {"p99": 2.0}},
        "slow": {"completed": 10, "ok": 8, "failed": 2, "throughput": 5.0, "latency_ms": {"p99": 90.0}},
    }
    thresholds = [
        parse_threshold("p99{fast}<10ms"),
        parse_threshold("p99{slow}<10ms"),
        parse_threshold("error_rate{slow}<0.1"),
        parse_threshold("rps{fast}>=50"),
        parse_threshold("p99{missing}<10ms"),
    ]
    outcomes = check_thresholds(thresholds, [data])
    assert [outcome.passed for outcome in outcomes] == [True, False, False, True, False]
    assert outcomes[2].actual == pytest.approx(0.2)
    assert "for 'slow'" in outcomes[1].message()


def test_open_loop_runs_fail_when_the_schedule_was_not_kept_unless_told_otherwise() -> None:
    kept = phase(0, unsent=0, behind_s=0.0)
    late = phase(1, unsent=0, behind_s=1.5)
    dropped = phase(2, unsent=3, behind_s=0.2)
    outcomes = run_checks([kept, late, dropped], "open")
    failed = [(o.phase, o.threshold.text) for o in outcomes if not o.passed]
    assert failed == [(1, "behind<=1s"), (2, "unsent==0")]
    assert run_checks([late, dropped], "open", schedule_check=False) == []
    assert run_checks([late], "closed") == []  # the schedule check is for open loops only


def test_strict_fails_a_generator_bound_phase() -> None:
    phases = [phase(0, generator_bound=0), phase(1, generator_bound=1)]
    assert run_checks(phases, "closed") == []
    outcomes = run_checks(phases, "closed", strict=True)
    assert [o.passed for o in outcomes] == [True, False]


# -- the command line -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    server = HttpServer("127.0.0.1", 0, routes={"/": lambda request: "ok"})
    with ServerThread(server) as url:
        yield url


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadtest", *args, "--no-progress"],
        capture_output=True,
        text=True,
        timeout=60,  # bounds a hang only; each run is 40 requests
        cwd=ROOT,
        check=False,
    )


def test_a_failing_threshold_exits_99_with_a_message(server_url: str, tmp_path: Path) -> None:
    done = run_cli(
        "closed",
        server_url + "/",
        "-c",
        "2",
        "-n",
        "40",
        "--threshold",
        "rps>1000000000",  # no generator reaches a billion requests per second
        "--threshold",
        "error_rate<0.01",
        "-o",
        str(tmp_path),
    )
    assert done.returncode == THRESHOLD_EXIT_STATUS, done.stdout + done.stderr
    assert "threshold failed: rps>1000000000 failed in phase 0 (c=2): rps = " in done.stderr
    assert "under the limit" in done.stderr
    assert "error_rate<0.01 failed" not in done.stderr
    assert "checks: 1 of 2 held, FAILED:" in done.stdout
    checks = json.loads((tmp_path / "loadtest.json").read_text())["checks"]
    assert [(c["threshold"], c["passed"]) for c in checks] == [
        ("rps>1000000000", False),
        ("error_rate<0.01", True),
    ]


def test_thresholds_that_hold_exit_0(server_url: str) -> None:
    done = run_cli(
        "closed",
        server_url + "/",
        "-c",
        "2",
        "-n",
        "40",
        "--threshold",
        "p99<60s",
        "--threshold",
        "error_rate==0",
        "--threshold",
        "requests==40",
        "--no-files",
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "checks: 3 of 3 held" in done.stdout
    assert "threshold failed" not in done.stderr


def test_a_bad_threshold_is_refused_before_any_traffic() -> None:
    done = run_cli("closed", "http://127.0.0.1:9/", "-n", "1", "--threshold", "p99<<5", "--no-files")
    assert done.returncode == 2
    assert "invalid threshold" in done.stderr
