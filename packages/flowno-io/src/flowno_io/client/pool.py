"""Keep-alive connections: the pool per (scheme, host, port) and one HTTP/1.1 exchange on each.

A :class:`ConnectionPool` hands out :class:`Connection` s. A connection goes back to the pool only
after its response was read to the end with framing that allows reuse; otherwise it is closed.
Idle connections are used newest first, dropped after ``keepalive_expiry`` seconds, and checked
without waiting before every reuse, so one the server closed, or sent bytes nobody asked for on
(a 408, say), is not picked. (Skipping the check for a connection released moments ago was tried
and dropped: nothing guarantees a poll has seen such bytes in that moment, and they would be read
as the next response.) For plain TCP the check is a zero-timeout ``poll`` of the one socket, not
a ``recv`` that fails with ``EAGAIN``: same answer, same syscall count, without the exception
(~7,000 instructions); after the send, a plain connection reads only if the reactor saw its
socket ready since its last read (``client/reactor.py``). A connection has one
:class:`ResponseParser` for all its responses: an exchange is known by its number.

At most ``max_connections_per_host`` connections exist per origin; further requests wait in FIFO
order, and a released connection is handed straight to the first waiter. There is no background
task: expiry is checked when connections are taken or returned, and waiting uses a
:class:`~flowno_io._wakeup.Wakeup` (set without awaiting by the releasing task) with a
:mod:`flowno_io._clock` timer for the pool timeout. Plain-TCP connections wait for response bytes
through the pool's :class:`~flowno_io._reactor.Reactor` (one flowno wait for all of them); TLS
connections wait through their stream.
"""

from __future__ import annotations

import select
import socket as _socket
import ssl
from collections import deque
from collections.abc import AsyncIterable
from time import monotonic
from typing import NoReturn, Protocol, TypeAlias

from .._errors import (
    ClosedResourceError,
    ConnectError,
    ConnectTimeout,
    HttpError,
    LocalProtocolError,
    PoolTimeout,
    ReadError,
    ReadTimeout,
    TotalTimeout,
    WriteTimeout,
)
from ..io.clock import Timer, get_clock
from ..io.socket_stream import SocketStream, describe_os_error, open_tcp_stream
from ..io.tls_stream import TlsStream
from ..io.wakeup import Wakeup
from ..protocol.http11_client import CHUNKED_END, ResponseParser, encode_chunk
from .multipart import SizedBody
from .proxy import Proxy, open_tunnel
from .reactor import Reactor, ReadWaiter

__all__ = [
    "DEFAULT_KEEPALIVE_EXPIRY",
    "DEFAULT_MAX_CONNECTIONS_PER_HOST",
    "Connection",
    "ConnectionPool",
    "Origin",
    "RequestBody",
    "Transport",
    "ssl_context_for",
]

#: Connections per (scheme, host, port); httpx and aiohttp default to 100 (in total).
DEFAULT_MAX_CONNECTIONS_PER_HOST = 100
#: Seconds an idle connection is kept (httpx: 5; servers commonly close idle ones after 5-75 s).
DEFAULT_KEEPALIVE_EXPIRY = 5.0
#: Bytes asked of the kernel per receive.
RECEIVE_SIZE = 64 * 1024
#: A request body up to this size is sent in the same ``send`` as the head.
_COALESCE_BYTES = 64 * 1024
#: What a connection's zero-timeout poll asks for (errors and hang-ups are always reported).
_POLL_READABLE = select.POLLIN

#: ``(scheme, host, port)``
Origin: TypeAlias = tuple[str, str, int]


#: What a request body may be: nothing, bytes, or chunks from an async iterable (sent chunked).
class Transport(Protocol):
    """Where a pool gets a connection instead of the network (``flowno_io.testing.MockTransport``)."""

    async def open_stream(self, origin: Origin) -> SocketStream:
        """A connected byte stream to ``origin`` (plain, even for https)."""
        ...


RequestBody: TypeAlias = "bytes | SizedBody | AsyncIterable[bytes] | None"
Stream: TypeAlias = SocketStream | TlsStream


