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

import flowno_io
from flowno_io import HttpServer, WorkerSlot, run, worker_slot

# A server answering each worker's slot, as the app factory saw it and as a handler sees it.
SLOT_SCRIPT = """
import os, sys
from flowno_io import HttpServer, run, worker_slot

def make():
    made_in = worker_slot()
    def slot(request):
        return {"pid": os.getpid(), "factory": list(made_in), "handler": list(worker_slot())}
    return HttpServer(routes={"/slot": slot})

sys.exit(run(make, workers=int(sys.argv[1]), port=0, on_ready=lambda port: print(port, flush=True)))
"""


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[Any]:
    processes: list[ServerProcess] = []

    def _start(workers: int, script: str = SERVER_SCRIPT) -> ServerProcess:
        process = ServerProcess(script, tmp_path, str(workers))
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


def _slots_until(port: int, done: Any) -> dict[int, int]:
    """Worker pid by slot index, from new connections asked until ``done(slots)`` (bounded by time)."""
    slots: dict[int, int] = {}
    deadline = time.monotonic() + HANG_TIMEOUT
    while time.monotonic() < deadline:
        answer = httpx.get(f"http://127.0.0.1:{port}/slot", headers={"Connection": "close"}, timeout=5).json()
        assert answer["factory"] == answer["handler"], answer
        index, count = answer["handler"]
        assert count == 2, answer
        slots[index] = answer["pid"]
        if done(slots):
            return slots
    raise AssertionError(f"only saw slots {slots}")


def test_each_worker_has_its_own_slot_and_a_replacement_takes_the_dead_ones(server_process: Any) -> None:
    server = server_process(2, SLOT_SCRIPT)
    parent = server.process.pid
    wait_for(lambda: len(_children(parent)) == 2, message="two workers never ran")
    slots = _slots_until(server.port, lambda slots: len(slots) == 2)
    assert sorted(slots) == [0, 1] and set(slots.values()) == set(_children(parent))

    for victim_slot in (1, 0):  # each slot in turn: the replacement is told the dead one's index
        before = slots
        os.kill(before[victim_slot], signal.SIGKILL)
        # (the dead worker answers nothing more: every answer is from a live one)
        slots = _slots_until(server.port, lambda seen: len(seen) == 2)
        assert slots[1 - victim_slot] == before[1 - victim_slot]  # the survivor kept its slot
        assert slots[victim_slot] not in before.values()  # a new process, in the dead one's slot
    server.signal(signal.SIGTERM)
    assert server.wait(HANG_TIMEOUT) == 0


def test_a_process_outside_workers_is_slot_zero_of_one() -> None:
    assert worker_slot() == WorkerSlot(number=0, workers=1) == (0, 1)
    assert {"worker_slot", "WorkerSlot"} <= set(flowno_io.__all__)
