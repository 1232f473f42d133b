"""TLS over a :class:`SocketStream`, with ``ssl.MemoryBIO``: the loop never blocks on a handshake.

The ``ssl`` module encrypts into and decrypts from memory buffers; this module moves the bytes
between those buffers and the non-blocking socket, so every wait is an ordinary
:class:`SocketStream` wait with its timeouts. ``ssl`` errors become our errors: a failed handshake
(bad certificate, wrong host name) is a :class:`ConnectError`, a corrupt record later on a
:class:`RemoteProtocolError`.

Example (the shape of use; needs a TLS server):

.. code-block:: python

    stream = await open_tcp_stream("example.com", 443, connect_timeout=5.0)
    tls = TlsStream(stream, ssl.create_default_context(), "example.com")
    await tls.do_handshake(deadline=time.monotonic() + 5.0)
    await tls.send_all(b"GET / HTTP/1.1\\r\\nHost: example.com\\r\\n\\r\\n")
    print(await tls.receive_some())
"""

from __future__ import annotations

import socket as _socket
import ssl
from collections.abc import Callable
from typing import TypeVar, cast

from .._errors import (
    ConnectError,
    ConnectTimeout,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    WriteError,
    WriteTimeout,
)
from .socket_stream import DEFAULT_RECEIVE_SIZE, SocketStream

__all__ = ["DEFAULT_HANDSHAKE_TIMEOUT", "ServerTlsStream", "TlsStream", "server_context"]

T = TypeVar("T")

# Bytes to read from the socket per refill of the incoming buffer (a TLS record is at most 16 KiB
# of plaintext plus overhead; reading more lets one syscall carry several records).
_RECEIVE_SIZE = DEFAULT_RECEIVE_SIZE


class TlsStream:
    """A client-side TLS stream with the interface of :class:`SocketStream`.

    Args:
        transport: the connected TCP stream (owned from now on: closing this closes it).
        context: the ``ssl.SSLContext`` (it decides verification).
        server_hostname: the name to send (SNI) and to check the certificate against.
    """

    __slots__ = ("_incoming", "_outgoing", "_ssl", "transport")

    def __init__(self, transport: SocketStream, context: ssl.SSLContext, server_hostname: str) -> None:
        self.transport = transport
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(
            self._incoming, self._outgoing, server_side=False, server_hostname=server_hostname
        )

    @property
    def sock(self) -> _socket.socket:
        """The underlying TCP socket."""
        return self.transport.sock

    @property
    def timed_out(self) -> bool:
        """True once a deadline expired on the transport."""
        return self.transport.timed_out

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self.transport.closed

    @property
    def ssl_object(self) -> ssl.SSLObject:
        """The ``ssl.SSLObject`` (for ``version()``, ``cipher()``, ``getpeercert()``)."""
        return self._ssl

    async def _flush(self, timeout: float | None) -> None:
        if self._outgoing.pending:
            await self.transport.send_all(self._outgoing.read(), timeout=timeout)

    async def _retry(self, operation: Callable[[], T], timeout: float | None, deadline: float | None) -> T:
        """Run an ``ssl`` operation, feeding it socket bytes until it stops wanting them."""
        while True:
            try:
                result = operation()
            except ssl.SSLWantReadError:
                await self._flush(timeout)
                data = await self.transport.receive_some(_RECEIVE_SIZE, timeout=timeout, deadline=deadline)
                if data:
                    self._incoming.write(data)
                else:
                    self._incoming.write_eof()
                continue
            await self._flush(timeout)
            return result

    async def do_handshake(self, *, timeout: float | None = None, deadline: float | None = None) -> None:
        """Run the TLS handshake.

        Raises:
            ConnectError: the handshake failed (certificate not trusted, name mismatch, protocol).
            ConnectTimeout: it did not finish in time.
        """
        try:
            await self._retry(self._ssl.do_handshake, timeout, deadline)
        except (ReadTimeout, WriteTimeout) as exc:
            raise ConnectTimeout("TLS handshake timed out") from exc
        except ssl.SSLError as exc:
            raise ConnectError(f"TLS handshake failed: {exc}") from exc

    async def receive_some(
        self,
        max_bytes: int = DEFAULT_RECEIVE_SIZE,
        *,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> bytes:
        """Receive up to ``max_bytes`` of plaintext; ``b""`` when the peer closed."""
        ssl_object = self._ssl
        try:
            return ssl_object.read(max_bytes)
        except ssl.SSLWantReadError:
            pass
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return b""
        except ssl.SSLError as exc:
            raise RemoteProtocolError(f"TLS error: {exc}") from exc
        try:
            return await self._retry(lambda: ssl_object.read(max_bytes), timeout, deadline)
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return b""
        except ssl.SSLError as exc:
            raise RemoteProtocolError(f"TLS error: {exc}") from exc

    async def send_all(self, data: bytes | bytearray | memoryview, *, timeout: float | None = None) -> None:
        """Encrypt and send every byte of ``data``.

        Raises:
            WriteError: the peer closed the connection (as for a plain socket stream).
        """
        try:
            self._ssl.write(data)
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError) as exc:
            raise WriteError(f"send failed: the peer closed the connection ({exc})") from exc
        except ssl.SSLError as exc:
            raise RemoteProtocolError(f"TLS error: {exc}") from exc
        await self._flush(timeout)

    def peer_gone(self) -> bool:
        """Without waiting: has an idle connection been closed (or sent something unexpected)?

        TLS 1.3 servers may send session tickets at any time; those are absorbed and do not
        count as unexpected data.
        """
        try:
            data = self.transport.sock.recv(_RECEIVE_SIZE)
        except BlockingIOError:
            data = None
        except OSError:
            return True
        if data is not None:
            if not data:
                return True
            self._incoming.write(data)
        if not self._incoming.pending:
            return False
        try:
            self._ssl.read(1)
        except ssl.SSLWantReadError:
            return False  # only handshake messages (session tickets)
        except ssl.SSLError:
            return True
        return True  # response bytes nobody asked for, or a clean close

    def shutdown(self) -> None:
        """Shut the socket down now; a task parked on it wakes up."""
        self.transport.shutdown()

    def close(self) -> None:
        """Close the socket (without a close_notify: HTTP/1.1 framing already ended the data)."""
        self.transport.close()

    async def aclose(self) -> None:
        """Close the stream (async form)."""
        self.close()


