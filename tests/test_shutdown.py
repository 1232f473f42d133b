"""Graceful shutdown: close(grace), SIGTERM/SIGINT on a server in a subprocess, a second signal."""

from __future__ import annotations

import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from flowno import EventLoop, sleep, spawn
from streaming_helpers import (
    SERVER_SCRIPT,
    ServerProcess,
    Start,
    connect,
    dechunk,
    read_all,
    read_head,
    read_until,
    server_threads,
    wait_for,
)

from flowno_io import HttpServer, Request


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


def test_sigterm_lets_an_in_flight_request_finish(server_process: Any) -> None:
    server = server_process()
    results: list[Any] = []
    client = _get_in_thread(f"http://127.0.0.1:{server.port}/slow?s=0.8", results)
    server.wait_for_line("slow started")
    server.signal(signal.SIGTERM)
    client.join(5)
    assert server.wait(5) == 0
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
        assert server.wait(5) == 0
        assert time.monotonic() - began < 2.0  # not the 10 s grace period
    chunks, ended = dechunk(body)
    assert chunks == [b"data: hello\n\n", b": server shutting down\n\n"] and ended


def test_a_second_signal_exits_at_once(server_process: Any) -> None:
    server = server_process()
    results: list[Any] = []
    client = _get_in_thread(f"http://127.0.0.1:{server.port}/slow?s=30", results)
    server.wait_for_line("slow started")
    server.signal(signal.SIGTERM)  # graceful: would wait for the 30 s request (up to the grace)
    time.sleep(0.3)
    began = time.monotonic()
    server.signal(signal.SIGINT)
    assert server.wait(5) == 128 + signal.SIGINT
    assert time.monotonic() - began < 1.0
    client.join(5)
    assert isinstance(results[0], httpx.HTTPError)


def test_close_finishes_in_flight_requests_refuses_new_ones_and_drops_idle_ones(start: Start) -> None:
    async def slow(request: Request) -> str:
        await sleep(0.5)
        return "done"

    thread = start({"/slow": slow, "/fast": lambda request: "fast"})
    idle = connect(thread, b"GET /fast HTTP/1.1\r\nHost: t\r\n\r\n")
    read_until(idle, b"fast")
    results: list[Any] = []
    client = _get_in_thread(thread.url + "/slow", results)
    wait_for(lambda: thread.server.open_connections == 2)
    closed = threading.Event()

    async def close() -> None:
        await thread.server.close()
        closed.set()

    thread.loop.create_task(close())
    assert read_all(idle, timeout=1.0) == b""  # the idle keep-alive connection is closed at once
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", thread.server.port), timeout=1)
    client.join(5)
    assert results[0].text == "done"
    assert closed.wait(2)
    idle.close()


def test_serve_on_the_main_thread_closes_on_sigterm_and_restores_handlers() -> None:
    previous = signal.getsignal(signal.SIGTERM)
    server = HttpServer("127.0.0.1", 0)
    seen: dict[str, Any] = {}

    async def main() -> None:
        task = await spawn(server.serve())
        await sleep(0.05)
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


def test_serve_leaves_an_application_s_own_handlers_alone() -> None:
    calls: list[int] = []
    previous = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM)}
    server = HttpServer("127.0.0.1", 0)
    seen: list[Any] = []

    async def main() -> None:
        for signum in previous:
            signal.signal(signum, lambda signum, frame: calls.append(signum))
        await spawn(server.serve())
        await sleep(0.05)
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
