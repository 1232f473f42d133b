"""The pool's reactor: many connections waiting on one private epoll, one leader task parked on it.

What must hold: every waiter is woken when its socket is ready, whoever leads; the lead passes on
when the leader's own response arrives or the leader is interrupted; nothing stays parked after
the last request (the loop finishes)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from client_servers import RawServer, read_request, response_bytes
from flowno import spawn
from flowno.core.event_loop.tasks import TaskCancelled
from helpers import HANG_TIMEOUT, until

from flowno_io import ClosedResourceError, HttpClient
from flowno_io.client.pool import DEFAULT_KEEPALIVE_EXPIRY
from flowno_io.client.reactor import Reactor
from flowno_io.io.wakeup import interrupt
from flowno_io.testing import run


@pytest.fixture
def staggered() -> Iterator[RawServer]:
    """Answers ``/<delay>`` after ``delay`` seconds, on every connection."""

    def script(conn: socket.socket, index: int) -> None:
        while request := read_request(conn):
            delay = float(request.split(b" ", 2)[1].lstrip(b"/") or 0)
            if server.stopping.wait(delay):
                return
            conn.sendall(response_bytes(b"after %.2f" % delay))

    server = RawServer(script).start()
    yield server
    server.stop()


def test_leader_answered_first_hands_over() -> None:
    # The first task to wait leads; its answer comes first, the others must still be woken. The
    # server holds every answer until all four requests are in (a barrier, not a race against
    # the time it takes a loaded machine to start four tasks), then staggers them.
    arrived = threading.Barrier(4)

    def script(conn: socket.socket, index: int) -> None:
        request = read_request(conn)
        if not request:
            return
        delay = float(request.split(b" ", 2)[1].lstrip(b"/") or 0)
        try:
            arrived.wait(timeout=HANG_TIMEOUT)
        except threading.BrokenBarrierError:
            return
        if not server.stopping.wait(delay):
            conn.sendall(response_bytes(b"after %.2f" % delay))

    server = RawServer(script).start()

    async def fetch(client: HttpClient, delay: float) -> bytes:
        return (await client.get(f"{server.url}/{delay}")).body

    async def main() -> list[bytes]:
        async with HttpClient() as client:
            tasks = [await spawn(fetch(client, delay)) for delay in (0.05, 0.2, 0.1, 0.3)]
            return [await task.join() for task in tasks]

    # (a follower nobody woke would wait for its read timeout: 60 s, past the hang bound)
    try:
        started = time.monotonic()
        assert run(main()) == [b"after 0.05", b"after 0.20", b"after 0.10", b"after 0.30"]
        assert time.monotonic() - started < HANG_TIMEOUT
        assert server.connections == 4
    finally:
        arrived.abort()
        server.stop()


def test_interrupted_leader_hands_over(staggered: RawServer) -> None:
    async def fetch(client: HttpClient, delay: float) -> Any:
        try:
            return (await client.get(f"{staggered.url}/{delay}")).body
        except TaskCancelled:
            return "interrupted"

    async def main() -> list[Any]:
        async with HttpClient() as client:
            reactor = client.pool._reactor
            leader = await spawn(fetch(client, 1.0))
            await until(lambda: reactor._leader is not None, message="the leader never waited on the epoll")
            follower = await spawn(fetch(client, 0.1))
            await until(lambda: len(reactor._waiting) == 2, message="the follower never waited")
            assert interrupt(leader.raw_task, TaskCancelled(leader))
            return [await leader.join(), await follower.join()]

    assert run(main()) == ["interrupted", b"after 0.10"]


def test_many_waiters_and_timeouts_mixed(staggered: RawServer) -> None:
    # Slow answers never come in time (the server waits until the test ends); fast ones have the
    # whole timeout to arrive, however loaded the machine.
    delays = [0.0, 60.0, 0.01, 60.0, 0.02, 0.0] * 3

    async def fetch(client: HttpClient, delay: float) -> str:
        try:
            return (await client.get(f"{staggered.url}/{delay}", timeout=2.0)).text
        except TimeoutError:
            return "timeout"

    async def main() -> list[str]:
        async with HttpClient() as client:
            tasks = [await spawn(fetch(client, delay)) for delay in delays]
            return [await task.join() for task in tasks]

    assert run(main()) == ["timeout" if delay > 1 else f"after {delay:.2f}" for delay in delays]


def test_wait_after_close_is_refused() -> None:
    reactor = Reactor()
    left, right = socket.socketpair()
    try:
        waiter = reactor.register(left.fileno())
        reactor.close()

        async def main() -> None:
            await reactor.wait_readable(waiter)

        with pytest.raises(ClosedResourceError):
            run(main())
    finally:
        left.close()
        right.close()


def test_loop_finishes_when_nothing_waits(staggered: RawServer) -> None:
    async def main() -> None:
        client = HttpClient(timeout=None)  # no timers: only the reactor could keep the loop alive
        for delay in (0.0, 0.01):
            await client.get(f"{staggered.url}/{delay}")
        # not closed on purpose: an idle pool must not keep run_until_complete waiting

    started = time.monotonic()
    run(main())
    # Not held until the idle connections expire (5 s), nor forever.
    assert time.monotonic() - started < DEFAULT_KEEPALIVE_EXPIRY
