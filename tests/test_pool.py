"""The connection pool on its own: hand-off, idle expiry, the per-host limit, stale connections.

The pool opens real loopback TCP connections (it calls ``open_tcp_stream``), so the peer is a small
keep-alive server in a thread that answers every request with ``200 ok`` and lets a test close or
write to its connections. Exchanges go through the pool's public :class:`Connection` API; no test
touches the pool's private state.
"""

from __future__ import annotations

import select
import socket
import struct
import threading
from collections.abc import Iterator
from time import monotonic

import pytest
from client_servers import read_request, response_bytes
from flowno import spawn
from helpers import HANG_TIMEOUT, connection_closed_by_peer, has_unread_data, until, until_parked, wait_for

from flowno_io import cancel, sleep
from flowno_io._errors import ClosedResourceError, PoolTimeout, RemoteProtocolError
from flowno_io.client.pool import RECEIVE_SIZE, Connection, ConnectionPool, Origin
from flowno_io.io.flowno_compat import TaskCancelled
from flowno_io.io.wakeup import Wakeup
from flowno_io.testing import run

REQUEST = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
TIMEOUT = 0.2


class KeepAliveServer:
    """Answers each request with ``200 ok`` on a kept-alive connection, one thread per connection."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections: list[socket.socket] = []
        self.accepted = 0
        self.ended = 0  # connections whose client closed (or that the test dropped)
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def origin(self) -> Origin:
        return ("http", "127.0.0.1", self.port)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            with self.lock:
                self.connections.append(conn)
                self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            while read_request(conn):
                conn.sendall(response_bytes(b"ok"))
        except OSError:
            pass
        finally:
            conn.close()
            with self.lock:
                self.ended += 1

    def drop_all(self) -> None:
        """Close every connection from the server's side (as a server's idle timeout does)."""
        with self.lock:
            for conn in self.connections:
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def reset_all(self) -> None:
        """Abort every connection with a reset (RST), as a crashed server's kernel does."""
        with self.lock:
            for conn in self.connections:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                conn.shutdown(socket.SHUT_RD)  # wakes its thread, whose close then resets

    def send_to_all(self, data: bytes) -> None:
        """Write ``data`` on every connection, unasked."""
        with self.lock:
            for conn in self.connections:
                conn.sendall(data)

    def close(self) -> None:
        self.listener.close()
        self.drop_all()


@pytest.fixture
def server() -> Iterator[KeepAliveServer]:
    server = KeepAliveServer()
    yield server
    server.close()


@pytest.fixture
def other_server() -> Iterator[KeepAliveServer]:
    server = KeepAliveServer()
    yield server
    server.close()


async def exchange(connection: Connection) -> bytes:
    """One request and its whole response on ``connection``; the body (the pool takes it back)."""
    await connection.send_request(REQUEST, None, write_timeout=HANG_TIMEOUT, deadline=None)
    parser = connection.start_response(head_request=False, max_header_bytes=65536)
    exchange = connection.exchanges
    await connection.receive_head(read_timeout=HANG_TIMEOUT, deadline=None)
    body = b""
    while chunk := await connection.receive_body(parser, exchange, read_timeout=HANG_TIMEOUT, deadline=None):
        body += chunk
    return body


# -- hand-off -----------------------------------------------------------------------------------


def test_a_connection_whose_response_was_read_to_the_end_is_reused(server: KeepAliveServer) -> None:
    async def main() -> None:
        pool = ConnectionPool()
        first = await pool.acquire(server.origin)
        assert pool.active_connections(server.origin) == 1
        assert await exchange(first) == b"ok"
        assert not first.in_use
        assert pool.idle_connections(server.origin) == 1
        assert pool.active_connections(server.origin) == 0
        second = await pool.acquire(server.origin)
        assert second is first
        assert second.requests == 1
        assert await exchange(second) == b"ok"
        assert pool.connections_opened == 1
        pool.close()

    run(main())
    assert server.accepted == 1


