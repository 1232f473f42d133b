"""The I/O seam: a byte stream over a non-blocking socket on the flowno event loop.

Every operation tries the syscall first and parks the task on the loop (flowno's socket commands)
only when the kernel says it would block, so a busy connection never pays for a selector round
trip. Timeouts use :mod:`flowno_io._clock`: when a deadline passes, the timer shuts the socket
down, which wakes the parked task; the task sees the expired flag and raises the timeout. A stream
that timed out is dead (as in httpcore: a timed-out HTTP/1.1 connection cannot be reused).

``OSError`` never leaves this module: it becomes :class:`ReadError`, :class:`WriteError` or
:class:`ConnectError` (whose message says so when the file descriptor limit was hit).
"""

from __future__ import annotations

import errno
import socket as _socket
import sys
from concurrent.futures import ThreadPoolExecutor
from time import monotonic
from typing import Any

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
from .clock import StreamDeadline
from .flowno_compat import wait_readable, wait_writable

__all__ = [
    "DEFAULT_RECEIVE_SIZE",
    "SocketStream",
    "accept_connection",
    "describe_os_error",
    "open_tcp_stream",
    "resolve",
    "wait_readable",
    "wait_writable",
]

#: Bytes asked of the kernel per ``recv`` when the caller does not say.
DEFAULT_RECEIVE_SIZE = 64 * 1024
#: Linux's ``IP_BIND_ADDRESS_NO_PORT`` (Python 3.11 lacks the name): a source address bound
#: before ``connect()`` gets its port at the connect, from the whole 4-tuple.
_IP_BIND_ADDRESS_NO_PORT: int | None = getattr(
    _socket, "IP_BIND_ADDRESS_NO_PORT", 24 if sys.platform.startswith("linux") else None
)

#: ``errno`` values meaning no file descriptor could be allocated, with what to tell the user.
_FD_EXHAUSTED: dict[int | None, str] = {
    errno.EMFILE: "the process hit its file descriptor limit (RLIMIT_NOFILE, ulimit -n)",
    errno.ENFILE: "the system-wide file descriptor table is full",
}


def accept_connection(listener: _socket.socket) -> tuple[_socket.socket, Any]:
    """``listener.accept()`` without its two enum conversions per call.

    ``socket.accept`` builds the new socket from ``self.family`` and ``self.type``, properties
    that turn the ints into enum members through Python code on every call (~30 % of the Python
    calls of a one-request connection); this passes the ints. Raises what ``accept`` raises
    (``BlockingIOError`` when none is waiting).

    Example:
        >>> import socket
        >>> listener = socket.create_server(("127.0.0.1", 0))
        >>> client = socket.create_connection(listener.getsockname())
        >>> sock, address = accept_connection(listener)
        >>> sock.family == listener.family, address[0]
        (True, '127.0.0.1')
        >>> for each in (sock, client, listener): each.close()
    """
    fd, address = listener._accept()  # type: ignore[attr-defined]
    family = _raw_family(listener)
    return _socket.socket(family, _socket.SOCK_STREAM, listener.proto, fd), address


#: The C socket's own ``family`` (an int), under the Python class's enum-making property.
_raw_family = _socket.socket.__mro__[1].family.__get__  # type: ignore[attr-defined]


def describe_os_error(exc: BaseException) -> str:
    """``str(exc)``, plus a plain explanation when it means the file descriptor limit was hit.

    Example:
        >>> describe_os_error(OSError(errno.ENFILE, "Too many open files in system"))
        '[Errno 23] Too many open files in system: the system-wide file descriptor table is full'
    """
    explanation = _FD_EXHAUSTED.get(exc.errno) if isinstance(exc, OSError) else None
    return f"{exc}: {explanation}" if explanation else str(exc)


