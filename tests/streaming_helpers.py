"""Helpers for the streaming, SSE and shutdown tests: servers in threads or subprocesses (raw reads
and waiting are in :mod:`helpers`)."""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from flowno_io import HttpServer
from flowno_io.testing import ServerThread

Start = Callable[..., ServerThread]

# The server every subprocess test runs: /slow?s=SECONDS (prints "slow started" when it begins),
# /events (an endless event stream), /pid.
SERVER_SCRIPT = """
import os, sys
from flowno import sleep
from flowno_io import EventSourceResponse, HttpServer, run

async def slow(request):
    print("slow started", flush=True)
    await sleep(float(request.query_params.get("s", "1")))
    return {"pid": os.getpid(), "done": True}

def events(request):
    async def forever():
        yield "hello"
        await sleep(3600)
    return EventSourceResponse(forever())

def pid(request):
    return {"pid": os.getpid()}

def make():
    return HttpServer(routes={"/slow": slow, "/events": events, "/pid": pid})

sys.exit(run(make, workers=int(sys.argv[1]), port=0, on_ready=lambda port: print(port, flush=True)))
"""


def server_threads() -> Iterator[Start]:
    """Body of a ``start`` fixture: ``start(routes, **server_options)`` serves in a thread, and
    every server started is stopped afterwards (``yield from server_threads()``)."""
    threads: list[ServerThread] = []

    def _start(routes: dict[Any, Any], **options: Any) -> ServerThread:
        thread = ServerThread(HttpServer("127.0.0.1", 0, routes=routes, **options))
        thread.start()
        threads.append(thread)
        return thread

    yield _start
    for thread in reversed(threads):
        thread.stop()


def connect(thread: ServerThread, request: bytes = b"", *, rcvbuf: int | None = None) -> socket.socket:
    """A raw client socket to the server, with ``request`` sent."""
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(5.0)
    sock.connect(("127.0.0.1", thread.server.port))
    if request:
        sock.sendall(request)
    return sock


def dechunk(body: bytes) -> tuple[list[bytes], bool]:
    """Split a chunked body into its chunks; True when it ended with the last chunk."""
    chunks: list[bytes] = []
    pos = 0
    while pos < len(body):
        end = body.find(b"\r\n", pos)
        if end < 0:
            return chunks, False
        size = int(body[pos:end], 16)
        start = end + 2
        if size == 0:
            return chunks, body[start:] == b"\r\n"
        if len(body) < start + size + 2:
            return chunks, False
        assert body[start + size : start + size + 2] == b"\r\n", "chunk not followed by CRLF"
        chunks.append(body[start : start + size])
        pos = start + size + 2
    return chunks, False


class ServerProcess:
    """A Python script serving in a subprocess; it prints its port on the first stdout line."""

    def __init__(self, script: str, tmp_path: Path, *args: str) -> None:
        path = tmp_path / "server_script.py"
        path.write_text(script)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.process = subprocess.Popen(
            [sys.executable, str(path), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.strip().isdigit():
            self.process.kill()
            _, err = self.process.communicate(timeout=5)
            raise AssertionError(f"server did not start: {line!r} {err}")
        self.port = int(line)

    def wait_for_line(self, text: str, timeout: float = 5.0) -> None:
        """Read stdout until a line holding ``text`` (fails after ``timeout``)."""
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.process.stdout], [], [], deadline - time.monotonic())
            if ready:
                line = self.process.stdout.readline()
                if text in line:
                    return
                if not line:
                    break
        raise AssertionError(f"the server never printed {text!r}")

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 10.0) -> int:
        return self.process.wait(timeout)

    def stop(self) -> str:
        """Kill the process if it still runs; its stderr."""
        if self.process.poll() is None:
            self.process.kill()
        _, err = self.process.communicate(timeout=5)
        return err
