"""Seam conformance: every stream type behaves the same at ``receive_some``/``send_all``/``aclose``.

Each test runs against a plain TCP pair (:class:`SocketStream` on loopback), TLS over a TCP pair
(:class:`TlsStream`, client and server side), and :func:`flowno_io.testing.memory_stream_pair`.
What they share: bytes arrive in order however reads and writes are split; the end of the peer's
sending side reads as ``b""`` after its bytes; sending to a closed peer is a :class:`WriteError`;
using a stream we closed is a :class:`ClosedResourceError`; a timeout raises the timeout (never
early) and leaves the stream dead; a task cancelled while parked in ``receive_some`` leaves the
stream usable, no timer armed, and a loop that exits.
"""

from __future__ import annotations

import shutil
import socket
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from time import monotonic
from typing import Any

import pytest
from flowno import spawn
from helpers import make_certificate, until_parked

from flowno_io import cancel, sleep
from flowno_io._errors import ClosedResourceError, ReadTimeout, WriteError, WriteTimeout
from flowno_io.io.clock import get_clock
from flowno_io.io.flowno_compat import TaskCancelled
from flowno_io.io.memory_stream import MemoryStream
from flowno_io.io.socket_stream import SocketStream
from flowno_io.io.tls_stream import TlsStream
from flowno_io.testing import memory_stream_pair, run

KINDS = ["socket", "tls", "memory"]
#: Kernel buffer sizes asked for the TCP pairs, so that a peer that does not read stalls a sender soon.
SMALL_BUFFER = 16 * 1024
#: More than every buffer between the two ends can hold (kernel or memory).
BIG_PAYLOAD = bytes(range(256)) * (16 * 1024)  # 4 MiB
TIMEOUT = 0.2
#: Bounds a hang only: a loaded machine may be very slow, but not this slow.
HANG = 20.0

Stream = SocketStream | TlsStream | MemoryStream


@dataclass
class Pair:
    """Two connected streams and how to half-close one of them."""

    left: Stream
    right: Stream
    send_eof: Callable[[Stream], None]


