"""``scripts/loadtest.sh`` (the ``make loadtest`` target), shrunk to a few seconds.

It must start the services, write every report under ``REPORTS/<timestamp>/``, print the summary
and the report paths, and leave no service running.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A port nobody listens on right now (the service binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def run_script(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "loadtest.sh"), *args],
        capture_output=True,
        text=True,
        timeout=120,  # bounds a hang only
        cwd=tmp_path,  # the script finds the repository by itself
        env={**os.environ, "REPORTS": str(tmp_path), **settings},
        check=False,
    )


def assert_services_stopped(out: Path, *names: str) -> None:
    pid_files = sorted((out / "logs").glob("*.pid"))
    assert [p.name for p in pid_files] == sorted(f"{name}.pid" for name in names)
    for pid_file in pid_files:  # the services (and workers) were stopped and reaped
        assert not Path(f"/proc/{int(pid_file.read_text())}").exists()


def test_make_loadtest_script_runs_end_to_end_and_cleans_up(tmp_path: Path) -> None:
    echo_port = free_port()
    done = run_script(
        tmp_path,
        DURATION="0.5",
        CONCURRENCY="1,4",
        RATES="100",
        OPEN_CONCURRENCY="8",
        SSE_CONCURRENCY="4",
        LLM_CONCURRENCY="2",
        LOCUST_USERS="4",
        ECHO_PORT=str(echo_port),
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (out,) = tmp_path.iterdir()
    files = ("loadtest.json", "loadtest.csv", "loadtest_timeline.csv", "loadtest.html", "summary.txt")
    for name in ("closed", "open", "sse", "llm"):
        for file in files:
            assert (out / name / file).is_file(), (name, file)
    assert (out / "locust" / "locust_stats.csv").is_file()
    assert (out / "locust" / "locust.html").is_file()
    summary = (out / "summary.txt").read_text()
    assert "echo mix: closed loop on" in summary and "Aggregated" in summary
    assert "summary" in done.stdout and str(out / "closed" / "loadtest.html") in done.stdout
    # ECHO_PORT is honoured (STREAM_PORT stays 0: a free port)
    assert f"services: echo http://127.0.0.1:{echo_port}, stream http://127.0.0.1:" in done.stdout
    # the index page ties the reports together, and its path is the last line printed
    index = out / "index.html"
    assert done.stdout.strip().splitlines()[-1] == f"index: {index.resolve()}"
    page = index.read_text()
    for link in ("closed/loadtest.html", "open/loadtest.html", "sse/loadtest.html", "llm/loadtest.html"):
        assert f"href='{link}'" in page, link
    assert "href='locust/locust.html'" in page and "echo mix" in page and "Aggregated" in page
    assert_services_stopped(out, "echo", "stream")


def test_make_loadtest_distributed_runs_a_master_and_workers(tmp_path: Path) -> None:
    done = run_script(tmp_path, "distributed", DURATION="0.5", LOCUST_USERS="4", WORKERS="2")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (out,) = tmp_path.iterdir()
    report = out / "locust-distributed"
    with (report / "locust_stats.csv").open() as stream:
        assert "Aggregated" in stream.read()
    assert (report / "locust.html").is_file()
    assert sorted(p.name for p in report.glob("worker-*.log")) == ["worker-1.log", "worker-2.log"]
    assert "2 workers" in done.stdout and "127.0.0.1:" in done.stdout
    assert "href='locust-distributed/locust.html'" in (out / "index.html").read_text()
    assert_services_stopped(out, "echo", "stream", "locust-worker-1", "locust-worker-2")
