"""``HttpClient(max_connections=N)`` (issue 16): a limit on connections to all hosts together,
beside the per-host one. Three stdlib servers (three origins) on 127.0.0.1."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from client_servers import Handler, StdlibServer
from flowno import spawn

from flowno_io import HttpClient, Timeout, sleep
from flowno_io._errors import PoolTimeout
from flowno_io.testing import run


class Gate:
    """Handlers block here until released; counts how many are inside at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.inside = 0
        self.most = 0

    def route(self, handler: Handler) -> None:
        with self.lock:
            self.inside += 1
            self.most = max(self.most, self.inside)
        self.release.wait(30)  # bounds a hang only
        with self.lock:
            self.inside -= 1
        handler.send_body(b"ok", content_type="text/plain")


@pytest.fixture
def servers() -> Iterator[list[StdlibServer]]:
    started = [StdlibServer().start() for _ in range(3)]
    yield started
    for server in started:
        server.stop()


async def _until(condition: Any, what: str) -> None:
    for _ in range(3000):  # a generous bound on waiting for the state itself
        if condition():
            return
        await sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def test_connections_in_all_hosts_are_limited(servers: list[StdlibServer]) -> None:
    gate = Gate()
    for server in servers:
        server.route("/gate")(gate.route)

    async def main() -> list[int]:
        async with HttpClient(max_connections=2) as client:

            async def fetch(url: str) -> int:
                return (await client.get(url)).status_code

            tasks = [await spawn(fetch(server.url + "/gate")) for server in servers for _ in range(2)]
            await _until(
                lambda: client.pool.waiting_requests() == 4 and gate.inside == 2, "4 waiting, 2 inside"
            )
            assert client.pool.active_connections() == 2
            gate.release.set()
            statuses = [await task.join() for task in tasks]
            assert client.pool.idle_connections() <= 2
            return statuses

    assert run(main()) == [200] * 6
    assert gate.most == 2


def test_idle_connection_elsewhere_makes_room(servers: list[StdlibServer]) -> None:
    async def main() -> list[int]:
        async with HttpClient(max_connections=1) as client:
            first = (await client.get(servers[0].url + "/echo")).status_code
            second = (await client.get(servers[1].url + "/echo")).status_code  # closes the idle one
            return [first, second, client.pool.connections_opened, client.pool.idle_connections()]

    assert run(main()) == [200, 200, 2, 1]


def test_waiting_for_a_connection_times_out(servers: list[StdlibServer]) -> None:
    gate = Gate()
    servers[0].route("/gate")(gate.route)

    async def main() -> None:
        async with HttpClient(max_connections=1, timeout=Timeout(pool=0.2)) as client:

            async def hold() -> int:
                return (await client.get(servers[0].url + "/gate")).status_code

            holder = await spawn(hold())
            await _until(lambda: gate.inside == 1, "the first request inside")
            try:
                with pytest.raises(PoolTimeout):
                    await client.get(servers[1].url + "/echo")
            finally:
                gate.release.set()
            assert await holder.join() == 200
            assert (await client.get(servers[1].url + "/echo")).status_code == 200  # room again

    run(main())