class SocketStream(StreamDeadline):
    """A bidirectional byte stream over a connected TCP socket.

    Args:
        sock: a connected socket; it is switched to non-blocking mode and gets ``TCP_NODELAY``.
        nodelay: set ``TCP_NODELAY`` (pass False when the socket has it already: one syscall less).

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

    __slots__ = ("_closed", "_handle", "sock")

    def __init__(self, sock: _socket.socket, *, nodelay: bool = True) -> None:
        sock.setblocking(False)
        if nodelay:  # (False: the socket has it already, e.g. inherited from its listener on Linux)
            try:
                sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            except OSError:
                pass  # not TCP (a Unix socket pair, for instance)
        self.sock = sock
        self._handle: SocketHandle | None = None
        StreamDeadline.__init__(self)
        self._closed = False

    @property
    def handle(self) -> SocketHandle:
        """The flowno handle of the socket (made on first wait: most streams never need one)."""
        handle = self._handle
        if handle is None:
            handle = self._handle = SocketHandle(self.sock)
        return handle

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

    def send_nowait(self, data: bytes | bytearray | memoryview) -> int:
        """Send what the kernel takes now, without waiting; the bytes sent (0: its buffer is full).

        Raises:
            ClosedResourceError: the stream was closed.
            WriteTimeout: an earlier write timed out.
            WriteError: the connection was reset or the pipe is broken.
        """
        if self._closed:
            raise ClosedResourceError("stream is closed")
        if self._expired:
            raise WriteTimeout("stream already timed out")
        try:
            return self.sock.send(data)
        except BlockingIOError:
            return 0
        except OSError as exc:
            raise WriteError(f"send failed: {exc}") from exc

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
        sent = self.send_nowait(data)
        if sent == len(data):
            return
        sock = self.sock
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
        await read_until_closed(self)

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
            timer = self._timer
            if timer is not None:  # (StreamDeadline._disarm, without a call for a stream never timed)
                timer.disarm()
            self.sock.close()

    async def aclose(self) -> None:
        """Close the stream (async form, for symmetry with other streams)."""
        self.close()

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed


#: Threads resolving names at once (``getaddrinfo`` blocks; the loop never does). More lookups
#: wait for a thread; each still ends at its own connect deadline.
RESOLVER_THREADS = 8
_resolver: ThreadPoolExecutor | None = None

_AddrInfo = list[tuple[Any, Any, int, str, Any]]


def _numeric(host: str, port: int) -> _AddrInfo | None:
    """``getaddrinfo`` for an IP literal (never blocks: no lookup), ``None`` for a name."""
    try:
        return _socket.getaddrinfo(host, port, type=_socket.SOCK_STREAM, flags=_socket.AI_NUMERICHOST)
    except OSError:
        return None


async def resolve(host: str, port: int, *, deadline: float | None = None) -> _AddrInfo:
    """The addresses of ``host:port`` (``getaddrinfo``), looked up without blocking the loop.

    An IP literal is converted in place. A name is resolved on a worker thread, which wakes the
    loop through a socket pair when it is done; the task waits for it until ``deadline``.

    Raises:
        ConnectError: the name does not resolve.
        ConnectTimeout: not resolved by ``deadline``.
    """
    infos = _numeric(host, port)
    if infos is not None:
        return infos
    global _resolver
    if _resolver is None:
        _resolver = ThreadPoolExecutor(RESOLVER_THREADS, thread_name_prefix="flowno-io-resolver")
    try:
        reader, writer = _socket.socketpair()
    except OSError as exc:  # EMFILE/ENFILE
        raise ConnectError(f"cannot resolve {host!r}: {describe_os_error(exc)}") from exc
    reader.setblocking(False)
    outcome: list[Any] = []

    def lookup() -> None:
        try:
            outcome.append(_socket.getaddrinfo(host, port, type=_socket.SOCK_STREAM))
        except BaseException as exc:  # handed to the loop thread
            outcome.append(exc)
        try:
            writer.send(b"!")
        except OSError:
            pass  # the waiting task gave up (timeout, cancel) and closed its end
        finally:
            writer.close()

    stream = SocketStream(reader)
    try:
        _resolver.submit(lookup)
        try:
            await stream.receive_some(1, deadline=deadline)
        except ReadTimeout:
            raise ConnectTimeout(f"resolving {host!r} timed out") from None
    finally:
        stream.close()
    result = outcome[0] if outcome else ConnectError(f"cannot resolve {host!r}: the resolver failed")
    if isinstance(result, OSError):
        raise ConnectError(f"cannot resolve {host!r}: {describe_os_error(result)}") from result
    if isinstance(result, BaseException):
        raise result
    resolved: _AddrInfo = result
    return resolved


async def open_tcp_stream(
    host: str, port: int, *, connect_timeout: float | None = None, local_address: str | None = None
) -> SocketStream:
    """Connect to ``host:port`` without blocking the loop and return a :class:`SocketStream`.

    Names are resolved off the loop (:func:`resolve`, on a worker thread), within
    ``connect_timeout``, which counts the lookup and the connection together. Cancelling the task
    while it connects closes the socket. ``local_address`` binds the socket's source address
    first (any port): on loopback, sources spread over ``127.0.0.x`` pass the ~28k ephemeral ports
    one address pair allows.

    Raises:
        ConnectError: refused, unreachable, the name does not resolve, or no socket could be
            opened (the message names the file descriptor limit when that was hit).
        ConnectTimeout: no connection within ``connect_timeout`` seconds.
    """
    deadline = None if connect_timeout is None else monotonic() + connect_timeout
    infos = await resolve(host, port, deadline=deadline)
    last_error: Exception | None = None
    for family, type_, proto, _, address in infos:
        try:
            sock = _socket.socket(family, type_, proto)
        except OSError as exc:  # EMFILE/ENFILE: another address would need a socket too
            raise ConnectError(f"cannot open a socket to {host}:{port}: {describe_os_error(exc)}") from exc
        stream = SocketStream(sock)
        try:
            if local_address is not None:
                # The port is chosen at connect() (Linux): bind() with port 0 looks for a port
                # free for every destination, slow when many sockets (TIME_WAIT ones too) hold
                # the address's ports: reopening 15,000 streams took 13.3 s of CPU, not 7.9.
                if _IP_BIND_ADDRESS_NO_PORT is not None:
                    try:
                        sock.setsockopt(_socket.IPPROTO_IP, _IP_BIND_ADDRESS_NO_PORT, 1)
                    except OSError:
                        pass  # an older kernel: bind() picks the port
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
        except BaseException:
            stream.close()  # cancelled while connecting: the socket must not outlive the task
            raise
    if isinstance(last_error, ConnectError):
        raise last_error
    detail = "no address" if last_error is None else describe_os_error(last_error)
    raise ConnectError(f"cannot connect to {host}:{port}: {detail}")


async def read_until_closed(stream: Any) -> None:
    """Read and drop what ``stream`` receives until the peer closes, resets, or it is closed by us."""
    while not stream.closed:
        try:
            data = await stream.receive_some(DEFAULT_RECEIVE_SIZE)
        except (ReadError, ReadTimeout, ClosedResourceError):
            return
        if not data:
            return