def test_an_aborted_connection_is_closed_not_reused(server: KeepAliveServer) -> None:
    async def main() -> None:
        pool = ConnectionPool()
        first = await pool.acquire(server.origin)
        first.abort()
        assert first.stream.closed
        assert pool.idle_connections() == 0
        assert pool.active_connections() == 0
        second = await pool.acquire(server.origin)
        assert second is not first
        assert await exchange(second) == b"ok"
        assert pool.connections_opened == 2
        pool.close()

    run(main())
    wait_for(lambda: server.ended >= 1, message="the server never saw the aborted connection close")


def test_a_released_connection_goes_straight_to_the_first_waiter(server: KeepAliveServer) -> None:
    async def main() -> None:
        pool = ConnectionPool(max_connections_per_host=1)
        held = await pool.acquire(server.origin)
        first = await spawn(pool.acquire(server.origin, pool_timeout=HANG_TIMEOUT))
        second = await spawn(pool.acquire(server.origin, pool_timeout=HANG_TIMEOUT))
        await until_parked(first)
        await until_parked(second)
        assert not first.is_finished and not second.is_finished, "a waiter got past a full pool"
        assert await exchange(held) == b"ok"  # released: handed over, not put idle
        assert pool.idle_connections() == 0
        handed = await first.join()
        assert handed is held and handed.in_use
        await until_parked(second)
        assert not second.is_finished, "the second waiter took a connection that was not free"
        assert await exchange(handed) == b"ok"
        assert await second.join() is held
        assert await exchange(held) == b"ok"
        assert pool.connections_opened == 1
        assert pool.idle_connections() == 1
        pool.close()

    run(main())


def test_an_aborted_connection_lets_the_first_waiter_open_a_new_one(server: KeepAliveServer) -> None:
    async def main() -> None:
        pool = ConnectionPool(max_connections_per_host=1)
        held = await pool.acquire(server.origin)
        waiter = await spawn(pool.acquire(server.origin, pool_timeout=HANG_TIMEOUT))
        await until_parked(waiter)
        held.abort()
        fresh = await waiter.join()
        assert fresh is not held
        assert await exchange(fresh) == b"ok"
        assert pool.connections_opened == 2
        assert pool.active_connections() == 0
        pool.close()

    run(main())


def test_a_cancelled_waiter_takes_nothing_with_it(server: KeepAliveServer) -> None:
    async def main() -> None:
        pool = ConnectionPool(max_connections_per_host=1)
        held = await pool.acquire(server.origin)
        waiter = await spawn(pool.acquire(server.origin, pool_timeout=HANG_TIMEOUT))
        await until_parked(waiter)
        assert cancel(waiter)
        with pytest.raises(TaskCancelled):
            await waiter.join()
        assert await exchange(held) == b"ok"
        assert pool.idle_connections() == 1, "the released connection went to the cancelled waiter"
        assert pool.active_connections() == 0
        assert await pool.acquire(server.origin) is held
        pool.close()

    run(main())


# -- limits -------------------------------------------------------------------------------------


def test_the_per_host_limit_makes_a_further_request_wait_until_the_pool_timeout(
    server: KeepAliveServer,
) -> None:
    async def main() -> None:
        pool = ConnectionPool(max_connections_per_host=2)
        held = [await pool.acquire(server.origin), await pool.acquire(server.origin)]
        assert pool.active_connections(server.origin) == 2
        start = monotonic()
        with pytest.raises(PoolTimeout):
            await pool.acquire(server.origin, pool_timeout=TIMEOUT)
        assert monotonic() - start >= TIMEOUT
        assert pool.connections_opened == 2
        for connection in held:
            assert await exchange(connection) == b"ok"
        assert pool.idle_connections() == 2, "a timed-out waiter was handed a connection"
        pool.close()

    run(main())


def test_the_per_host_limit_does_not_hold_back_another_host(
    server: KeepAliveServer, other_server: KeepAliveServer
) -> None:
    async def main() -> None:
        pool = ConnectionPool(max_connections_per_host=1)
        held = await pool.acquire(server.origin)
        other = await pool.acquire(other_server.origin, pool_timeout=TIMEOUT)  # no PoolTimeout
        assert pool.active_connections(server.origin) == 1
        assert pool.active_connections(other_server.origin) == 1
        assert pool.active_connections() == 2
        assert await exchange(held) == b"ok"
        assert await exchange(other) == b"ok"
        pool.close()

    run(main())


