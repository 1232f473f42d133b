"""The I/O seam: a byte stream over a non-blocking socket on the flowno event loop.

Every operation tries the syscall first and parks the task on the loop (flowno's socket commands)
only when the kernel says it would block, so a busy connection never pays for a selector round
trip. Timeouts use :mod:`flowno_io._clock`: when a deadline passes, the timer shuts the socket
down, which wakes the parked task; the task sees the expired flag and raises the timeout. A stream
that timed out is dead (as in httpcore: a timed-out HTTP/1.1 connection cannot be reused).

``OSError`` never leaves this module: it becomes :class:`ReadError`, :class:`WriteError` or
:class:`ConnectError`.
"""

from __future__ import annotations

import errno
import socket as _socket
from time import monotonic

from flowno import SocketHandle

from .._errors import (
    ClosedResourceError,
    ConnectError,
    ConnectTimeout,
    ReadError,
    ReadTimeout,
    WriteError,
    WriteTimeout,
)
from .clock import Timer, get_clock
from .flowno_compat import wait_readable, wait_writable

__all__ = ["DEFAULT_RECEIVE_SIZE", "SocketStream", "open_tcp_stream", "wait_readable", "wait_writable"]

#: Bytes asked of the kernel per ``recv`` when the caller does not say.
DEFAULT_RECEIVE_SIZE = 64 * 1024