def _peer_gone(stream: Stream) -> bool:
    """Without waiting: has the server closed this idle connection (or sent unasked bytes)?

    (For TLS, and plain streams without a poll; see :meth:`Connection.peer_gone`.)
    """
    if isinstance(stream, TlsStream):
        return stream.peer_gone()
    try:
        stream.sock.recv(1, _socket.MSG_PEEK)
    except BlockingIOError:
        return False
    except OSError:
        return True
    return True


def _limit(timeout: float | None, deadline: float | None) -> float | None:
    """The smaller of ``timeout`` and the time left until ``deadline``."""
    if deadline is None:
        return timeout
    left = max(0.0, deadline - monotonic())
    return left if timeout is None else min(timeout, left)


def _expired(deadline: float | None) -> bool:
    return deadline is not None and monotonic() >= deadline


class Connection:
    """One HTTP/1.1 connection of a pool, carrying one request at a time.

    The client drives an exchange: :meth:`send_request`, :meth:`receive_head`, then
    :meth:`receive_body` until it returns ``b""`` (the connection is then back in the pool).
    Any error closes the connection; :meth:`abort` closes it on purpose (e.g. a stream the user
    stopped reading).
    """

    __slots__ = (
        "_host",
        "_poll",
        "_pool",
        "_timed_out",
        "_timer",
        "_waiter",
        "exchange",
        "exchanges",
        "idle_since",
        "in_use",
        "origin",
        "parser",
        "requests",
        "stream",
    )

    def __init__(
        self,
        pool: ConnectionPool,
        host: _HostPool,
        origin: Origin,
        stream: Stream,
        waiter: ReadWaiter | None = None,
    ) -> None:
        self._pool = pool
        self._host = host
        self.origin = origin
        self.stream = stream
        # Plain TCP connections wait for responses through the pool's reactor (see client/reactor.py).
        self._waiter = waiter
        # ... and check an idle one before reuse through a poll of its socket alone (see peer_gone).
        self._poll: select.poll | None = None
        if waiter is not None:
            self._poll = select.poll()
            self._poll.register(waiter.fd, _POLL_READABLE)
        self._timer: Timer | None = None
        self._timed_out = False
        # Made on the first response, reused for the next ones, dropped when the connection closes.
        self.parser: ResponseParser | None = None
        #: Exchanges started (by :meth:`start_response`), and the number of the one holding the
        #: connection now (0: none): whose a response is (a response kept from an earlier
        #: exchange must not read or release a later one's; the parser is the same object).
        self.exchanges = 0
        self.exchange = 0
        #: Requests sent on this connection before the current one.
        self.requests = 0
        self.idle_since = 0.0
        self.in_use = True

    # -- one exchange -----------------------------------------------------------------------

    def send_nowait(self, head: bytes, deadline: float | None) -> int:
        """Send what the kernel takes of a bodiless request's ``head`` now; how many bytes it took.

        For plain TCP only (0 otherwise): the caller passes the rest to :meth:`send_request`.
        """
        if self._waiter is None:
            return 0
        try:
            return self.stream.send_nowait(head)  # type: ignore[union-attr]
        except BaseException as exc:
            self._fail(exc, deadline)

    async def send_request(
        self, head: bytes, body: RequestBody, *, write_timeout: float | None, deadline: float | None
    ) -> None:
        """Send the request head and body (an async iterable is sent with chunked framing)."""
        stream = self.stream
        try:
            if body is None:
                if self._waiter is not None:  # plain TCP: try the send here (no coroutine)
                    sent = stream.send_nowait(head)  # type: ignore[union-attr]
                    if sent == len(head):
                        return
                    head = head[sent:]
                await stream.send_all(head, timeout=_limit(write_timeout, deadline))
            elif isinstance(body, bytes):
                if len(body) <= _COALESCE_BYTES:
                    await stream.send_all(head + body, timeout=_limit(write_timeout, deadline))
                else:
                    await stream.send_all(head, timeout=_limit(write_timeout, deadline))
                    await stream.send_all(body, timeout=_limit(write_timeout, deadline))
            elif isinstance(body, SizedBody):
                await stream.send_all(head, timeout=_limit(write_timeout, deadline))
                sent = 0
                async for chunk in body:
                    sent += len(chunk)
                    if sent > body.length:
                        break
                    await stream.send_all(chunk, timeout=_limit(write_timeout, deadline))
                    if _expired(deadline):
                        raise TotalTimeout("request took longer than the total timeout")
                if sent != body.length:  # a file changed size while it was sent
                    raise LocalProtocolError(f"request body was {sent} bytes, announced {body.length}")
            else:
                await stream.send_all(head, timeout=_limit(write_timeout, deadline))
                async for chunk in body:
                    if chunk:
                        await stream.send_all(encode_chunk(chunk), timeout=_limit(write_timeout, deadline))
                    if _expired(deadline):
                        raise TotalTimeout("request took longer than the total timeout")
                await stream.send_all(CHUNKED_END, timeout=_limit(write_timeout, deadline))
        except BaseException as exc:
            self.abort()
            translated = self._translate(exc, deadline)
            if translated is exc:
                raise  # (a cancellation passes through unchanged)
            raise translated from exc

    def start_response(self, *, head_request: bool, max_header_bytes: int) -> ResponseParser:
        """The parser, made ready for the response to the request just sent.

        The exchange's number is then :attr:`exchanges`: the token :meth:`receive_body`,
        :meth:`take_complete_body`, :meth:`finish_nowait` and :meth:`owns` take (read it before
        any ``await``: the connection may serve the next exchange as soon as this one ends).
        """
        parser = self.parser
        if parser is not None:
            parser.next_response(head_request=head_request, max_header_bytes=max_header_bytes)
        else:
            parser = self.parser = ResponseParser(
                head_request=head_request, max_header_bytes=max_header_bytes, persistent=True
            )
        self.exchange = self.exchanges = self.exchanges + 1
        return parser

    async def _receive(
        self, parser: ResponseParser, read_timeout: float | None, deadline: float | None
    ) -> None:
        try:
            if self._waiter is None:
                data = await self.stream.receive_some(RECEIVE_SIZE, timeout=read_timeout, deadline=deadline)
            else:
                data = await self._receive_plain(self._waiter, read_timeout, deadline)
        except BaseException as exc:
            self._fail(exc, deadline)
        self._feed(parser, data, deadline)

    def _feed(self, parser: ResponseParser, data: bytes, deadline: float | None) -> None:
        """Give the parser what a read brought (``b""``: the end of the stream)."""
        try:
            if data:
                parser.feed(data)
            else:
                parser.feed_eof()
        except BaseException as exc:
            self._fail(exc, deadline)

    def _fail(self, exc: BaseException, deadline: float | None) -> NoReturn:
        """Abort the connection and raise ``exc`` as the client's error for it."""
        self.abort()
        translated = self._translate(exc, deadline)
        if translated is exc:
            raise exc  # (a cancellation passes through unchanged)
        raise translated from exc

    def peer_gone(self) -> bool:
        """Without waiting: has the server closed this idle connection (or sent unasked bytes)?"""
        stream = self.stream
        if stream.closed:
            return True
        poll = self._poll
        if poll is None:
            return _peer_gone(stream)
        # Any event (bytes, end of stream, an error, a hang-up) is what a MSG_PEEK recv would
        # have returned or raised: the connection is not picked.
        return bool(poll.poll(0))

    async def _receive_plain(
        self, waiter: ReadWaiter, read_timeout: float | None, deadline: float | None
    ) -> bytes:
        """``SocketStream.receive_some`` with the wait done by the pool's reactor.

        Reads at once if a poll saw the socket ready since the last read (the waiter's flag), else
        waits without looking: any arrival since is an edge the edge-triggered epoll reported (the
        flag) or will report (the wait).
        """
        stream = self.stream
        if stream.closed:
            raise ClosedResourceError("stream is closed")
        sock = stream.sock
        if waiter.ready:
            data = self._recv(waiter, sock)
            if data is not None:
                return data
        limit = deadline
        if read_timeout is not None:
            expiry = monotonic() + read_timeout
            limit = expiry if limit is None else min(limit, expiry)
        timer = None
        try:
            if limit is not None:
                timer = self._timer
                if timer is None:
                    timer = self._timer = get_clock().timer(self._on_deadline)
                if not timer.set_deadline(limit):
                    # Starts the clock task (a cancel may land here). That spawn lets other tasks
                    # run: an edge a poll saw meanwhile is in the flag (the wait returns at once).
                    await timer.arm_at(limit)
            reactor = self._pool._reactor
            while True:
                await reactor.wait_readable(waiter)
                if self._timed_out:  # (its timer shut the socket down: a recv would say "closed")
                    raise ReadTimeout("timed out waiting for data")
                data = self._recv(waiter, sock)
                if data is not None:
                    return data
        finally:
            if timer is not None:
                timer.disarm()

    @staticmethod
    def _recv(waiter: ReadWaiter, sock: _socket.socket) -> bytes | None:
        """What the socket holds (``b""``: its end), ``None`` if nothing (the flag was stale)."""
        waiter.ready = waiter.ended  # (cleared before: an edge after it sets it; see ReadWaiter)
        try:
            data = sock.recv(RECEIVE_SIZE)
        except BlockingIOError:
            return None
        except OSError as exc:
            raise ReadError(f"receive failed: {exc}") from exc
        if len(data) == RECEIVE_SIZE:
            waiter.ready = True  # more may be there: no edge will say so
        return data

    def _on_deadline(self) -> None:
        self._timed_out = True
        self.stream.shutdown()  # makes the socket ready: its waiter wakes and sees the flag

    async def receive_head(self, *, read_timeout: float | None, deadline: float | None) -> ResponseParser:
        """Read until the response head is complete and return the parser holding it."""
        parser = self.parser
        if parser is None:
            raise RuntimeError("start_response() first")
        waiter = self._waiter
        while not parser.headers_complete:
            if waiter is None:
                await self._receive(parser, read_timeout, deadline)
                continue
            try:  # (_receive, one coroutine less: this is where most requests wait)
                data = await self._receive_plain(waiter, read_timeout, deadline)
            except BaseException as exc:
                self._fail(exc, deadline)
            self._feed(parser, data, deadline)
        if parser.message_complete and not parser.has_body_data:
            self.release()
        return parser

    async def receive_body(
        self, parser: ResponseParser, exchange: int, *, read_timeout: float | None, deadline: float | None
    ) -> bytes:
        """The next body bytes of exchange number ``exchange`` (de-chunked, still content-encoded).

        Returns ``b""`` at the end; the connection then goes back to the pool (or closes if it
        cannot be reused). An exchange that already ended gets ``b""`` too.
        """
        while True:
            if self.exchange != exchange:  # (ended: the parser may be reading another response)
                return b""
            if parser.has_body_data:
                data = parser.take_body()
                if parser.message_complete:
                    self.release()
                return data
            if parser.message_complete:
                self.release()
                return b""
            await self._receive(parser, read_timeout, deadline)

    def take_complete_body(self, parser: ResponseParser, exchange: int) -> bytes:
        """All the body of exchange ``exchange``'s complete response (still content-encoded); the
        connection goes back to the pool (or closes). What :meth:`receive_body` returns until
        ``b""``, joined (``b""`` if the exchange already ended)."""
        if self.exchange != exchange:
            return b""
        if not parser.message_complete:
            raise RuntimeError("the response is not complete")
        body = parser.take_body()
        self.release()
        return body

    def finish_nowait(self, parser: ResponseParser, exchange: int) -> None:
        """Stop reading exchange ``exchange``: reuse the connection if the rest already arrived.

        Parses what the kernel already holds (never waits); a response complete by then frees
        the connection for reuse, any other is abandoned (the connection closes).
        """
        if self.exchange != exchange:
            return
        stream = self.stream
        if not parser.message_complete and isinstance(stream, SocketStream):
            try:
                data = stream.sock.recv(RECEIVE_SIZE)
                if data:
                    parser.feed(data)
                else:
                    parser.feed_eof()
            except (OSError, HttpError):  # nothing there yet (BlockingIOError), or broken
                pass
        if parser.message_complete:
            parser.take_body()
            self.release()
        else:
            self.abort()

    def _translate(self, exc: BaseException, deadline: float | None) -> BaseException:
        if isinstance(exc, ReadTimeout | WriteTimeout) and _expired(deadline):
            return TotalTimeout("request took longer than the total timeout")
        if isinstance(exc, HttpError) and self._pool.closed:  # close() shut the socket down
            return ClosedResourceError("the client was closed")
        return exc

    # -- ending -----------------------------------------------------------------------------

    def release(self) -> None:
        """The exchange is over: back to the pool if the response allows reuse, else close."""
        if self.in_use:
            self.in_use = False
            self.exchange = 0
            parser = self.parser
            reusable = parser is not None and parser.reusable
            if reusable:
                self.requests += 1
            self._pool._release(self, reusable)

    def abort(self) -> None:
        """Close the connection now (its response is abandoned) and free its pool slot.

        Does nothing once the exchange has ended (the connection may already serve another).
        """
        if self.in_use:
            self.in_use = False
            self.exchange = 0
            self.close()
            self._pool._release(self, False)

    def close(self) -> None:
        """Close the socket and drop the parser (its httptools parser refers back to it: a
        cycle that would wait for the cyclic GC)."""
        self.stream.close()
        waiter = self._waiter
        reactor = self._pool._reactor_instance
        if waiter is not None and reactor is not None:
            reactor.forget(waiter)
        parser = self.parser
        if parser is not None:
            self.parser = None
            parser.close()

    def owns(self, exchange: int) -> bool:
        """True while exchange number ``exchange`` still holds this connection."""
        return self.exchange == exchange