def test_no_per_host_limit_opens_a_connection_for_every_request(server: KeepAliveServer) -> None:
    async def main() -> None:
        pool = ConnectionPool(max_connections_per_host=None)
        held = [await pool.acquire(server.origin, pool_timeout=TIMEOUT) for _ in range(20)]
        assert pool.active_connections() == 20
        assert len({id(connection) for connection in held}) == 20
        for connection in held:
            assert await exchange(connection) == b"ok"
        assert pool.idle_connections() == 20
        pool.close()

    run(main())


@pytest.mark.parametrize("limit", [0, -1])
def test_a_per_host_limit_below_one_is_refused(limit: int) -> None:
    with pytest.raises(ValueError, match="max_connections_per_host"):
        ConnectionPool(max_connections_per_host=limit)


# -- idle expiry --------------------------------------------------------------------------------


def test_an_idle_connection_older_than_the_expiry_is_closed_instead_of_reused(
    server: KeepAliveServer,
) -> None:
    async def main() -> None:
        pool = ConnectionPool(keepalive_expiry=TIMEOUT)
        first = await pool.acquire(server.origin)
        assert await exchange(first) == b"ok"
        # Time passing is what is tested: any delay longer than the expiry must expire it.
        await sleep(TIMEOUT * 1.5)
        second = await pool.acquire(server.origin)
        assert second is not first
        assert first.stream.closed
        assert await exchange(second) == b"ok"
        assert pool.connections_opened == 2
        pool.close()

    run(main())
    wait_for(lambda: server.ended >= 1, message="the server never saw the expired connection close")


def test_releasing_a_connection_closes_the_idle_ones_that_expired_meanwhile(server: KeepAliveServer) -> None:
    async def main() -> None:
        pool = ConnectionPool(keepalive_expiry=TIMEOUT)
        old, young = await pool.acquire(server.origin), await pool.acquire(server.origin)
        assert await exchange(old) == b"ok"
        assert pool.idle_connections() == 1
        await sleep(TIMEOUT * 1.5)
        assert await exchange(young) == b"ok"  # its release sweeps the expired one
        assert pool.idle_connections() == 1
        assert old.stream.closed and not young.stream.closed
        pool.close()

    run(main())


def test_idle_connections_are_used_newest_first(server: KeepAliveServer) -> None:
    async def main() -> None:
        pool = ConnectionPool()
        a, b = await pool.acquire(server.origin), await pool.acquire(server.origin)
        assert await exchange(a) == b"ok"
        assert await exchange(b) == b"ok"
        assert await pool.acquire(server.origin) is b
        pool.close()

    run(main())


def test_acquire_idle_hands_out_only_an_idle_connection_fit_for_reuse(server: KeepAliveServer) -> None:
    async def main() -> None:
        pool = ConnectionPool()
        assert pool.acquire_idle(server.origin) is None  # none yet: it never opens one
        first = await pool.acquire(server.origin)
        assert pool.acquire_idle(server.origin) is None  # in use
        assert await exchange(first) == b"ok"
        assert pool.acquire_idle(server.origin) is first
        assert await exchange(first) == b"ok"
        server.drop_all()
        await until(
            lambda: connection_closed_by_peer(first.stream.sock),  # type: ignore[union-attr]
            message="the server's close never reached the client",
        )
        assert pool.acquire_idle(server.origin) is None
        assert first.stream.closed and pool.idle_connections() == 0
        pool.close()
        with pytest.raises(ClosedResourceError):
            pool.acquire_idle(server.origin)

    run(main())


# -- stale connections --------------------------------------------------------------------------


def test_an_idle_connection_the_server_closed_is_not_picked(server: KeepAliveServer) -> None:
    async def main() -> None:
        pool = ConnectionPool()
        first = await pool.acquire(server.origin)
        assert await exchange(first) == b"ok"
        server.drop_all()
        await until(
            lambda: connection_closed_by_peer(first.stream.sock),  # type: ignore[union-attr]
            message="the server's close never reached the client",
        )
        second = await pool.acquire(server.origin)
        assert second is not first
        assert first.stream.closed
        assert await exchange(second) == b"ok"
        assert pool.connections_opened == 2
        pool.close()

    run(main())


