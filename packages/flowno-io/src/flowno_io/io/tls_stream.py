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
from typing import TypeVar

from .._errors import ConnectError, ConnectTimeout, ReadTimeout, RemoteProtocolError, WriteError, WriteTimeout
from .socket_stream import DEFAULT_RECEIVE_SIZE, SocketStream

__all__ = ["TlsStream"]

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
