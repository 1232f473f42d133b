"""run(app, workers=N): forked SO_REUSEPORT workers, restart of a dead one, signal forwarding."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import HANG_TIMEOUT, wait_for
from streaming_helpers import SERVER_SCRIPT, ServerProcess

from flowno_io import HttpServer, run


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[Any]:
    processes: list[ServerProcess] = []

    def _start(workers: int) -> ServerProcess:
        process = ServerProcess(SERVER_SCRIPT, tmp_path, str(workers))
        processes.append(process)
        return process

    yield _start
    for process in processes:
        pids = _children(process.process.pid)
        process.stop()
        for pid in pids:  # never leave workers behind, even when a test failed
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as file:
            return [int(child) for child in file.read().split()]
    except OSError:
        return []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as file:
            return file.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited
    except OSError:
        return False


def _pid_of_new_connection(port: int) -> int:
    response = httpx.get(f"http://127.0.0.1:{port}/pid", headers={"Connection": "close"}, timeout=5)
    pid: int = response.json()["pid"]
    return pid


def _pids_until(port: int, done: Any) -> set[int]:
    """The pids answering new connections, asked until ``done(pids)``; bounded by time, not by a
    count of tries: on a busy machine a restarted worker may take seconds to listen."""
    pids: set[int] = set()
    deadline = time.monotonic() + HANG_TIMEOUT
    while time.monotonic() < deadline:
        pids.add(_pid_of_new_connection(port))
        if done(pids):
            return pids
    raise AssertionError(f"only saw pids {pids}")


def test_two_workers_serve_restart_and_stop_gracefully(server_process: Any) -> None:
    server = server_process(2)
    parent = server.process.pid
    wait_for(lambda: len(_children(parent)) == 2, message="two workers never ran")
    workers = set(_children(parent))
    # Both worker processes answer (the kernel spreads new connections over their sockets).
    assert _pids_until(server.port, lambda pids: len(pids) == 2) == workers

    victim = min(workers)
    os.kill(victim, signal.SIGKILL)
    began = time.monotonic()
    restarted = _pids_until(server.port, lambda pids: bool(pids - workers))
    # (a young worker's restart waits 0.2 s; the bound only catches a restart that never comes)
    assert victim not in restarted and time.monotonic() - began < HANG_TIMEOUT
    wait_for(lambda: len(_children(parent)) == 2, message="the dead worker was not replaced")
    workers = set(_children(parent))
    assert victim not in workers

    # SIGTERM to the parent is forwarded: an in-flight request still completes.
    results: list[Any] = []
    client = threading.Thread(
        target=lambda: results.append(httpx.get(f"http://127.0.0.1:{server.port}/slow?s=0.6", timeout=10))
    )
    client.start()
    server.wait_for_line("slow started")
    server.signal(signal.SIGTERM)
    client.join(HANG_TIMEOUT)
    assert results[0].json()["done"] is True
    assert server.wait(HANG_TIMEOUT) == 0
    for pid in workers:
        assert not _alive(pid)


def test_workers_stop_when_the_parent_dies(server_process: Any) -> None:
    server = server_process(2)
    wait_for(lambda: len(_children(server.process.pid)) == 2, message="two workers never ran")
    workers = _children(server.process.pid)
    server.process.kill()  # SIGKILL: no chance to forward anything
    wait_for(lambda: not any(_alive(pid) for pid in workers), message="workers outlived their parent")


def test_workers_must_be_positive() -> None:
    with pytest.raises(ValueError, match="workers"):
        run(HttpServer("127.0.0.1", 0), workers=0)
