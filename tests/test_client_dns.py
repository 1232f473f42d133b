"""Name resolution off the loop (issue 16): a lookup runs on a worker thread, so the loop keeps
serving other tasks while it waits, and it counts toward the connect timeout. A blocking
``getaddrinfo`` stand-in makes the slow resolver deterministic; the servers are real."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from client_servers import StdlibServer
from flowno import spawn

from flowno_io import HttpClient, Timeout
from flowno_io._errors import ConnectError, ConnectTimeout
from flowno_io.io.socket_stream import resolve
from flowno_io.testing import run

_real_getaddrinfo = socket.getaddrinfo


@pytest.fixture
def server() -> Iterator[StdlibServer]:
    stdlib = StdlibServer().start()
    yield stdlib
    stdlib.stop()


@pytest.fixture
def slow_resolver(monkeypatch: pytest.MonkeyPatch) -> Iterator[threading.Event]:
    """Names (not IP literals) resolve only once the returned event is set; then as localhost."""
    release = threading.Event()
    calls: list[str] = []

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("flags", 0) & socket.AI_NUMERICHOST:
            return _real_getaddrinfo(host, port, *args, **kwargs)
        calls.append(host)
        # Not released in time means the loop itself was blocked here (the lookup ran on it).
        if not release.wait(10) or host.endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return _real_getaddrinfo("127.0.0.1", port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    yield release
    release.set()


def test_loop_serves_other_requests_while_a_name_resolves(
    server: StdlibServer, slow_resolver: threading.Event
) -> None:
    port = server.server_address[1]

    async def main() -> tuple[int, int]:
        async with HttpClient() as client:

            async def by_name() -> int:
                return (await client.get(f"http://slow.example:{port}/echo")).status_code

            task = await spawn(by_name())
            # The lookup is blocked; a request by IP still completes on the same loop.
            direct = (await client.get(server.url + "/echo")).status_code
            slow_resolver.set()
            return direct, await task.join()

    assert run(main()) == (200, 200)


def test_lookup_counts_toward_connect_timeout(server: StdlibServer, slow_resolver: threading.Event) -> None:
    port = server.server_address[1]

    async def main() -> None:
        async with HttpClient(timeout=Timeout(connect=0.2)) as client:
            await client.get(f"http://slow.example:{port}/echo")

    start = time.monotonic()
    with pytest.raises(ConnectTimeout, match="resolving"):
        run(main())
    assert time.monotonic() - start < 30  # (a loose bound: only that it did not wait for the lookup)


def test_unknown_name_is_connect_error(slow_resolver: threading.Event) -> None:
    slow_resolver.set()

    async def main() -> Any:
        return await resolve("nothing.invalid", 80)

    with pytest.raises(ConnectError, match="cannot resolve"):
        run(main())


def test_ip_literals_need_no_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_threads(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("an IP literal went to the resolver thread")

    monkeypatch.setattr("flowno_io.io.socket_stream.ThreadPoolExecutor", no_threads)
    monkeypatch.setattr("flowno_io.io.socket_stream._resolver", None)

    async def main() -> list[Any]:
        return [(await resolve("127.0.0.1", 80))[0][4], (await resolve("::1", 80))[0][4][:2]]

    assert run(main()) == [("127.0.0.1", 80), ("::1", 80)]