@pytest.fixture(scope="module")
def tls_contexts(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    cert, key = make_certificate(Path(tmp_path_factory.mktemp("seam")), "local", "DNS:localhost")
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    server.num_tickets = 0  # no unread session tickets: a close then ends cleanly, never with a reset
    client = ssl.create_default_context(cafile=str(cert))
    return client, server


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_pair(kind: str, request: pytest.FixtureRequest) -> Callable[[], Awaitable[Pair]]:
    """``await open_pair()`` inside the loop: a connected pair of the parametrised kind."""
    contexts = request.getfixturevalue("tls_contexts") if kind == "tls" else None
    sockets: list[socket.socket] = []

    async def make() -> Pair:
        if kind == "memory":
            left_m, right_m = memory_stream_pair(max_buffer_bytes=SMALL_BUFFER)
            return Pair(left_m, right_m, lambda stream: stream.send_eof())  # type: ignore[union-attr]
        a, b = tcp_pair()
        sockets.extend((a, b))
        if kind == "socket":
            return Pair(SocketStream(a), SocketStream(b), lambda stream: stream.sock.shutdown(socket.SHUT_WR))  # type: ignore[union-attr]
        assert contexts is not None
        client_context, server_context = contexts
        client = TlsStream(SocketStream(a), client_context, "localhost")
        server = TlsStream(SocketStream(b), client_context, "localhost")
        # TlsStream is the client side; the test's server side swaps in a server-side SSLObject.
        server._ssl = server_context.wrap_bio(server._incoming, server._outgoing, server_side=True)
        handshake = await spawn(server.do_handshake(timeout=HANG))
        await client.do_handshake(timeout=HANG)
        await handshake.join()
        return Pair(client, server, lambda stream: stream.sock.shutdown(socket.SHUT_WR))  # type: ignore[union-attr]

    yield make
    for sock in sockets:
        sock.close()


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A connected loopback TCP pair with small kernel buffers (set before connecting)."""
    listener = socket.socket()
    for sock_ in (listener,):
        sock_.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
        sock_.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
    with listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        a = socket.socket()
        a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_BUFFER)
        a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SMALL_BUFFER)
        a.connect(listener.getsockname())
        b, _ = listener.accept()
    return a, b


async def receive_exactly(stream: Stream, count: int, max_bytes: int = 65536) -> bytes:
    data = bytearray()
    while len(data) < count:
        chunk = await stream.receive_some(max_bytes, timeout=HANG)
        assert chunk, f"the stream ended after {len(data)} of {count} bytes"
        assert len(chunk) <= max_bytes
        data += chunk
    return bytes(data)


async def receive_to_end(stream: Stream) -> bytes:
    data = bytearray()
    while chunk := await stream.receive_some(timeout=HANG):
        data += chunk
    return bytes(data)


# -- bytes in order ---------------------------------------------------------------------------


def test_small_reads_return_at_most_max_bytes_and_every_byte_in_order(open_pair: Any) -> None:
    async def main() -> None:
        pair = await open_pair()
        payload = bytes(range(256)) * 40
        sender = await spawn(pair.left.send_all(payload, timeout=HANG))
        assert await receive_exactly(pair.right, len(payload), max_bytes=7) == payload
        await sender.join()
        await pair.left.aclose()
        await pair.right.aclose()

    run(main())


def test_a_send_larger_than_every_buffer_completes_as_the_peer_reads(open_pair: Any) -> None:
    async def main() -> None:
        pair = await open_pair()
        sender = await spawn(pair.left.send_all(BIG_PAYLOAD, timeout=HANG))
        assert await receive_exactly(pair.right, len(BIG_PAYLOAD), max_bytes=5000) == BIG_PAYLOAD
        await sender.join()
        await pair.left.aclose()
        await pair.right.aclose()

    run(main())


def test_both_directions_carry_bytes_at_the_same_time(open_pair: Any, kind: str) -> None:
    if kind != "memory":
        # flowno 0.1.19 registers one selector entry per socket and per waiting task: a second
        # task waiting on the same socket (one reading, one writing) kills the loop with
        # ``KeyError: ... is already registered``. The seam serves one waiting task per stream.
        pytest.skip("flowno cannot park two tasks on one socket (one selector entry per fd)")

    async def main() -> None:
        pair = await open_pair()
        to_right = await spawn(pair.left.send_all(BIG_PAYLOAD, timeout=HANG))
        to_left = await spawn(pair.right.send_all(BIG_PAYLOAD[::-1], timeout=HANG))
        got_left = await spawn(receive_exactly(pair.left, len(BIG_PAYLOAD)))
        assert await receive_exactly(pair.right, len(BIG_PAYLOAD)) == BIG_PAYLOAD
        assert await got_left.join() == BIG_PAYLOAD[::-1]
        await to_right.join()
        await to_left.join()
        await pair.left.aclose()
        await pair.right.aclose()

    run(main())


# -- closing ----------------------------------------------------------------------------------


@pytest.mark.parametrize("closer", ["left", "right"])
def test_the_peer_reads_the_bytes_sent_before_a_close_then_the_end(open_pair: Any, closer: str) -> None:
    async def main() -> None:
        pair = await open_pair()
        closing, other = (pair.left, pair.right) if closer == "left" else (pair.right, pair.left)
        await closing.send_all(b"last words")
        await closing.aclose()
        assert closing.closed
        assert await receive_to_end(other) == b"last words"
        assert await other.receive_some(timeout=HANG) == b"", "the end is sticky"
        await other.aclose()

    run(main())


@pytest.mark.parametrize("closer", ["left", "right"])
def test_sending_to_a_closed_peer_fails_with_write_error(open_pair: Any, closer: str) -> None:
    async def main() -> None:
        pair = await open_pair()
        closing, other = (pair.left, pair.right) if closer == "left" else (pair.right, pair.left)
        await closing.aclose()
        assert await other.receive_some(timeout=HANG) == b""
        # A TCP send may be accepted once before the peer's reset comes back: retry a bounded
        # number of times, waiting for the reset (a state), never sleeping a fixed time.
        deadline = monotonic() + HANG
        with pytest.raises(WriteError):
            while monotonic() < deadline:
                await other.send_all(b"x" * 1000, timeout=HANG)
                await sleep(0.01)
        await other.aclose()

    run(main())


@pytest.mark.parametrize("closer", ["left", "right"])
def test_a_stream_closed_by_us_raises_closed_resource_error(open_pair: Any, closer: str) -> None:
    async def main() -> None:
        pair = await open_pair()
        closing, other = (pair.left, pair.right) if closer == "left" else (pair.right, pair.left)
        await closing.aclose()
        await closing.aclose()  # closing twice is harmless
        with pytest.raises(ClosedResourceError):
            await closing.receive_some(timeout=HANG)
        with pytest.raises(ClosedResourceError):
            await closing.send_all(b"x", timeout=HANG)
        await other.aclose()

    run(main())


def test_half_close_ends_the_peers_reading_after_the_bytes_sent(open_pair: Any) -> None:
    async def main() -> None:
        pair = await open_pair()
        await pair.left.send_all(b"request")
        pair.send_eof(pair.left)
        assert await receive_to_end(pair.right) == b"request"
        with pytest.raises(WriteError):
            await pair.left.send_all(b"more", timeout=HANG)  # our sending side is shut
        await pair.left.aclose()
        await pair.right.aclose()

    run(main())


def test_after_a_half_close_the_other_direction_still_carries_bytes(open_pair: Any, kind: str) -> None:
    if kind == "tls":
        # OpenSSL treats a TCP end without close_notify as fatal (a truncation): the side that
        # read it can no longer send. TlsStream sends no close_notify (HTTP framing ends the data).
        pytest.skip("TLS over a bare TCP half-close cannot send back (no close_notify)")

    async def main() -> None:
        pair = await open_pair()
        await pair.left.send_all(b"request")
        pair.send_eof(pair.left)
        assert await receive_to_end(pair.right) == b"request"
        reply = b"response after the end of the request"
        await pair.right.send_all(reply)
        assert await receive_exactly(pair.left, len(reply)) == reply
        await pair.right.aclose()
        assert await pair.left.receive_some(timeout=HANG) == b""
        await pair.left.aclose()

    run(main())


def test_shutdown_wakes_a_task_parked_in_receive_with_the_end(open_pair: Any) -> None:
    async def main() -> None:
        pair = await open_pair()
        receiver = await spawn(pair.right.receive_some(timeout=HANG))
        await until_parked(receiver)
        pair.right.shutdown()
        assert await receiver.join() == b""
        assert await pair.left.receive_some(timeout=HANG) == b"", "the peer sees the end too"
        await pair.left.aclose()
        await pair.right.aclose()

    run(main())


# -- timeouts ---------------------------------------------------------------------------------


def test_receive_timeout_raises_read_timeout_no_earlier_and_leaves_the_stream_dead(open_pair: Any) -> None:
    async def main() -> None:
        pair = await open_pair()
        start = monotonic()
        with pytest.raises(ReadTimeout):
            await pair.right.receive_some(timeout=TIMEOUT)
        elapsed = monotonic() - start
        assert elapsed >= TIMEOUT
        assert elapsed < HANG
        assert pair.right.timed_out
        with pytest.raises(ReadTimeout):
            await pair.right.receive_some(timeout=HANG)
        with pytest.raises(WriteTimeout):
            await pair.right.send_all(b"x", timeout=HANG)
        assert await pair.left.receive_some(timeout=HANG) == b"", "a timed-out stream is shut down"
        await pair.left.aclose()
        await pair.right.aclose()

    run(main())


def test_receive_deadline_is_absolute(open_pair: Any) -> None:
    async def main() -> None:
        pair = await open_pair()
        start = monotonic()
        with pytest.raises(ReadTimeout):
            await pair.right.receive_some(timeout=HANG, deadline=start + TIMEOUT)
        assert TIMEOUT <= monotonic() - start < HANG
        await pair.left.aclose()
        await pair.right.aclose()

    run(main())


def test_send_timeout_raises_write_timeout_when_the_peer_stops_reading(open_pair: Any) -> None:
    async def main() -> None:
        pair = await open_pair()
        start = monotonic()
        with pytest.raises(WriteTimeout):
            await pair.left.send_all(BIG_PAYLOAD, timeout=TIMEOUT)
        elapsed = monotonic() - start
        assert TIMEOUT <= elapsed < HANG
        assert pair.left.timed_out
        await pair.left.aclose()
        await pair.right.aclose()

    run(main())


def test_data_arriving_in_time_disarms_the_timeout(open_pair: Any) -> None:
    async def main() -> None:
        pair = await open_pair()
        receiver = await spawn(pair.right.receive_some(timeout=HANG))
        await until_parked(receiver)
        await pair.left.send_all(b"in time")
        assert await receiver.join() == b"in time"
        assert get_clock().armed == 0, "the timer of a finished receive stays armed"
        assert not pair.right.timed_out
        await pair.left.aclose()
        await pair.right.aclose()

    run(main())


# -- cancellation -----------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["flowno_io.cancel", "TaskHandle.cancel"])
@pytest.mark.parametrize("with_timeout", [False, True], ids=["no-timeout", "timeout"])
def test_cancelling_a_parked_receive_leaves_the_stream_usable_and_the_loop_exits(
    open_pair: Any, how: str, with_timeout: bool
) -> None:
    async def main() -> str:
        pair = await open_pair()
        receiver = await spawn(pair.right.receive_some(timeout=HANG if with_timeout else None))
        await until_parked(receiver)
        if how == "flowno_io.cancel":
            assert cancel(receiver)
        else:
            assert receiver.cancel()
        with pytest.raises(TaskCancelled):
            await receiver.join()
        assert get_clock().armed == 0, "the cancelled receive left its timer armed"
        assert not pair.right.timed_out
        await pair.left.send_all(b"after the cancel", timeout=HANG)
        assert await receive_exactly(pair.right, 16) == b"after the cancel"
        await pair.right.send_all(b"and back", timeout=HANG)
        assert await receive_exactly(pair.left, 8) == b"and back"
        await pair.left.aclose()
        await pair.right.aclose()
        return "exited"

    assert run(main()) == "exited"  # run() returns only once no task or record is left behind


def test_the_memory_stream_pair_is_public_in_flowno_io_testing() -> None:
    import flowno_io.testing

    assert {"memory_stream_pair", "MemoryStream"} <= set(flowno_io.testing.__all__)
    with pytest.raises(ValueError, match="max_buffer_bytes"):
        memory_stream_pair(max_buffer_bytes=0)