class SocketStream:
    """A bidirectional byte stream over a connected TCP socket.

    Args:
        sock: a connected socket; it is switched to non-blocking mode and gets ``TCP_NODELAY``.

    Example:
        >>> from flowno_io import SocketStream
        >>> import socket
        >>> from flowno import EventLoop
        >>> a, b = socket.socketpair()
        >>> async def main():
        ...     left, right = SocketStream(a), SocketStream(b)
        ...     await left.send_all(b"ping")
        ...     data = await right.receive_some(timeout=1.0)
        ...     await left.aclose()
        ...     await right.aclose()
        ...     return data
        >>> EventLoop().run_until_complete(main(), join=True)
        b'ping'
    """

    __slots__ = ("_closed", "_expired", "_handle", "_timer", "sock")

    def __init__(self, sock: _socket.socket) -> None:
        sock.setblocking(False)
        try:
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        except OSError:
            pass  # not TCP (a Unix socket pair, for instance)
        self.sock = sock
        self._handle: SocketHandle | None = None
        self._timer: Timer | None = None
        self._expired = False
        self._closed = False

    @property
    def handle(self) -> SocketHandle:
        """The flowno handle of the socket (made on first wait: most streams never need one)."""
        handle = self._handle
        if handle is None:
            handle = self._handle = SocketHandle(self.sock)
        return handle

    # -- timeouts -------------------------------------------------------------------------------

    def _on_deadline(self) -> None:
        self._expired = True
        try:
            self.sock.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass  # already reset or closed: the waiter wakes anyway

    async def _arm(self, deadline: float) -> None:
        timer = self._timer
        if timer is None:
            timer = self._timer = get_clock().timer(self._on_deadline)
        if not timer.set_deadline(deadline):
            await timer.arm_at(deadline)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.disarm()

    @property
    def timed_out(self) -> bool:
        """True once a deadline expired on this stream (it is then unusable)."""
        return self._expired

    # -- receiving ------------------------------------------------------------------------------

    async def receive_some(
        self,
        max_bytes: int = DEFAULT_RECEIVE_SIZE,
        *,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> bytes:
        """Receive up to ``max_bytes``; ``b""`` means the peer closed its side.

        Args:
            max_bytes: the most bytes to return.
            timeout: seconds to wait for data, counted from this call.
            deadline: an absolute ``time.monotonic()`` limit (the earlier of the two applies).

        Raises:
            ReadTimeout: nothing arrived in time (the stream is then shut down).
            ReadError: the connection was reset.
            ClosedResourceError: the stream was closed by us.
        """
        if self._closed:
            raise ClosedResourceError("stream is closed")
        if self._expired:
            raise ReadTimeout("stream already timed out")
        sock = self.sock
        try:
            return sock.recv(max_bytes)
        except BlockingIOError:
            pass
        except OSError as exc:
            raise ReadError(f"receive failed: {exc}") from exc
        if timeout is not None:
            limit = monotonic() + timeout
            deadline = limit if deadline is None else min(deadline, limit)
        if deadline is not None:
            await self._arm(deadline)
        try:
            while True:
                await wait_readable(self.handle)
                if self._expired:
                    raise ReadTimeout("timed out waiting for data")
                try:
                    return sock.recv(max_bytes)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    raise ReadError(f"receive failed: {exc}") from exc
        finally:
            if deadline is not None:
                self._disarm()

    # -- sending --------------------------------------------------------------------------------

    async def send_all(self, data: bytes | bytearray | memoryview, *, timeout: float | None = None) -> None:
        """Send every byte of ``data``.

        Args:
            data: what to send.
            timeout: seconds the peer may go without accepting any byte (an inactivity limit,
                re-armed after each partial send).

        Raises:
            WriteTimeout: the peer accepted nothing for ``timeout`` seconds.
            WriteError: the connection was reset or the pipe is broken.
        """
        if self._closed:
            raise ClosedResourceError("stream is closed")
        if self._expired:
            raise WriteTimeout("stream already timed out")
        sock = self.sock
        try:
            sent = sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            raise WriteError(f"send failed: {exc}") from exc
        if sent == len(data):
            return
        view = memoryview(data)[sent:]
        try:
            while view:
                if timeout is not None:
                    await self._arm(monotonic() + timeout)
                await wait_writable(self.handle)
                if self._expired:
                    raise WriteTimeout("timed out waiting for the peer to read")
                try:
                    sent = sock.send(view)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    raise WriteError(f"send failed: {exc}") from exc
                view = view[sent:]
        finally:
            if timeout is not None:
                self._disarm()

    async def wait_closed_by_peer(self) -> None:
        """Wait until the peer closes or resets (used to notice a vanished streaming client).

        Incoming bytes are read and dropped; returns when the peer has gone.
        """
        while not self._closed:
            try:
                data = await self.receive_some(DEFAULT_RECEIVE_SIZE)
            except (ReadError, ReadTimeout, ClosedResourceError):
                return
            if not data:
                return

    # -- closing --------------------------------------------------------------------------------

    def shutdown(self) -> None:
        """Shut both directions down now; a task parked on this stream wakes up."""
        try:
            self.sock.shutdown(_socket.SHUT_RDWR)
        except OSError:
            pass

    def close(self) -> None:
        """Close the socket now (never while another task is parked on it: use shutdown())."""
        if not self._closed:
            self._closed = True
            self._disarm()
            self.sock.close()

    async def aclose(self) -> None:
        """Close the stream (async form, for symmetry with other streams)."""
        self.close()

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed


async def open_tcp_stream(
    host: str, port: int, *, connect_timeout: float | None = None, local_address: str | None = None
) -> SocketStream:
    """Connect to ``host:port`` without blocking the loop and return a :class:`SocketStream`.

    ``local_address`` binds the socket's source address first (any port): on loopback, sources
    spread over ``127.0.0.x`` pass the ~28k ephemeral ports one address pair allows.

    Name resolution uses ``getaddrinfo`` (instant for IP literals and ``localhost``; a slow DNS
    server would block the loop for its duration).

    Raises:
        ConnectError: refused, unreachable, or the name does not resolve.
        ConnectTimeout: no connection within ``connect_timeout`` seconds.
    """
    try:
        infos = _socket.getaddrinfo(host, port, type=_socket.SOCK_STREAM)
    except OSError as exc:
        raise ConnectError(f"cannot resolve {host!r}: {exc}") from exc
    deadline = None if connect_timeout is None else monotonic() + connect_timeout
    last_error: Exception | None = None
    for family, type_, proto, _, address in infos:
        sock = _socket.socket(family, type_, proto)
        stream = SocketStream(sock)
        try:
            if local_address is not None:
                sock.bind((local_address, 0))
            err = sock.connect_ex(address)
            if err in (errno.EINPROGRESS, errno.EWOULDBLOCK, errno.EAGAIN):
                if deadline is not None:
                    await stream._arm(deadline)
                try:
                    await wait_writable(stream.handle)
                finally:
                    stream._disarm()
                if stream._expired:
                    raise ConnectTimeout(f"connecting to {host}:{port} timed out")
                err = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR)
            if err:
                raise ConnectError(f"cannot connect to {host}:{port}: {errno.errorcode.get(err, err)}")
            return stream
        except ConnectTimeout:
            stream.close()
            raise
        except (ConnectError, OSError) as exc:
            stream.close()
            last_error = exc
    if isinstance(last_error, ConnectError):
        raise last_error
    raise ConnectError(f"cannot connect to {host}:{port}: {last_error}")