# -- the server side ----------------------------------------------------------------------------

#: Seconds a new connection has to finish its TLS handshake (→ closed without an answer). Bounds
#: the cost of a client that connects and sends nothing or garbage (nginx: ``ssl_handshake_timeout``
#: 60 s; hypercorn: 60 s; we use the header timeout's 10 s).
DEFAULT_HANDSHAKE_TIMEOUT = 10.0


def server_context(certfile: str, keyfile: str | None = None) -> ssl.SSLContext:
    """A server ``SSLContext``: TLS 1.2 or later, the certificate chain, ALPN ``http/1.1``.

    Args:
        certfile: PEM file with the certificate (and its chain).
        keyfile: PEM file with the private key (``None``: it is in ``certfile``).

    Raises:
        OSError, ssl.SSLError: the files are missing or do not hold a matching certificate and key.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile, keyfile)
    context.set_alpn_protocols(["http/1.1"])
    return context


class ServerTlsStream(TlsStream):
    """The server side of a TLS connection, with the interface of :class:`SocketStream`.

    Args:
        transport: the accepted TCP stream (owned from now on).
        context: a server ``ssl.SSLContext`` (see :func:`server_context`).

    Code above the seam that uses the socket without waiting calls ``stream.sock.recv(n)`` (the
    server's driver, when the connection's socket is readable) and ``stream.sock.send(data)`` (a
    streaming response's heartbeats, a topic's fan-out). Here :attr:`sock` is a view of the socket
    that speaks plaintext:

    * ``recv`` decrypts every whole record it can (from the bytes already buffered, then from one
      ``recv`` of the socket); ``BlockingIOError`` when there is no plaintext yet, ``b""`` at the
      end. Afterwards no plaintext waits inside the TLS object, so the socket's readiness tells
      whether there is more; :meth:`buffered` tells of bytes left by the waiting reads.
    * ``send`` encrypts ``data`` and sends the records, keeping what the kernel did not take (a
      *backlog*) to go out first: before the next write, or at the view's next ``send``, which
      raises ``BlockingIOError`` while a backlog remains (so the caller keeps its plaintext
      pending, as it does for a full socket).

    A TLS error on a server connection is a broken connection (:class:`ReadError`), not a
    protocol error of the request.
    """

    __slots__ = ("_backlog", "_view")

    def __init__(self, transport: SocketStream, context: ssl.SSLContext) -> None:
        self.transport = transport
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._ssl = context.wrap_bio(self._incoming, self._outgoing, server_side=True)
        #: Encrypted bytes the kernel did not take yet (sent before anything else).
        self._backlog = b""
        self._view = _TlsSocketView(self)

    @property
    def sock(self) -> _socket.socket:
        """A view of the TCP socket whose ``send`` encrypts (``fileno``, ``shutdown`` as the socket's)."""
        return cast(_socket.socket, self._view)

    @property
    def alpn_protocol(self) -> str | None:
        """The protocol chosen by ALPN (``"http/1.1"``), or ``None``."""
        return self._ssl.selected_alpn_protocol()

    @property
    def backlogged(self) -> bool:
        """True while encrypted bytes of an earlier ``send`` wait for the socket."""
        return bool(self._backlog)

    def send_backlog_nowait(self) -> None:
        """Send what the socket takes of the encrypted bytes an earlier ``send`` left waiting.

        Raises:
            OSError: the connection failed.
        """
        if self._backlog:
            try:
                sent = self.transport.sock.send(self._backlog)
            except BlockingIOError:
                return
            self._backlog = self._backlog[sent:]

    def buffered(self) -> bool:
        """True when bytes read from the socket wait in the TLS object (ciphertext or plaintext)."""
        return self._incoming.pending > 0 or self._ssl.pending() > 0

    async def receive_some(
        self,
        max_bytes: int = DEFAULT_RECEIVE_SIZE,
        *,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> bytes:
        """Receive up to ``max_bytes`` of plaintext; ``b""`` when the peer closed.

        Raises:
            ReadError: the connection broke, or a TLS record was corrupt.
        """
        try:
            return await super().receive_some(max_bytes, timeout=timeout, deadline=deadline)
        except RemoteProtocolError as exc:
            raise ReadError(str(exc)) from exc

    def receive_nowait(self) -> bytes:
        """Every plaintext byte available without waiting; ``b""`` at the end.

        Raises:
            BlockingIOError: none yet (the socket has nothing, or only part of a record).
            OSError: the connection broke (``ssl.SSLError`` for a corrupt record).
        """
        ssl_object = self._ssl
        chunks: list[bytes] = []
        while True:
            try:
                chunk = ssl_object.read(DEFAULT_RECEIVE_SIZE)
            except ssl.SSLWantReadError:
                if chunks:
                    return b"".join(chunks)
                data = self.transport.sock.recv(_RECEIVE_SIZE)  # BlockingIOError: nothing yet
                if data:
                    self._incoming.write(data)
                else:
                    self._incoming.write_eof()
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                return b"".join(chunks)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)

    async def _flush(self, timeout: float | None) -> None:
        if self._backlog:
            backlog, self._backlog = self._backlog, b""
            await self.transport.send_all(backlog, timeout=timeout)
        await super()._flush(timeout)

    def send_nowait(self, data: bytes) -> int:
        """Encrypt and send ``data`` without waiting; ``len(data)`` once it is encrypted.

        Raises:
            BlockingIOError: encrypted bytes of an earlier write are still waiting for the socket.
            OSError: the connection failed (``ssl.SSLError`` is one).
        """
        sock = self.transport.sock
        if self._backlog:
            sent = sock.send(self._backlog)
            self._backlog = self._backlog[sent:]
            if self._backlog:
                raise BlockingIOError("earlier TLS records are still waiting for the socket")
        self._ssl.write(data)
        record = self._outgoing.read()
        try:
            sent = sock.send(record)
        except BlockingIOError:
            sent = 0
        self._backlog = record[sent:]
        return len(data)


class _TlsSocketView:
    """What :attr:`ServerTlsStream.sock` returns: the TCP socket, with an encrypting ``send``."""

    __slots__ = ("_stream",)

    def __init__(self, stream: ServerTlsStream) -> None:
        self._stream = stream

    def send(self, data: bytes) -> int:
        return self._stream.send_nowait(data)

    def recv(self, max_bytes: int) -> bytes:
        return self._stream.receive_nowait()  # every whole record: none may stay hidden in TLS

    def fileno(self) -> int:
        return self._stream.transport.sock.fileno()

    def shutdown(self, how: int) -> None:
        self._stream.transport.sock.shutdown(how)

    def __getattr__(self, name: str) -> object:
        return getattr(self._stream.transport.sock, name)
