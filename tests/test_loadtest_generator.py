"""The generator self-check: a phase where the load generator itself was saturated is flagged.

The server is a scripted one (standard-library threads) that answers every stream with a burst
of 20,000 small events in one write and closes: sending costs it one ``sendall``, while the
generator parses and counts every event in Python, and 40 users keep it busy back to back. The
check is on the flag, not on timings: whatever the machine's load, the generator is the
bottleneck here.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from loadtest.runner import GENERATOR_CPU_LIMIT, GENERATOR_LAG_LIMIT_MS, GeneratorLoad
from loadtest.testing import ScriptedServer, sse_events, sse_response
from loadtest.thresholds import THRESHOLD_EXIT_STATUS

ROOT = Path(__file__).resolve().parents[1]
BURST = sse_response(body=sse_events([(n, "x") for n in range(1, 20_001)]))


def test_a_saturated_generator_is_flagged_and_strict_fails_the_run(tmp_path: Path) -> None:
    with ScriptedServer(lambda number, head: BURST) as url:
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "loadtest",
                "sse",
                url + "/events",
                "-c",
                "40",
                "-d",
                "1.5",
                "--strict",
                "--no-progress",
                "-o",
                str(tmp_path),
            ],
            capture_output=True,
            text=True,
            timeout=60,  # bounds a hang only
            cwd=ROOT,
            check=False,
        )
    assert done.returncode == THRESHOLD_EXIT_STATUS, done.stdout + done.stderr
    assert "generator-bound: results understate the server" in done.stdout
    assert "generator_bound==0 failed in phase 0" in done.stderr
    (phase,) = json.loads((tmp_path / "loadtest.json").read_text())["phases"]
    generator = phase["generator"]
    assert generator["bound"] is True and phase["summary"]["generator_bound"] == 1
    assert generator["reason"].startswith("generator-bound")
    # The streams ran (how many events a loaded machine got through is not the point: the flag is).
    assert phase["summary"]["failed"] == 0 and phase["summary"]["events"] > 1_000
    assert "generator-bound" in (tmp_path / "loadtest.html").read_text()


def test_the_verdict_follows_cpu_and_loop_lag() -> None:
    idle = GeneratorLoad(cpu=0.2)
    idle.lag.record(1_000, 100)  # timers fire 1 ms late
    assert not idle.bound and idle.reason() == ""
    busy_cpu = GeneratorLoad(cpu=GENERATOR_CPU_LIMIT)
    busy_cpu.lag.record(1_000, 100)
    assert busy_cpu.bound and "loop thread at 90% of a core" in busy_cpu.reason()
    late_timers = GeneratorLoad(cpu=0.5)  # e.g. starved of CPU by other processes
    late_timers.lag.record(round(GENERATOR_LAG_LIMIT_MS * 2000), 100)
    assert late_timers.bound
    merged = GeneratorLoad(cpu=0.3, processes=4, bound_processes=1)
    assert merged.bound and "1 of 4 processes saturated" in merged.reason()
