"""Fault injection: clients that vanish, a server that dies, peers that stop reading, fd exhaustion,
handlers that raise inside streams.

After every fault the server must keep serving, close what it should (no connection left open),
run the producer's cleanup, keep exceptions out of the flowno loop and log no unexpected error;
a client must get a typed ``HttpError``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from flowno import sleep, spawn
from helpers import HANG_TIMEOUT, has_unread_data, read_response, read_until_closed, wait_for

from flowno_io import (
    EventSourceResponse,
    HttpClient,
    HttpError,
    HttpServer,
    ReadError,
    RemoteProtocolError,
    Request,
    Response,
    ServerSentEvent,
    StreamingResponse,
    Timeout,
    streaming_response_is_ok,
)
from flowno_io.testing import ServerThread, run

GET_HELLO = b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"


def load_soak() -> ModuleType:
    """``soak/soak.py`` (its ``ServerProcess`` runs a server in a subprocess)."""
    path = Path(__file__).resolve().parent.parent / "soak" / "soak.py"
    if "soak" not in sys.modules:
        spec = importlib.util.spec_from_file_location("soak", path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["soak"] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
    return sys.modules["soak"]


soak = load_soak()


class ErrorRecords(logging.Handler):
    """flowno-io ERROR records, except those whose message contains one of ``expected``."""

    def __init__(self, expected: tuple[str, ...]) -> None:
        super().__init__(logging.ERROR)
        self.expected = expected
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if not any(text in message for text in self.expected):
            self.records.append(message)


@dataclass
class Served:
    """A server running in a thread for one test."""

    server: HttpServer
    thread: ServerThread
    address: tuple[str, int]

    def connect(self, rcvbuf: int | None = None) -> socket.socket:
        """A connection to the server (with a small receive buffer if ``rcvbuf`` is given)."""
        sock = socket.socket()
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(HANG_TIMEOUT)
        sock.connect(self.address)
        return sock

    def still_serving(self) -> bool:
        """True when a new connection still gets GET /hello answered."""
        with socket.create_connection(self.address, timeout=HANG_TIMEOUT) as sock:
            sock.sendall(GET_HELLO)
            return read_response(sock).endswith(b"\r\n\r\nHello")


@contextmanager
def serving(server: HttpServer, expected_errors: tuple[str, ...] = ()) -> Iterator[Served]:
    """Serve ``server`` (with a /hello route added); afterwards check that nothing was left behind.

    Afterwards: still serving, no connection open, no exception in the loop, and no ERROR logged
    but the ``expected_errors``.
    """
    server.add_route("/hello", lambda request: "Hello", methods=["GET"])
    errors = ErrorRecords(expected_errors)
    logger = logging.getLogger("flowno_io")
    logger.addHandler(errors)
    thread = ServerThread(server)
    try:
        thread.start()
        served = Served(server, thread, ("127.0.0.1", server.port))
        yield served
        assert served.still_serving()
        wait_for(lambda: server.open_connections == 0, HANG_TIMEOUT, "connections left open")
        assert thread.loop.exceptions == {}, thread.loop.exceptions
        assert errors.records == []
    finally:
        thread.stop()
        logger.removeHandler(errors)


def reset(sock: socket.socket) -> None:
    """Close with an RST instead of a FIN (the peer vanished abruptly)."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