def test_an_idle_connection_the_server_reset_is_not_picked(server: KeepAliveServer) -> None:
    async def main() -> None:
        pool = ConnectionPool()
        first = await pool.acquire(server.origin)
        assert await exchange(first) == b"ok"
        server.reset_all()
        sock = first.stream.sock  # type: ignore[union-attr]
        await until(
            lambda: bool(select.select([sock], [], [], 0)[0]),  # (not consuming the error)
            message="the reset never reached the client",
        )
        second = await pool.acquire(server.origin)
        assert second is not first
        assert first.stream.closed
        assert await exchange(second) == b"ok"
        pool.close()

    run(main())


def test_an_idle_connection_with_unasked_bytes_is_not_picked(server: KeepAliveServer) -> None:
    async def main() -> None:
        pool = ConnectionPool()
        first = await pool.acquire(server.origin)
        assert await exchange(first) == b"ok"
        server.send_to_all(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")
        sock = first.stream.sock  # type: ignore[union-attr]
        await until(lambda: has_unread_data(sock), message="the unasked bytes never arrived")
        second = await pool.acquire(server.origin)
        assert second is not first, "a response nobody asked for would be read as the next one"
        assert first.stream.closed
        assert await exchange(second) == b"ok"
        pool.close()

    run(main())


def test_an_idle_connection_with_bytes_nobody_asked_for_is_not_reused(
    server: KeepAliveServer, other_server: KeepAliveServer
) -> None:
    async def main() -> None:
        pool = ConnectionPool()
        first = await pool.acquire(server.origin)
        other = await pool.acquire(other_server.origin)
        assert await exchange(first) == b"ok"
        server.send_to_all(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n")
        sock = first.stream.sock  # type: ignore[union-attr]
        await until(lambda: has_unread_data(sock), message="the unasked bytes never arrived")
        assert await exchange(other) == b"ok"
        second = await pool.acquire(server.origin)
        assert second is not first, "a response nobody asked for would be read as the next one"
        assert first.stream.closed
        assert await exchange(second) == b"ok"
        pool.close()

    run(main())


# -- closing ------------------------------------------------------------------------------------


def test_closing_the_pool_fails_waiters_and_later_acquires(server: KeepAliveServer) -> None:
    async def main() -> None:
        pool = ConnectionPool(max_connections_per_host=1)
        held = await pool.acquire(server.origin)
        waiter = await spawn(pool.acquire(server.origin, pool_timeout=HANG_TIMEOUT))
        await until_parked(waiter)
        pool.close()
        with pytest.raises(ClosedResourceError):
            await waiter.join()
        with pytest.raises(ClosedResourceError):
            await pool.acquire(server.origin)
        held.abort()
        assert held.stream.closed
        assert pool.active_connections() == 0

    run(main())


# -- waiting for the response -------------------------------------------------------------------


def test_a_response_arriving_while_the_clock_task_starts_is_not_lost() -> None:
    """The first timed read of a loop starts the clock task, a spawn that lets other tasks run
    between the read's look at the socket and its wait. Here the response arrives then, and the
    reactor's leader (another connection's reader) polls the edge-triggered epoll before the read
    waits: the edge goes to nobody. The read must look again, not wait for an edge that has passed
    (which ended in a ReadTimeout). The order is forced through the loop's FIFO of ready tasks.
    """
    listener = socket.create_server(("127.0.0.1", 0))
    origin: Origin = ("http", "127.0.0.1", listener.getsockname()[1])
    peers: list[socket.socket] = []

    async def main() -> tuple[bytes, bytes]:
        pool = ConnectionPool()
        first = await pool.acquire(origin)
        second = await pool.acquire(origin)
        peers.extend(listener.accept()[0] for _ in range(2))  # (in connect order)
        go_read, go_answer = Wakeup(), Wakeup()

        async def lead() -> bytes:  # reads the second connection, untimed: it leads the reactor
            await second.send_request(REQUEST, None, write_timeout=None, deadline=None)
            parser = second.start_response(head_request=False, max_header_bytes=65536)
            await second.receive_head(read_timeout=None, deadline=None)
            return parser.take_body()

        async def read() -> bytes:  # the timed read that starts the clock
            await go_read.wait()
            await first.send_request(REQUEST, None, write_timeout=None, deadline=None)
            parser = first.start_response(head_request=False, max_header_bytes=65536)
            await first.receive_head(read_timeout=HANG_TIMEOUT / 4, deadline=None)
            return parser.take_body()

        async def answer() -> None:  # runs after read's look, before the leader's poll
            await go_answer.wait()
            peers[0].sendall(response_bytes(b"first"))

        leader = await spawn(lead())
        await until_parked(leader)
        reader, answerer = await spawn(read()), await spawn(answer())
        await until_parked(reader)
        await until_parked(answerer)
        peers[1].sendall(response_bytes(b"second"))  # the leader's epoll is ready: it is queued next
        go_read.set()  # queued before it: read, then answer
        go_answer.set()
        return await reader.join(), await leader.join()

    try:
        assert run(main()) == (b"first", b"second")
    finally:
        listener.close()
        for peer in peers:
            peer.close()


def test_bytes_left_by_a_read_that_filled_its_buffer_are_read_without_a_new_edge() -> None:
    """The reactor's epoll reports an arrival once (edge-triggered), and a connection reads
    without looking at its socket unless a poll reported it since its last read. A read that
    filled its buffer may leave bytes behind that no later edge announces: the next read must
    take them, not wait (which ended in a ReadTimeout)."""
    listener = socket.create_server(("127.0.0.1", 0))
    origin: Origin = ("http", "127.0.0.1", listener.getsockname()[1])
    peers: list[socket.socket] = []
    body = b"x" * (RECEIVE_SIZE + 40_000)

    async def main() -> bytes:
        pool = ConnectionPool()
        connection = await pool.acquire(origin)
        peers.append(listener.accept()[0])
        await connection.send_request(REQUEST, None, write_timeout=None, deadline=None)
        read_request(peers[0])
        # All of it in the client's receive buffer (~128 KiB fit) before its first read.
        peers[0].sendall(response_bytes(body))
        parser = connection.start_response(head_request=False, max_header_bytes=65536)
        exchange = connection.exchanges
        await connection.receive_head(read_timeout=HANG_TIMEOUT / 4, deadline=None)
        received = parser.take_body()
        while chunk := await connection.receive_body(
            parser, exchange, read_timeout=HANG_TIMEOUT / 4, deadline=None
        ):
            received += chunk
        pool.close()
        return received

    try:
        assert run(main()) == body
    finally:
        listener.close()
        for peer in peers:
            peer.close()


def test_an_end_of_stream_that_came_with_the_last_bytes_is_read_without_a_new_edge() -> None:
    """Bytes and then the end of the stream, both there before the reactor's poll: the poll
    reports them once, the read takes the bytes, and the end stays unread with no edge to come.
    The next read must find it (a ``RemoteProtocolError``), not wait (a ReadTimeout)."""
    listener = socket.create_server(("127.0.0.1", 0))
    origin: Origin = ("http", "127.0.0.1", listener.getsockname()[1])

    async def main() -> None:
        pool = ConnectionPool()
        connection = await pool.acquire(origin)
        peer = listener.accept()[0]
        await connection.send_request(REQUEST, None, write_timeout=None, deadline=None)
        read_request(peer)
        peer.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort")
        peer.close()  # (before the client reads anything)
        parser = connection.start_response(head_request=False, max_header_bytes=65536)
        exchange = connection.exchanges
        try:
            await connection.receive_head(read_timeout=HANG_TIMEOUT / 4, deadline=None)
            while await connection.receive_body(
                parser, exchange, read_timeout=HANG_TIMEOUT / 4, deadline=None
            ):
                pass
        finally:
            pool.close()

    try:
        with pytest.raises(RemoteProtocolError, match="before the end of the response body"):
            run(main())
    finally:
        listener.close()
