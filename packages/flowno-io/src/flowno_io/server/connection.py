"""One server connection (its stream, parser and bookkeeping) and the writer of streaming responses."""

from __future__ import annotations

import socket as _socket
from collections.abc import Coroutine
from time import monotonic
from typing import TYPE_CHECKING, Any, TypeAlias

from .._errors import ProtocolError
from ..io.clock import Timer
from ..io.socket_stream import SocketStream
from ..io.tls_stream import ServerTlsStream
from ..io.wakeup import Wakeup
from ..protocol.framing import frame_response
from ..protocol.headers import Headers
from ..protocol.http11_server import (
    RequestParser,
    encode_chunk,
    encode_response_head,
    http_date,
)
from .request import Request

if TYPE_CHECKING:
    from .server import HttpServer

__all__ = ["FEED_SLICE", "SERVER_HEADER", "Connection", "Exchange", "ResponseWriter", "Worker"]

#: Bytes of pipelined input parsed at a time: requests are parsed only as earlier ones are
#: answered, so a client that pipelines and stops reading holds at most this much parsed.
FEED_SLICE = 4096
#: The ``Server`` header line of every response.
SERVER_HEADER = b"Server: flowno-io\r\n"


class Connection:
    """One accepted connection: its stream, parser and bookkeeping."""

    __slots__ = (
        "client",
        "deadline",
        "fd",
        "head_deadline",
        "parked",
        "parser",
        "preface",
        "requests_served",
        "server",
        "stream",
        "timer",
        "unfed",
    )

    def __init__(
        self, server: HttpServer, sock: _socket.socket, client: Any, *, nodelay: bool = True
    ) -> None:
        self.server = server
        #: A TLS connection's stream becomes a ``ServerTlsStream`` once its handshake starts.
        self.stream: SocketStream | ServerTlsStream = SocketStream(sock, nodelay=nodelay)
        self.fd = sock.fileno()
        self.client: tuple[str, int] = (client[0], client[1]) if isinstance(client, tuple) else ("", 0)
        self.parser = RequestParser(server.max_header_bytes, server.max_headers, server.max_body_bytes)
        self.requests_served = 0
        #: True while the driver watches it (between requests); False while a worker owns it.
        self.parked = False
        self.head_deadline: float | None = None
        #: When the parked connection closes (keep-alive or header deadline); its timer may be
        #: armed earlier (see :meth:`expire`).
        self.deadline: float | None = None
        self.timer: Timer | None = None
        #: Bytes read from the socket but not yet given to the parser (see ``FEED_SLICE``).
        self.unfed: memoryview | bytes = b""
        #: The first bytes of a cleartext connection while they may be the HTTP/2 preface
        #: (``None`` once decided, or when HTTP/2 is off).
        self.preface: bytes | None = None

    def feed_unfed(self) -> bool:
        """Give the parser the next slice of the bytes read ahead; False when there are none.

        A protocol error is kept by the parser (``parser.error``) and answered after the requests
        parsed before it.
        """
        unfed = self.unfed
        if not unfed or self.parser.error is not None:
            return False
        self.unfed = unfed[FEED_SLICE:]
        try:
            self.parser.feed(bytes(unfed[:FEED_SLICE]))
        except ProtocolError:
            pass
        return True

    def expire(self) -> None:
        """The timer of a parked connection fired: close it if its deadline passed, else re-arm.

        (Parking moves :attr:`deadline` later without touching an armed timer: one attribute
        write per request instead of a re-arm.)
        """
        if self.parked:
            deadline = self.deadline
            if deadline is not None and deadline > monotonic() and self.timer is not None:
                self.timer.set_deadline(deadline)  # (its clock runs: it called us)
                return
            self.server._drop(self)


#: The coroutine answering what a read brought (True: keep the connection).
Exchange: TypeAlias = Coroutine[Any, Any, bool]


class Worker:
    """A pooled task that resumes exchanges the driver could not finish inline."""

    __slots__ = ("job", "wakeup")

    def __init__(self) -> None:
        self.wakeup = Wakeup()  # reusable; a flowno Event per wait would stay in the loop forever
        self.job: tuple[Connection, Exchange, Any] | None = None


class ResponseWriter:
    """What a streaming response uses to send itself (see ``StreamingResponse``).

    Attributes:
        request: the request being answered.
        head_only: True for HEAD (send the head, no body).
        chunked: True once :meth:`write_head` chose chunked framing (HTTP/1.1).
    """

    __slots__ = (
        "_connection",
        "_request_keep_alive",
        "chunked",
        "head_only",
        "head_sent",
        "keep_alive",
        "request",
    )

    def __init__(self, connection: Connection, request: Request, request_keep_alive: bool) -> None:
        self._connection = connection
        self._request_keep_alive = request_keep_alive
        self.request = request
        self.head_only = request.method == "HEAD"
        #: Whether the connection serves another request after this response (set by the head).
        self.keep_alive = False
        self.chunked = False
        self.head_sent = False

    @property
    def stream(self) -> SocketStream | ServerTlsStream:
        """The connection's stream (for disconnect detection)."""
        return self._connection.stream

    @property
    def server(self) -> HttpServer:
        """The server this response belongs to (``server.closing`` tells of a shutdown)."""
        return self._connection.server

    async def write_head(self, status_code: int, headers: Headers) -> None:
        """Send the status line and headers; the framing rule (``protocol/framing.py``) decides.

        HTTP/1.1 gets ``Transfer-Encoding: chunked`` unless ``headers`` give a ``Content-Length``;
        HTTP/1.0 gets the raw body and the connection closes after it.
        """
        request = self.request
        server = self._connection.server
        framing = frame_response(
            status_code,
            headers,
            body_length=None,
            method=request.method,
            http_version=request.http_version,
            request_keep_alive=self._request_keep_alive,
            server_keep_alive=server._may_keep_alive(request, streaming=True),
        )
        self.chunked = framing.chunked
        self.keep_alive = framing.keep_alive
        self.head_sent = True
        extra = b"%bDate: %b\r\n%b" % (SERVER_HEADER, http_date(), framing.header_lines)
        await self._send(encode_response_head(status_code, framing.headers, extra))

    async def write(self, data: bytes) -> None:
        """Send a piece of the body (framed as a chunk when chunked; nothing for HEAD)."""
        if self.head_only or not data:
            return
        await self._send(encode_chunk(data) if self.chunked else data)

    async def end(self) -> None:
        """Finish the body (the last chunk when chunked)."""
        if self.chunked and not self.head_only:
            await self._send(b"0\r\n\r\n")

    async def _send(self, data: bytes) -> None:
        await self._connection.stream.send_all(data, timeout=self._connection.server.write_timeout)
