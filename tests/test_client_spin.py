"""A lone client wait spins briefly before it sleeps, only after short waits, never over other work.

``Reactor`` (client/reactor.py): when one task waits and its last wait was short (an answer from
this host), it first polls without waiting (``Poller.spin``) for up to ``SPIN_SECONDS``, while the
loop has nothing else to run. The tests stretch the two constants so that what they check does not
depend on this machine's speed: a slow server must turn spinning off, a spinning wait must give way
to the loop's other tasks, and responses read by a spin must be the right ones.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import pytest
from client_servers import RawServer, read_request, response_bytes, wait_for_close

from flowno_io import EventLoop, sleep
from flowno_io.client import reactor
from flowno_io.client.client import HttpClient, Timeout
from flowno_io.io.poller import READABLE, Poller
from flowno_io.testing import run

StartRaw = Callable[..., RawServer]
HANG_TIMEOUT = 10.0


def answering(count: int, delay: Callable[[int], float]) -> Callable[[socket.socket, int], None]:
    """Answer ``count`` requests on the first connection, request ``i`` after ``delay(i)`` s,
    with the body ``answer <i>``."""

    def script(conn: socket.socket, index: int) -> None:
        if index == 0:
            for i in range(count):
                if not read_request(conn):
                    return
                if delay(i):
                    time.sleep(delay(i))
                conn.sendall(response_bytes(f"answer {i}".encode()))
        wait_for_close(conn)

    return script


def test_a_client_waiting_on_a_slow_server_does_not_spin(
    raw_server: StartRaw, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every spin is recorded. (The client thread's CPU time would say the same on a quiet loop,
    # but a loop whose selector holds a ready descriptor of another, dead loop - flowno leaves
    # its wake-up socket there, flowno-upstream §14 - polls without sleeping whatever we do.)
    spins: list[float] = []
    spin = Poller.spin

    def recorded(self: Poller, seconds: float, max_events: int = 1024) -> list[tuple[int, int]]:
        began = time.monotonic()
        try:
            return spin(self, seconds, max_events)
        finally:
            spins.append(time.monotonic() - began)

    monkeypatch.setattr(Poller, "spin", recorded)
    raw = raw_server(answering(6, lambda i: 0.04))

    async def main() -> list[str]:
        async with HttpClient(timeout=Timeout(HANG_TIMEOUT)) as client:
            return [(await client.get(raw.url + "/")).text for _ in range(6)]

    assert run(main()) == [f"answer {i}" for i in range(6)]
    # Every wait took >= 40 ms, far above SHORT_WAIT: none may follow a spin.
    assert spins == []


def test_a_short_wait_makes_the_next_one_spin(raw_server: StartRaw, monkeypatch: pytest.MonkeyPatch) -> None:
    spins: list[list[tuple[int, int]]] = []
    spin = Poller.spin

    def recorded(self: Poller, seconds: float, max_events: int = 1024) -> list[tuple[int, int]]:
        found = spin(self, seconds, max_events)
        spins.append(found)
        return found

    monkeypatch.setattr(Poller, "spin", recorded)
    monkeypatch.setattr(reactor, "SHORT_WAIT", 10.0)  # (every wait counts as short)
    monkeypatch.setattr(reactor, "SPIN_SECONDS", 1.0)
    raw = raw_server(answering(4, lambda i: 0.02))

    async def main() -> list[str]:
        async with HttpClient(timeout=Timeout(HANG_TIMEOUT)) as client:
            return [(await client.get(raw.url + "/")).text for _ in range(4)]

    assert run(main()) == [f"answer {i}" for i in range(4)]
    # The first wait parks; later ones spin (a spin ends early, empty, while another task of the
    # loop is ready, such as the client's clock) and answers are found by spinning.
    assert any(spins), spins


def test_a_spinning_wait_gives_way_to_the_loops_other_tasks(
    raw_server: StartRaw, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every wait counts as short and a spin may last 10 s: only the loop's other work stops it.
    monkeypatch.setattr(reactor, "SHORT_WAIT", 10.0)
    monkeypatch.setattr(reactor, "SPIN_SECONDS", 10.0)
    raw = raw_server(answering(5, lambda i: 0.1 if i else 0.0))
    ticks = 0

    async def ticker(done: list[bool]) -> None:
        nonlocal ticks
        while not done:
            await sleep(0.01)
            ticks += 1

    async def main() -> list[str]:
        from flowno import spawn

        done: list[bool] = []
        async with HttpClient(timeout=Timeout(HANG_TIMEOUT)) as client:
            await client.get(raw.url + "/")  # (the first wait: spinning starts after it)
            task = await spawn(ticker(done))
            try:
                return [(await client.get(raw.url + "/")).text for _ in range(4)]
            finally:
                done.append(True)
                await task.join()

    assert run(main()) == [f"answer {i}" for i in range(1, 5)]
    # Four waits of >= 100 ms: ~40 ticks of 10 ms when the spins give way to the ticker; a spin
    # that held the loop would let it tick about once per request.
    assert ticks >= 12, ticks


def test_responses_read_by_a_spin_are_each_their_requests(
    raw_server: StartRaw, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(reactor, "SHORT_WAIT", 10.0)
    monkeypatch.setattr(reactor, "SPIN_SECONDS", 1.0)
    count = 60
    raw = raw_server(answering(count, lambda i: 0.005 if i % 3 == 0 else 0.0))

    async def main() -> list[str]:
        async with HttpClient(timeout=Timeout(HANG_TIMEOUT)) as client:
            return [(await client.get(raw.url + "/")).text for _ in range(count)]

    assert run(main()) == [f"answer {i}" for i in range(count)]


def test_poller_spin_returns_the_first_events_or_nothing_when_the_window_ends() -> None:
    left, right = socket.socketpair()
    poller = Poller()
    try:
        poller.register(right.fileno(), READABLE)

        async def main() -> tuple[list[tuple[int, int]], float, list[tuple[int, int]]]:
            began = time.monotonic()
            nothing = poller.spin(0.02)
            waited = time.monotonic() - began
            threading.Timer(0.02, left.send, (b"x",)).start()
            return nothing, waited, poller.spin(HANG_TIMEOUT)

        nothing, waited, events = EventLoop().run_until_complete(main(), join=True)
        assert nothing == [] and waited >= 0.02
        assert [fd for fd, _ in events] == [right.fileno()]
    finally:
        poller.close()
        left.close()
        right.close()


def test_poller_spin_returns_at_once_while_another_task_is_ready() -> None:
    poller = Poller()
    stop: list[bool] = []

    async def busy() -> None:
        while not stop:
            await sleep(0)  # (always ready again: the loop is never idle while it runs)

    async def main() -> float:
        from flowno import spawn

        task = await spawn(busy())
        await sleep(0)
        began = time.monotonic()
        try:
            assert poller.spin(HANG_TIMEOUT) == []
            return time.monotonic() - began
        finally:
            stop.append(True)
            await task.join()

    try:
        assert EventLoop().run_until_complete(main(), join=True) < HANG_TIMEOUT / 2
    finally:
        poller.close()
