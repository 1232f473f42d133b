"""Graceful shutdown: close(grace), SIGTERM/SIGINT on a server in a subprocess, a second signal."""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from flowno import EventLoop, spawn
from helpers import HANG_TIMEOUT, read_all, read_head, read_until, until, wait_for
from streaming_helpers import SERVER_SCRIPT, ServerProcess, Start, connect, dechunk, server_threads

from flowno_io import HttpServer, Request
from flowno_io.server.server import DEFAULT_SHUTDOWN_GRACE


@pytest.fixture
def start() -> Iterator[Any]:
    yield from server_threads()


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[Any]:
    processes: list[ServerProcess] = []

    def _start(workers: int = 1) -> ServerProcess:
        process = ServerProcess(SERVER_SCRIPT, tmp_path, str(workers))
        processes.append(process)
        return process

    yield _start
    for process in processes:
        process.stop()


def _get_in_thread(url: str, results: list[Any]) -> threading.Thread:
    def get() -> None:
        try:
            results.append(httpx.get(url, timeout=10))
        except httpx.HTTPError as exc:
            results.append(exc)

    thread = threading.Thread(target=get)
    thread.start()
    return thread


def refuses_connections(port: int) -> bool:
    """True once nothing accepts connections on ``port`` (the listener was closed)."""
    try:
        socket.create_connection(("127.0.0.1", port), timeout=HANG_TIMEOUT).close()
    except ConnectionRefusedError:
        return True
    return False


def test_sigterm_lets_an_in_flight_request_finish(server_process: Any) -> None:
    server = server_process()
    results: list[Any] = []
    client = _get_in_thread(f"http://127.0.0.1:{server.port}/slow?s=0.8", results)
    server.wait_for_line("slow started")
    server.signal(signal.SIGTERM)
    client.join(HANG_TIMEOUT)
    assert server.wait(HANG_TIMEOUT) == 0
    response = results[0]
    assert isinstance(response, httpx.Response) and response.json()["done"] is True
    assert "Traceback" not in server.stop()


def test_sigterm_ends_event_streams_with_the_final_comment(server_process: Any) -> None:
    server = server_process()
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /events HTTP/1.1\r\nHost: t\r\n\r\n")
        _head, rest = read_head(sock)
        rest = read_until(sock, b"data: hello\n\n\r\n", rest)
        began = time.monotonic()
        server.signal(signal.SIGINT)
        body = read_all(sock, rest)
        assert server.wait(HANG_TIMEOUT) == 0
        # The stream is ended, not waited for: well before the grace period (10 s) runs out.
        assert time.monotonic() - began < DEFAULT_SHUTDOWN_GRACE - 2
    chunks, ended = dechunk(body)
    assert chunks == [b"data: hello\n\n", b": server shutting down\n\n"] and ended


def test_a_second_signal_exits_at_once(server_process: Any) -> None:
    server = server_process()
    results: list[Any] = []
    client = _get_in_thread(f"http://127.0.0.1:{server.port}/slow?s=30", results)
    server.wait_for_line("slow started")
    server.signal(signal.SIGTERM)  # graceful: would wait for the 30 s request (up to the grace)
    # The first signal was handled once the listener is closed: the server is now closing.
    wait_for(lambda: refuses_connections(server.port), message="the first signal did not start a close")
    began = time.monotonic()
    server.signal(signal.SIGINT)
    assert server.wait(HANG_TIMEOUT) == 128 + signal.SIGINT
    # At once: not after the 30 s request, nor after the 10 s grace period.
    assert time.monotonic() - began < DEFAULT_SHUTDOWN_GRACE - 2
    client.join(HANG_TIMEOUT)
    assert isinstance(results[0], httpx.HTTPError)


def test_close_finishes_in_flight_requests_refuses_new_ones_and_drops_idle_ones(start: Start) -> None:
    in_flight = threading.Event()

    async def slow(request: Request) -> str:
        in_flight.set()
        await until(lambda: thread.server.closing)  # still running when the close begins
        return "done"

    thread = start({"/slow": slow, "/fast": lambda request: "fast"})
    idle = connect(thread, b"GET /fast HTTP/1.1\r\nHost: t\r\n\r\n")
    read_until(idle, b"fast")
    results: list[Any] = []
    client = _get_in_thread(thread.url + "/slow", results)
    assert in_flight.wait(HANG_TIMEOUT)
    closed = threading.Event()

    async def close() -> None:
        await thread.server.close()
        closed.set()

    thread.loop.create_task(close())
    assert read_all(idle) == b""  # the idle keep-alive connection is closed (not kept to the end)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", thread.server.port), timeout=HANG_TIMEOUT)
    client.join(HANG_TIMEOUT)
    assert results[0].text == "done"
    assert closed.wait(HANG_TIMEOUT)
    idle.close()


def test_serve_on_the_main_thread_closes_on_sigterm_and_restores_handlers() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    server = HttpServer("127.0.0.1", 0)
    seen: dict[str, Any] = {}

    async def main() -> None:
        task = await spawn(server.serve())
        await until(lambda: signal.getsignal(signal.SIGTERM) is not previous, message="no handler installed")
        seen["during"] = signal.getsignal(signal.SIGTERM)
        signal.raise_signal(signal.SIGTERM)  # handled by serve(): a graceful close
        await task.join()
        seen["after"] = signal.getsignal(signal.SIGTERM)

    try:
        EventLoop().run_until_complete(main(), join=True)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert getattr(seen["during"], "__self__", None).__class__.__name__ == "ShutdownSignals"
    assert seen["after"] is not seen["during"]
    assert server.closing


def test_serve_leaves_an_application_s_own_handlers_alone(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="flowno_io")
    calls: list[int] = []
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    server = HttpServer("127.0.0.1", 0)
    seen: list[Any] = []

    async def main() -> None:
        for signum in previous:
            signal.signal(signum, lambda signum, frame: calls.append(signum))
        await spawn(server.serve())
        # serve() logs this line after deciding about signal handlers
        await until(lambda: "serving on" in caplog.text, message="the server never started")
        seen.append(signal.getsignal(signal.SIGTERM))
        signal.raise_signal(signal.SIGTERM)
        await server.close()

    try:
        EventLoop().run_until_complete(main(), join=True)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    assert calls == [signal.SIGTERM]
    assert getattr(seen[0], "__name__", "") == "<lambda>"