# -- the client goes away --------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["fin", "rst"])
@pytest.mark.parametrize("framing", ["content-length", "chunked"])
def test_client_disconnects_mid_request_body(how: str, framing: str) -> None:
    outcomes: list[str] = []
    reading = threading.Event()
    server = HttpServer("127.0.0.1", 0)

    async def upload(request: Request) -> Response:
        reading.set()  # from here on the handler waits for the rest of the body
        try:
            return Response(await request.body())
        except HttpError as exc:
            outcomes.append(type(exc).__name__)
            raise

    server.add_route("/upload", upload, methods=["POST"])
    with serving(server) as served:
        sock = served.connect()
        if framing == "chunked":
            sock.sendall(
                b"POST /upload HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n"
            )
        else:
            sock.sendall(b"POST /upload HTTP/1.1\r\nHost: t\r\nContent-Length: 100000\r\n\r\n" + b"x" * 5000)
        assert reading.wait(HANG_TIMEOUT), "the handler never ran"
        if how == "rst":
            reset(sock)
        else:
            sock.close()
        wait_for(
            lambda: outcomes == ["ReadError"], HANG_TIMEOUT, f"the handler saw {outcomes}, not a ReadError"
        )


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_client_disconnects_mid_response(how: str) -> None:
    server = HttpServer("127.0.0.1", 0)
    server.add_route("/big", lambda request: Response(b"x" * 20_000_000), methods=["GET"])
    with serving(server) as served:
        sock = served.connect()
        sock.sendall(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 OK")
        if how == "rst":
            reset(sock)
        else:
            sock.close()  # with unread data: the kernel sends an RST too, after the FIN
        wait_for(lambda: server.open_connections == 0, HANG_TIMEOUT, "the connection outlived its client")


def endless_stream(served_cleanups: list[str], kind: str) -> Callable[[Request], Any]:
    """A handler streaming forever (``kind`` "bytes" or "sse"); its producer records its cleanup."""

    def handler(request: Request) -> Any:
        async def chunks() -> AsyncIterator[bytes]:
            try:
                while True:
                    yield b"x" * 1000
                    await sleep(0.01)
            finally:
                served_cleanups.append("bytes")

        async def events() -> AsyncIterator[ServerSentEvent]:
            try:
                yield ServerSentEvent("first")
                await sleep(3600)  # parked in the producer: only an interrupt gets it out in time
                yield ServerSentEvent("never")
            finally:
                served_cleanups.append("sse")

        if kind == "bytes":
            return StreamingResponse(chunks())
        return EventSourceResponse(events(), ping_interval=None)

    return handler


@pytest.mark.parametrize("kind", ["bytes", "sse"])
@pytest.mark.parametrize("how", ["fin", "rst"])
def test_clients_disconnecting_mid_stream_end_their_producers_at_once(kind: str, how: str) -> None:
    server = HttpServer("127.0.0.1", 0)
    cleanups: list[str] = []
    server.add_route("/stream", endless_stream(cleanups, kind), methods=["GET"])
    with serving(server) as served:
        clients = [served.connect() for _ in range(50)]
        for sock in clients:
            sock.sendall(b"GET /stream HTTP/1.1\r\nHost: t\r\n\r\n")
        for sock in clients:
            assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK")
        for sock in clients:
            if how == "rst":
                reset(sock)
            else:
                sock.close()
        # At once: nothing else would end them (the SSE producers sleep for an hour).
        wait_for(
            lambda: len(cleanups) == 50, HANG_TIMEOUT, lambda: f"{len(cleanups)} of 50 producers cleaned up"
        )


def test_server_killed_mid_stream_gives_the_client_a_typed_error() -> None:
    with soak.ServerProcess() as process:
        url = process.url + "/sse?events=0&interval_ms=20"  # an endless stream

        async def read_until_killed() -> BaseException | None:
            async with HttpClient(timeout=Timeout(HANG_TIMEOUT)) as client:
                try:
                    response = await client.stream_get(url)
                    async with response:
                        assert streaming_response_is_ok(response)
                        received = 0
                        async for _ in response.events():
                            received += 1
                            if received == 3:
                                os.kill(process.pid, signal.SIGKILL)
                except HttpError as exc:
                    return exc
            return None

        error = run(read_until_killed())
        assert isinstance(error, RemoteProtocolError | ReadError), repr(error)
        assert process.process.wait(HANG_TIMEOUT) == -signal.SIGKILL


def test_server_killed_during_a_buffered_request_gives_the_client_a_typed_error() -> None:
    with soak.ServerProcess() as process:
        url = process.url + "/sse?events=0&interval_ms=20"

        async def fetch() -> BaseException | None:
            async with HttpClient(timeout=Timeout(HANG_TIMEOUT)) as client:
                try:
                    await client.get(url)  # reads the whole (endless) body
                except HttpError as exc:
                    return exc
            return None

        # Killed once the response is streaming (a state), not after a fixed delay that a slow
        # machine could spend before the request was even sent.
        killer = threading.Thread(target=kill_when_streaming, args=(process,), daemon=True)
        killer.start()
        error = run(fetch())
        killer.join(HANG_TIMEOUT)
        assert isinstance(error, RemoteProtocolError | ReadError), repr(error)


def kill_when_streaming(process: Any) -> None:
    """SIGKILL the soak server once it serves a stream (polled over fresh /health connections)."""
    wait_for(lambda: process.health()["active_streams"] >= 1, message="the stream never started")
    os.kill(process.pid, signal.SIGKILL)


# -- peers that stop reading -------------------------------------------------------------------------


def test_peer_that_stops_reading_a_stream_is_dropped_after_write_timeout() -> None:
    server = HttpServer("127.0.0.1", 0, write_timeout=0.3)
    cleanups: list[str] = []

    def fast(request: Request) -> EventSourceResponse:
        async def events() -> AsyncIterator[ServerSentEvent]:
            try:
                while True:
                    yield ServerSentEvent("x" * 16_000)
            finally:
                cleanups.append("sse")

        return EventSourceResponse(events(), ping_interval=None)

    server.add_route("/fast", fast, methods=["GET"])
    with serving(server) as served:
        sock = served.connect(rcvbuf=4096)
        sock.sendall(b"GET /fast HTTP/1.1\r\nHost: t\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 OK")
        # From now on it never reads and never closes; the write timeout (0.3 s) ends the stream.
        wait_for(
            lambda: cleanups == ["sse"], HANG_TIMEOUT, "the stream to a peer that reads nothing was kept"
        )
        wait_for(lambda: server.open_connections == 0, HANG_TIMEOUT, "connection kept")
        sock.close()


def test_idle_stream_to_a_peer_that_takes_nothing_is_found_by_heartbeats() -> None:
    server = HttpServer("127.0.0.1", 0, write_timeout=0.3)
    cleanups: list[str] = []

    def idle(request: Request) -> EventSourceResponse:
        async def events() -> AsyncIterator[ServerSentEvent]:
            try:
                yield ServerSentEvent("x" * 20_000)  # more than the peer's receive buffer
                await sleep(3600)
                yield ServerSentEvent("never")
            finally:
                cleanups.append("sse")

        return EventSourceResponse(events(), ping_interval=0.05)

    server.add_route("/idle", idle, methods=["GET"])
    with serving(server) as served:
        sock = served.connect(rcvbuf=2048)
        sock.sendall(b"GET /idle HTTP/1.1\r\nHost: t\r\n\r\n")
        try:
            # The peer never reads: the first event sits in the buffers, heartbeats pile up behind.
            wait_for(lambda: cleanups == ["sse"], HANG_TIMEOUT, "heartbeats did not find the stalled peer")
        finally:
            sock.close()


def test_slow_readers_keep_server_memory_bounded() -> None:
    readers = 100
    with soak.ServerProcess() as process:
        rss_before = process.rss_kb()
        clients = []
        for _ in range(readers):
            sock = socket.socket()
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(process.address)
            sock.sendall(b"GET /sse?events=0&interval_ms=0 HTTP/1.1\r\nHost: t\r\n\r\n")  # as fast as it can
            clients.append(sock)
        try:
            wait_for(
                lambda: process.health()["active_streams"] == readers, message="not every stream started"
            )
            # Observation windows, not synchronisation: nobody reads, so every producer must be
            # held back by its socket; a server that buffered would grow meanwhile (a slower
            # machine makes the check weaker, never wrong).
            time.sleep(1.0)
            for sock in clients[:10]:
                sock.recv(1024)  # a trickle for a few
            time.sleep(0.5)
            grown_kb = process.rss_kb() - rss_before
            health = process.health()
        finally:
            for sock in clients:
                sock.close()
    print(f"{readers} stalled endless streams: server RSS +{grown_kb} KiB")
    assert health["active_streams"] == readers
    assert grown_kb < 10 * 1024, f"server memory grew {grown_kb} KiB for {readers} stalled readers"


# -- file descriptors run out --------------------------------------------------------------------------


def test_emfile_at_the_fd_limit_server_keeps_running_and_recovers() -> None:
    options = ["--nofile", "64", "--max-connections", "1000", "--keepalive-timeout", "60"]
    with soak.ServerProcess(options) as process:
        clients = []
        for _ in range(100):  # more than 64 fds: accept() hits EMFILE; the rest wait in the backlog
            sock = socket.create_connection(process.address, timeout=10)
            sock.sendall(GET_HELLO)
            clients.append(sock)
        # The server hit the limit and answered what it could accept (states, not a delay).
        wait_for(lambda: "Too many open files" in process.stderr_text(), message="EMFILE never happened")
        wait_for(
            lambda: sum(map(has_unread_data, clients)) > 20,
            message=lambda: f"only {sum(map(has_unread_data, clients))} answered at the fd limit",
        )
        answered = [sock for sock in clients if has_unread_data(sock)]
        waiting = [sock for sock in clients if sock not in answered]
        assert len(answered) < 64 and waiting, f"{len(answered)} answered with 64 fds"
        assert process.process.poll() is None, "the server died at the fd limit"
        for sock in answered:
            assert read_response(sock).endswith(b"Hello")
            sock.close()  # fds free up: the server accepts the connections that waited
        for sock in waiting:
            assert read_response(sock).endswith(b"Hello")
            sock.close()
        with socket.create_connection(process.address, timeout=HANG_TIMEOUT) as sock:
            sock.sendall(GET_HELLO)
            assert read_response(sock).endswith(b"Hello")
        assert process.stop() == 0
        assert "Too many open files" in process.stderr_text()


# -- handlers that raise inside streams -----------------------------------------------------------------


class Boom(Exception):
    """A handler's own failure."""


async def raise_at_once() -> AsyncIterator[bytes]:
    raise Boom("before the first piece")
    yield b""  # pragma: no cover  (makes it an async generator)


async def raise_after_two() -> AsyncIterator[bytes]:
    yield b"one"
    yield b"two"
    raise Boom("after two pieces")


def sync_raise_after_one() -> Iterator[bytes]:
    yield b"one"
    raise Boom("a plain iterator")


async def yield_a_number() -> AsyncIterator[Any]:
    yield b"one"
    yield 42  # not bytes or str: a TypeError in the response


async def unserialisable_event() -> AsyncIterator[Any]:
    yield ServerSentEvent("one")
    yield object()  # not JSON-serialisable: encoding the event fails


STREAM_FAILURES: dict[str, Callable[[], Any]] = {
    "raise-before-first": lambda: StreamingResponse(raise_at_once()),
    "raise-after-two": lambda: StreamingResponse(raise_after_two()),
    "sync-iterator-raises": lambda: StreamingResponse(sync_raise_after_one()),
    "yields-a-number": lambda: StreamingResponse(yield_a_number()),
    "sse-unserialisable": lambda: EventSourceResponse(unserialisable_event(), ping_interval=None),
}


@pytest.mark.parametrize("name", sorted(STREAM_FAILURES))
def test_handler_exception_inside_a_stream_cuts_the_stream_visibly(name: str) -> None:
    server = HttpServer("127.0.0.1", 0)
    server.add_route("/fail", lambda request: STREAM_FAILURES[name](), methods=["GET"])
    with serving(server, expected_errors=("streaming response for GET /fail failed",)) as served:
        sock = served.connect()
        sock.sendall(b"GET /fail HTTP/1.1\r\nHost: t\r\n\r\n" + GET_HELLO)
        data = read_until_closed(sock)
        sock.close()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"Transfer-Encoding: chunked" in head
    assert not body.endswith(b"0\r\n\r\n"), "a failed stream must not look complete"
    assert b"Hello" not in body  # the connection closed: the pipelined request was not served


def test_client_gets_a_typed_error_for_a_stream_that_failed_midway() -> None:
    server = HttpServer("127.0.0.1", 0)
    server.add_route("/fail", lambda request: StreamingResponse(raise_after_two()), methods=["GET"])

    async def main() -> tuple[list[bytes], BaseException | None]:
        server.bind()
        await spawn(server.serve())
        pieces: list[bytes] = []
        try:
            async with HttpClient(timeout=Timeout(5.0)) as client:
                response = await client.stream_get(f"http://127.0.0.1:{server.port}/fail")
                async with response:
                    assert streaming_response_is_ok(response)
                    async for piece in response.body:
                        pieces.append(piece)
        except HttpError as exc:
            return pieces, exc
        finally:
            await server.close()
        return pieces, None

    logging.getLogger("flowno_io.server").disabled = True  # the failure is logged, and expected
    try:
        pieces, error = run(main())
    finally:
        logging.getLogger("flowno_io.server").disabled = False
    assert b"".join(pieces) == b"onetwo"
    assert isinstance(error, RemoteProtocolError), repr(error)


def test_handler_raising_before_its_stream_starts_is_a_500() -> None:
    server = HttpServer("127.0.0.1", 0)

    def broken(request: Request) -> StreamingResponse:
        raise Boom("before returning the stream")

    server.add_route("/broken", broken, methods=["GET"])
    with serving(server, expected_errors=("handler for GET /broken raised",)) as served:
        sock = served.connect()
        sock.sendall(b"GET /broken HTTP/1.1\r\nHost: t\r\n\r\n")
        response = read_until_closed(sock)
        sock.close()
    assert response.startswith(b"HTTP/1.1 500 ") and b"Connection: close" in response
    assert b"before returning" not in response  # no internals leak