class _Waiter:
    """A request waiting for a connection: handed one, granted a slot, or expired."""

    __slots__ = ("connection", "done", "expired", "granted", "host", "wakeup")

    def __init__(self) -> None:
        self.host: _HostPool | None = None
        self.wakeup = Wakeup()
        self.connection: Connection | None = None
        self.granted = False  # a slot to open a new connection
        self.done = False  # out of the queue: handed a connection or a slot, or the pool closed
        self.expired = False  # the pool timeout passed

    def expire(self) -> None:
        self.expired = True
        self.wakeup.set()


class _HostPool:
    __slots__ = ("active", "idle", "proxy", "waiters")

    def __init__(self) -> None:
        self.idle: list[Connection] = []  # oldest first
        self.active = 0  # connections in use or being opened
        self.waiters: deque[_Waiter] = deque()
        self.proxy: Proxy | None = None  # connections go through it


class ConnectionPool:
    """Keep-alive connections per ``(scheme, host, port)``.

    Args:
        ssl_context: the context for ``https`` origins (created on first use when ``None``).
        max_connections_per_host: connections per origin, in use or idle (``None``: no limit).
        max_connections: connections in all, in use or idle (``None``: no limit); at the limit an
            idle connection to another origin is closed to make room, else the request waits
            (``pool_timeout``) for one to close.
        keepalive_expiry: seconds an idle connection is kept.
    """

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        max_connections_per_host: int | None = DEFAULT_MAX_CONNECTIONS_PER_HOST,
        keepalive_expiry: float = DEFAULT_KEEPALIVE_EXPIRY,
        transport: Transport | None = None,
        max_connections: int | None = None,
        local_address: str | None = None,
    ) -> None:
        if max_connections is not None and max_connections < 1:
            raise ValueError("max_connections must be >= 1 or None")
        if max_connections_per_host is not None and max_connections_per_host < 1:
            raise ValueError("max_connections_per_host must be >= 1 or None")
        self.ssl_context = ssl_context
        self.max_connections_per_host = max_connections_per_host
        self.keepalive_expiry = keepalive_expiry
        self.transport = transport
        self.max_connections = max_connections
        self.local_address = local_address
        # Connections open or being opened, idle ones included (counted only with max_connections),
        # and the requests waiting because that many are open (FIFO, whatever their host).
        self._slots = 0
        self._slot_waiters: deque[_Waiter] = deque()
        # Keyed by the origin, or for proxied connections by (origin or "proxy", proxy).
        self._hosts: dict[object, _HostPool] = {}
        self._in_use: set[Connection] = set()
        self._reactor_instance: Reactor | None = None
        self.closed = False
        #: Connections opened so far (for tests and stats).
        self.connections_opened = 0

    @property
    def _reactor(self) -> Reactor:
        reactor = self._reactor_instance
        if reactor is None:
            reactor = self._reactor_instance = Reactor()
        return reactor

    # -- taking -----------------------------------------------------------------------------

    async def acquire(
        self,
        origin: Origin,
        *,
        connect_timeout: float | None = None,
        pool_timeout: float | None = None,
        deadline: float | None = None,
        proxy: Proxy | None = None,
    ) -> Connection:
        """A connection to ``origin``: an idle one, a new one, or the next one released.

        Through ``proxy``, an http origin shares the connections to the proxy (requests are
        forwarded), an https origin gets its own ``CONNECT`` tunnels.

        Raises:
            PoolTimeout: none became free within ``pool_timeout``.
            TotalTimeout: ``deadline`` passed first.
            ConnectError, ConnectTimeout: opening a new connection failed.
            ClosedResourceError: the pool is closed.
        """
        connection = self.acquire_idle(origin, proxy)
        if connection is not None:
            return connection
        host = self._host(origin, proxy)
        limit = self.max_connections_per_host
        if limit is None or host.active < limit:
            if self.max_connections is not None and not self._take_slot(host, self.max_connections):
                return await self._wait(
                    origin, host, connect_timeout, pool_timeout, deadline, self._slot_waiters
                )
            host.active += 1
            return await self._open(origin, host, connect_timeout, deadline)
        return await self._wait(origin, host, connect_timeout, pool_timeout, deadline, host.waiters)

    def acquire_idle(self, origin: Origin, proxy: Proxy | None = None) -> Connection | None:
        """An idle connection to ``origin`` still fit for reuse, or ``None`` (never waits).

        What :meth:`acquire` does first; callers try it to skip a coroutine on the common path.

        Raises:
            ClosedResourceError: the pool is closed.
        """
        if self.closed:
            raise ClosedResourceError("the client was closed")
        host = self._host(origin, proxy)
        idle = host.idle
        while idle:
            connection = idle.pop()
            if monotonic() - connection.idle_since > self.keepalive_expiry or connection.peer_gone():
                connection.close()
                self._slot_freed()
                continue
            connection.in_use = True
            host.active += 1
            self._in_use.add(connection)
            return connection
        return None

    def _host(self, origin: Origin, proxy: Proxy | None) -> _HostPool:
        key: object = origin
        if proxy is not None:
            key = (origin if origin[0] == "https" else "proxy", proxy)
        host = self._hosts.get(key)
        if host is None:
            host = self._hosts[key] = _HostPool()
            host.proxy = proxy
        return host

    def _take_slot(self, host: _HostPool, max_connections: int) -> bool:
        """Count one more connection against ``max_connections``, closing the oldest idle
        connection of another origin if that is what it takes; ``False`` if none can be had."""
        if self._slots >= max_connections:
            oldest: _HostPool | None = None
            for other in self._hosts.values():
                if other is host or not other.idle:
                    continue
                if oldest is None or other.idle[0].idle_since < oldest.idle[0].idle_since:
                    oldest = other
            if oldest is None:
                return False
            oldest.idle.pop(0).close()
            self._slots -= 1
        self._slots += 1
        return True

    def _slot_freed(self) -> None:
        """A connection closed for good (no waiter of its host took its place)."""
        if self.max_connections is None:
            return
        self._slots -= 1
        limit = self.max_connections_per_host
        while self._slot_waiters and self._slots < self.max_connections:
            waiter = self._slot_waiters.popleft()
            if waiter.done:
                continue
            waiter.done = True
            host = waiter.host
            if host is None:
                continue
            if not self.closed:
                if limit is not None and host.active >= limit:  # its host filled up meanwhile
                    waiter.done = False
                    host.waiters.append(waiter)
                    continue
                waiter.granted = True
                host.active += 1
                self._slots += 1
            waiter.wakeup.set()

    async def _wait(
        self,
        origin: Origin,
        host: _HostPool,
        connect_timeout: float | None,
        pool_timeout: float | None,
        deadline: float | None,
        queue: deque[_Waiter],
    ) -> Connection:
        waiter = _Waiter()
        waiter.host = host
        timer = None
        queue.append(waiter)
        try:
            wait_limit = _limit(pool_timeout, deadline)
            if wait_limit is not None:
                timer = get_clock().timer(waiter.expire)
                await timer.arm(wait_limit)  # may start the clock task: a cancel may land here
            while not (waiter.done or waiter.expired):
                await waiter.wakeup.wait()  # (a stale wake-up of a cancel just loops)
        except BaseException:
            # Cancelled while waiting: pass on whatever was handed over meanwhile.
            connection = waiter.connection
            if connection is not None:
                waiter.connection = None
                connection.in_use = False
                self._release(connection, not connection.stream.closed)
            elif waiter.granted:
                waiter.granted = False
                host.active -= 1
                self._grant_or_idle(host)
            raise
        finally:
            if timer is not None:
                timer.disarm()
            if not waiter.done:  # timed out (or cancelled): leave the queue
                waiter.done = True
                for waiting in (host.waiters, self._slot_waiters):  # (it may have moved)
                    if waiter in waiting:
                        waiting.remove(waiter)
        if waiter.connection is not None:
            return waiter.connection
        if waiter.granted:
            return await self._open(origin, host, connect_timeout, deadline)
        if self.closed:
            raise ClosedResourceError("the client was closed")
        if _expired(deadline):
            raise TotalTimeout("request took longer than the total timeout")
        raise PoolTimeout(f"no connection to {origin[1]}:{origin[2]} became free in time")

    async def _open(
        self, origin: Origin, host: _HostPool, connect_timeout: float | None, deadline: float | None
    ) -> Connection:
        """Open a connection in the slot already counted in ``host.active`` (freed on failure).

        Raises:
            ConnectError: refused, unreachable, TLS failed, or no descriptor left (EMFILE).
        """
        scheme, hostname, port = origin
        stream: Stream | None = None
        proxy = host.proxy
        try:
            timeout = _limit(connect_timeout, deadline)
            if self.transport is not None:  # (a test double: no network, no TLS)
                stream = await self.transport.open_stream(origin)
                proxy, scheme = None, "http"
            elif proxy is None:
                stream = await open_tcp_stream(
                    hostname, port, connect_timeout=timeout, local_address=self.local_address
                )
            else:
                stream = await open_tcp_stream(proxy.host, proxy.port, connect_timeout=timeout)
                if scheme == "https":
                    try:
                        await open_tunnel(
                            stream,
                            proxy,
                            hostname,
                            port,
                            deadline=None if timeout is None else monotonic() + timeout,
                        )
                    except (ReadTimeout, WriteTimeout) as exc:
                        raise ConnectTimeout(
                            f"CONNECT to {hostname}:{port} through the proxy timed out"
                        ) from exc
            if scheme == "https":
                context = self.ssl_context
                if context is None:
                    context = self.ssl_context = ssl.create_default_context()
                stream = TlsStream(stream, context, hostname)
                await stream.do_handshake(deadline=None if timeout is None else monotonic() + timeout)
            if self.closed:
                raise ClosedResourceError("the client was closed")
            waiter = None
            if isinstance(stream, SocketStream):
                waiter = self._reactor.register(stream.sock.fileno())  # the epoll may be new: EMFILE
        except BaseException as exc:  # (cancelled too: the socket and the slot must not leak)
            if stream is not None:
                stream.close()
            host.active -= 1
            self._grant_or_idle(host)
            if isinstance(exc, ConnectTimeout) and _expired(deadline):
                raise TotalTimeout("request took longer than the total timeout") from exc
            if isinstance(exc, OSError) and not isinstance(exc, HttpError):
                message = f"cannot connect to {hostname}:{port}: {describe_os_error(exc)}"
                raise ConnectError(message) from exc
            raise
        self.connections_opened += 1
        connection = Connection(self, host, origin, stream, waiter)
        self._in_use.add(connection)
        return connection

    # -- returning --------------------------------------------------------------------------

    def _release(self, connection: Connection, reusable: bool) -> None:
        host = connection._host
        self._in_use.discard(connection)
        if reusable and not self.closed and not connection.stream.closed:
            waiters = host.waiters
            while waiters:
                waiter = waiters.popleft()
                if waiter.done:
                    continue
                waiter.done = True
                waiter.connection = connection
                connection.in_use = True
                self._in_use.add(connection)
                waiter.wakeup.set()
                return
            host.active -= 1
            if self._slot_waiters:  # another origin waits for a connection to close: this one
                connection.close()
                self._slot_freed()
                return
            now = monotonic()
            connection.idle_since = now
            idle = host.idle
            idle.append(connection)
            # Expire from the old end (the list is in release order).
            while idle and now - idle[0].idle_since > self.keepalive_expiry:
                idle.pop(0).close()
                self._slot_freed()
            return
        connection.close()
        host.active -= 1
        self._grant_or_idle(host)

    def _grant_or_idle(self, host: _HostPool) -> None:
        """A slot freed up: let the first waiter open a connection."""
        waiters = host.waiters
        while waiters:
            waiter = waiters.popleft()
            if waiter.done:
                continue
            waiter.done = True
            if not self.closed:
                waiter.granted = True
                host.active += 1
            waiter.wakeup.set()
            return
        self._slot_freed()

    # -- state ------------------------------------------------------------------------------

    def idle_connections(self, origin: Origin | None = None) -> int:
        """Idle connections (to ``origin``, or in all)."""
        hosts = self._hosts.values() if origin is None else [self._hosts.get(origin, _HostPool())]
        return sum(len(host.idle) for host in hosts)

    def waiting_requests(self, origin: Origin | None = None) -> int:
        """Requests waiting for a connection because ``max_connections_per_host`` are busy."""
        hosts = self._hosts.values() if origin is None else [self._hosts.get(origin, _HostPool())]
        waiting = sum(not waiter.done for host in hosts for waiter in host.waiters)
        if origin is None:
            waiting += sum(not waiter.done for waiter in self._slot_waiters)
        return waiting

    def active_connections(self, origin: Origin | None = None) -> int:
        """Connections in use or being opened (to ``origin``, or in all)."""
        hosts = self._hosts.values() if origin is None else [self._hosts.get(origin, _HostPool())]
        return sum(host.active for host in hosts)

    def close(self) -> None:
        """Close idle connections and fail waiters; connections in use close when released.

        A task reading a response at that moment gets :class:`ClosedResourceError` (its socket is
        shut down, which wakes it).
        """
        if self.closed:
            return
        self.closed = True
        for host in self._hosts.values():
            for connection in host.idle:
                connection.close()
            host.idle.clear()
            while host.waiters:
                waiter = host.waiters.popleft()
                if not waiter.done:
                    waiter.done = True
                    waiter.wakeup.set()
        while self._slot_waiters:
            waiter = self._slot_waiters.popleft()
            if not waiter.done:
                waiter.done = True
                waiter.wakeup.set()

        for connection in self._in_use:
            connection.stream.shutdown()
        if self._reactor_instance is not None:
            self._reactor_instance.close()


def ssl_context_for(verify: bool | str | ssl.SSLContext) -> ssl.SSLContext | None:
    """The pool's ``ssl_context`` for ``HttpClient(verify=...)`` (``None``: made on first use)."""
    if isinstance(verify, ssl.SSLContext):
        return verify
    if verify is True:
        return None  # the pool creates the default context on first https use
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=verify)
