"""The soak in short form (``soak/soak.py --duration 5``), and one leak it guards against, in process.

``make soak`` runs the same script for 60 s at 10,000 requests/s with 1,000 event streams.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from flowno import sleep
from helpers import read_responses, wait_for

from flowno_io import HttpServer, Request
from flowno_io.testing import ServerThread

SOAK = Path(__file__).resolve().parent.parent / "soak" / "soak.py"


def run_soak(*options: str, timeout: float = 60.0) -> dict[str, Any]:
    """Run ``soak.py --json`` with ``options``; its report."""
    result = subprocess.run(
        [sys.executable, str(SOAK), "--json", *options], capture_output=True, timeout=timeout, check=False
    )
    lines = result.stdout.decode().strip().splitlines()
    assert lines, f"no report (exit {result.returncode}): {result.stderr.decode()[-3000:]}"
    report: dict[str, Any] = json.loads(lines[-1])
    return report


def test_short_soak_mixed_traffic_leaves_nothing_behind() -> None:
    report = run_soak("--duration", "5", "--rate", "2000", "--connections", "20", "--sse", "100")
    print(json.dumps({key: value for key, value in report.items() if key != "rss_samples_kb"}, indent=1))
    assert report["errors"] == 0, report["error_samples"]
    assert report["requests"] > 2000 and report["sse_streams_completed"] > 100
    assert report["rss_growth_after_warmup_pct"] < 10
    assert report["fds_end"] <= report["fds_start"]
    assert report["workers_end"] <= report["workers_warm"]
    assert report["tasks_finished_end"] <= report["tasks_finished_warm"] + 2
    assert report["loop_exceptions"] == 0
    assert report["server_exit_status"] == 0
    assert report["event_records_end"] <= report["event_records_warm"] + 2
    assert report["failures"] == []


def test_soak_reports_a_failed_check() -> None:
    """The soak can fail: a rate it cannot reach makes it exit 1 with that failure named."""
    result = subprocess.run(
        [sys.executable, str(SOAK), "--duration", "1", "--rate", "100", "--sse", "2", "--min-rate", "1e9"],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1
    assert b"under --min-rate" in result.stdout


def test_exchanges_handed_to_workers_leave_no_loop_records() -> None:
    """Found by the soak (fixed): each exchange handed to a worker left a flowno Event behind."""
    server = HttpServer("127.0.0.1", 0)

    async def slow(request: Request) -> str:
        await sleep(0)  # waits: the exchange moves to a worker task
        return "done"

    server.add_route("/slow", slow, methods=["GET"])
    request = b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n"
    thread = ServerThread(server)
    host, port = thread.start().removeprefix("http://").split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            for _ in range(20):  # warm-up: the worker pool and the clock exist
                sock.sendall(request)
                read_responses(sock, 1)
            before = len(thread.loop.event_waiters)
            for _ in range(300):
                sock.sendall(request)
                read_responses(sock, 1)
            # The last exchange may still be winding down in the server's loop: wait for the
            # records to settle (a leak leaves about one per exchange, and never settles).
            wait_for(
                lambda: len(thread.loop.event_waiters) - before < 10,
                message=lambda: (
                    f"{len(thread.loop.event_waiters) - before} loop records left by 300 exchanges"
                ),
            )
    finally:
        thread.stop()
    assert server.stats["workers"] <= 2
