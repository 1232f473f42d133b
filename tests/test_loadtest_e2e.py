"""End to end: the orchestrator and a headless Locust run against the services, started here.

The echo and stream services run as subprocesses on free ports (``--port 0``; each prints
``listening on URL``) and are always stopped. Every run is a few seconds long and must finish
with zero unexpected failures, read back from the JSON/CSV files the tools write.
"""

from __future__ import annotations

import csv
import json
import os
import select
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loadtest.cli import main

ROOT = Path(__file__).resolve().parents[1]
SCENARIOS = ROOT / "loadtest" / "scenarios"
LOCUSTFILES = ROOT / "loadtest" / "locustfiles"
LOCUST = Path(sys.executable).with_name("locust")
START_TIMEOUT = 20.0


def start_service(module: str, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Start ``python -m module --port 0`` and return the process and its URL."""
    process = subprocess.Popen(
        [sys.executable, "-m", module, "--port", "0", "--log-level", "warning"],
        stdout=subprocess.PIPE,
        stderr=log.open("wb"),
        cwd=ROOT,
    )
    assert process.stdout is not None
    # The service prints one line once it listens; wait for it, but not forever.
    ready, _, _ = select.select([process.stdout], [], [], START_TIMEOUT)
    line = process.stdout.readline().decode().strip() if ready else ""
    if not line.startswith("listening on "):
        stop(process)
        raise RuntimeError(f"{module} did not start: {line!r}; log: {log.read_text()[-2000:]}")
    return process, line.removeprefix("listening on ")


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 10 s; always reaped."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Base URLs of the echo and stream services, running for this module's tests."""
    logs = tmp_path_factory.mktemp("service-logs")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        echo, echo_url = start_service("echo_service", logs / "echo.log")
        processes.append(echo)
        stream, stream_url = start_service("stream_service", logs / "stream.log")
        processes.append(stream)
        yield {"echo": echo_url, "stream": stream_url}
    finally:
        for process in processes:
            stop(process)


def run_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "loadtest", *args, "--no-progress"],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        check=False,
    )


def read_results(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / "loadtest.json").read_text())
    html = (directory / "loadtest.html").read_text()
    assert "<svg" in html and "<script" not in html
    with (directory / "loadtest.csv").open() as stream:
        for row in csv.DictReader(stream):
            assert row["errors"] == "0", row
    return data


def test_closed_loop_sweep_against_echo(services: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "closed"
    scenario = str(SCENARIOS / "echo-mix.toml")
    done = run_cli(
        "run",
        scenario,
        "--target",
        services["echo"],
        "-c",
        "2,8",
        "-d",
        "1",
        "-o",
        str(out),
        "--fail-on-error",
    )
    assert done.returncode == 0, done.stderr + done.stdout
    assert "req/s" in done.stdout
    data = read_results(out)
    phases = data["phases"]
    assert [p["concurrency"] for p in phases] == [2, 8]
    for phase in phases:
        summary = phase["summary"]
        assert summary["failed"] == 0 and summary["requests"] > 20
        assert set(phase["endpoints"]) == {
            "POST /echo (json)",
            "POST /echo/raw (512 B)",
            "GET /bytes/1024",
            "GET /bytes/65536",
        }


def test_open_loop_against_echo(services: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "open"
    url = services["echo"] + "/echo"
    done = run_cli(
        "open",
        url,
        "--json",
        '{"a": 1}',
        "-r",
        "200",
        "-c",
        "16",
        "-d",
        "1",
        "-o",
        str(out),
        "--no-schedule-check",  # a busy machine may fall behind; counted below either way
    )
    assert done.returncode == 0, done.stderr + done.stdout
    (phase,) = read_results(out)["phases"]
    assert phase["schedule"]["planned"] == 200
    assert phase["summary"]["requests"] + phase["schedule"]["unsent"] == 200
    assert phase["summary"]["failed"] == 0


@pytest.mark.parametrize(
    ("scenario", "concurrency"),
    [("sse-events.toml", "4"), ("llm-stream.toml", "3")],
)
def test_event_streams_against_stream_service(
    services: dict[str, str], tmp_path: Path, scenario: str, concurrency: str
) -> None:
    out = tmp_path / "sse"
    done = run_cli(
        "run",
        str(SCENARIOS / scenario),
        "--target",
        services["stream"],
        "-c",
        concurrency,
        "-d",
        "1.5",
        "-o",
        str(out),
    )
    assert done.returncode == 0, done.stderr + done.stdout
    (phase,) = read_results(out)["phases"]
    summary = phase["summary"]
    assert summary["failed"] == 0
    assert summary["events"] > 10 and summary["events_per_s"] > 0
    assert phase["time_to_first_event_ms"]["p50"] > 0
    assert phase["event_gap_ms"]["max"] > 0


def test_remote_targets_are_refused_before_any_traffic(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["closed", "http://192.0.2.10:8080/", "-d", "1", "--no-files"])
    assert exit_info.value.code == 2
    assert "--allow-remote" in capsys.readouterr().err


def test_locust_headless_run_has_no_failures(services: dict[str, str], tmp_path: Path) -> None:
    prefix = tmp_path / "locust"
    env = {**os.environ, "ECHO_URL": services["echo"], "STREAM_URL": services["stream"]}
    done = subprocess.run(
        [
            str(LOCUST),
            "--config",
            str(ROOT / "loadtest" / "locust.conf"),
            "--users",
            "6",
            "--spawn-rate",
            "6",
            "--run-time",
            "8s",  # long enough for every user kind to run on a busy machine (asserted below)
            "--csv",
            str(prefix),
            "--html",
            str(tmp_path / "locust.html"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with Path(f"{prefix}_stats.csv").open() as stream:
        rows = {row["Name"]: row for row in csv.DictReader(stream)}
    aggregated = rows["Aggregated"]
    # No throughput floor: a full `make test` once left Locust with 0 requests in a 4 s window on
    # a busy machine. What is asserted is that every user kind ran without a failure.
    assert int(aggregated["Request Count"]) > 0
    assert int(aggregated["Failure Count"]) == 0, Path(f"{prefix}_failures.csv").read_text()
    # Every user kind (echo, SSE, chat) ran; which of a kind's weighted tasks ran in a short window
    # on a loaded machine is chance, so each kind needs one of its request names.
    for kind in (
        ("/echo", "/echo/raw", "/bytes/[n]"),
        ("/events ttfe", "/events stream"),
        ("chat ttft", "chat stream"),
    ):
        assert any(int(rows[name]["Request Count"]) > 0 for name in kind if name in rows), kind
    with Path(f"{prefix}_exceptions.csv").open() as stream:
        assert len(list(csv.DictReader(stream))) == 0
    assert (tmp_path / "locust.html").stat().st_size > 1000


def test_locustfiles_refuse_a_remote_host_before_any_traffic(tmp_path: Path) -> None:
    env = {**os.environ, "ECHO_URL": "http://192.0.2.10:80"}
    env.pop("LOADTEST_ALLOW_REMOTE", None)
    done = subprocess.run(
        [str(LOCUST), "--config", str(ROOT / "loadtest" / "locust.conf"), "-f", str(LOCUSTFILES / "echo.py")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
        env=env,
        check=False,
    )
    assert done.returncode != 0
    assert "refusing to load-test http://192.0.2.10:80" in done.stderr
