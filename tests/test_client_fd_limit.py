"""The client at the file descriptor limit (issue 12): a typed ``ConnectError`` that says so.

``RLIMIT_NOFILE`` is lowered in a subprocess (never in the test process), which then fills its
descriptor table with ``/dev/null`` handles and asks the client for a page:

1. no descriptor free: the socket cannot be opened;
2. one free: the socket opens, but the pool's reactor needs a second one (its epoll), so the
   connection is given up — and its socket closed, leaving that one descriptor free again;
3. all freed: the same client gets the page.

Before the fix, (1) and (2) raised a bare ``OSError`` (and (2) leaked the socket and the pool slot).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest
from client_servers import StdlibServer

SCRIPT = r"""
import errno, json, os, resource, sys

from flowno_io import ConnectError, EventLoop, HttpClient

url = sys.argv[1]


def fill() -> list[int]:
    hoard = []
    while True:
        try:
            hoard.append(os.open(os.devnull, os.O_RDONLY))
        except OSError as exc:
            assert exc.errno == errno.EMFILE, exc
            return hoard


def free_descriptors() -> int:
    opened = fill()
    for fd in opened:
        os.close(fd)
    return len(opened)


async def attempt(client: HttpClient) -> list:
    try:
        response = await client.get(url + "/echo")
    except ConnectError as exc:
        return ["ConnectError", str(exc)]
    except BaseException as exc:
        return [type(exc).__name__, str(exc)]
    return ["ok", response.status_code]


async def main() -> dict:
    async with HttpClient() as warm_up:  # as a process that made requests before: lazy imports done
        await warm_up.get(url + "/echo")
    client = HttpClient()
    results = {}
    hoard = fill()
    results["none_free"] = await attempt(client)
    results["none_free_after"] = free_descriptors()
    os.close(hoard.pop())
    results["one_free"] = await attempt(client)
    results["one_free_after"] = free_descriptors()
    results["active_after_failures"] = client.pool.active_connections()
    for fd in hoard:
        os.close(fd)
    results["freed"] = await attempt(client)
    results["second"] = await attempt(client)
    results["opened"] = client.pool.connections_opened
    await client.aclose()
    return results


soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(soft, 128), hard))
loop = EventLoop()  # its own descriptors exist before the table is filled
print(json.dumps(loop.run_until_complete(main(), join=True)))
"""


@pytest.fixture
def server() -> Iterator[StdlibServer]:
    server = StdlibServer().start()
    yield server
    server.stop()


def test_fd_limit_gives_a_typed_connect_error_and_the_client_recovers(server: StdlibServer) -> None:
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, server.url], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    results = json.loads(done.stdout)

    kind, message = results["none_free"]
    assert kind == "ConnectError", message
    assert "file descriptor limit" in message and "RLIMIT_NOFILE" in message
    assert results["none_free_after"] == 0

    kind, message = results["one_free"]
    assert kind == "ConnectError", message
    assert "file descriptor limit" in message
    assert results["one_free_after"] == 1  # the socket that got no epoll was closed
    assert results["active_after_failures"] == 0  # and its pool slot freed

    assert results["freed"] == ["ok", 200]
    assert results["second"] == ["ok", 200]
    assert results["opened"] == 1  # the failed attempts opened no connection; the second reused it
