"""One HTTP/2 stream as the server's handlers see it: its request, its body, its writer.

The connection (``server/http2.py``) owns the socket and the ``h2`` state machine; a stream's
handler runs in a pooled task (or inline in the connection task until it first waits) and talks
to the connection only through plain calls:

* **Reading the body**: DATA frames the connection received wait in :attr:`Http2Stream.chunks`;
  :meth:`Http2Request.iter_body` takes them and opens the flow-control window by what it took, so
  a handler that does not read holds at most one window of body in memory.
* **Writing**: :class:`Http2ResponseWriter` puts frames into the ``h2`` state machine and asks the
  connection to flush them (a non-blocking ``send``; what the kernel does not take waits in the
  connection's outbox, which the connection task sends when the socket turns writable). A writer
  whose stream or connection window is exhausted, or whose connection outbox is above
  ``OUTBOX_HIGH_WATER``, waits until a WINDOW_UPDATE (or the drain) wakes it: backpressure into
  the producer, never an unbounded buffer.
* **Stopping**: RST_STREAM from the client, or the connection closing, marks the stream gone; a
  producer parked in an ``await`` is interrupted at once (``StreamInterrupted``), a writer or
  reader waiting wakes up with an error.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import AsyncIterator
from time import monotonic
from typing import TYPE_CHECKING, Any

import h2.exceptions

from .._errors import ReadError, ReadTimeout, RemoteProtocolError, TooLargeError, WriteError, WriteTimeout
from ..io.clock import Timer, get_clock
from ..io.flowno_compat import TaskHandle, current_loop
from ..io.wakeup import Wakeup, interrupt
from ..protocol.framing import frame_response
from ..protocol.headers import Headers
from ..protocol.http11_server import RequestHead, http_date
from .request import Request
from .streaming import StreamInterrupted

if TYPE_CHECKING:
    from .http2 import Http2Connection
    from .server import HttpServer

__all__ = ["Http2Request", "Http2ResponseWriter", "Http2Stream", "response_headers"]

logger = logging.getLogger("flowno_io.server")

#: Response header fields that are connection-specific, forbidden in HTTP/2 (RFC 9113 §8.2.2).
_CONNECTION_FIELDS = ("keep-alive", "proxy-connection", "upgrade")
_SERVER = (b"server", b"flowno-io")


class Http2Stream:
    """The state of one request/response stream, shared by the connection and the handler task."""

    __slots__ = (
        "_timer",
        "chunks",
        "conn",
        "end_on_shutdown",
        "ended",
        "error",
        "error_target",
        "gone",
        "headers_sent",
        "heartbeat",
        "in_producer",
        "last_write",
        "received",
        "request",
        "response_ended",
        "shutdown",
        "stream_id",
        "task",
        "timed_out",
        "too_large",
        "wakeup",
    )

    def __init__(self, conn: Http2Connection, stream_id: int) -> None:
        self.conn = conn
        self.stream_id = stream_id
        self.request: Http2Request | None = None
        #: Why the request head was refused (answered instead of running a handler).
        self.error: RemoteProtocolError | None = None
        #: The refused request's method and path, for the error hooks (access log).
        self.error_target: tuple[str | None, str | None] = (None, None)
        self.headers_sent = False
        #: Body pieces received and not yet read: ``(data, flow-controlled length)``.
        self.chunks: deque[tuple[bytes, int]] = deque()
        #: Body bytes received so far (for ``max_body_bytes``).
        self.received = 0
        self.too_large = False
        #: The client ended its side (END_STREAM).
        self.ended = False
        #: The client reset the stream or the connection went away: nothing more can be sent.
        self.gone = False
        #: The server is shutting down an event stream (it ends with its shutdown event).
        self.shutdown = False
        self.end_on_shutdown = False
        #: We sent END_STREAM (or reset): the response is complete.
        self.response_ended = False
        #: Wakes the handler task waiting for body data or for window.
        self.wakeup = Wakeup()
        self._timer: Timer | None = None
        self.timed_out = False
        #: The task sending a streaming response, and whether it is parked in the producer.
        self.task: Any = None
        self.in_producer = False
        #: A streaming response's heartbeat timer state.
        self.heartbeat: Any = None
        self.last_write = monotonic()

    # -- waiting ------------------------------------------------------------------------------

    def _on_timer(self) -> None:
        self.timed_out = True
        self.wakeup.set()

    async def wait(self, timeout: float) -> bool:
        """Wait until woken (data, window, reset); False when ``timeout`` seconds passed first."""
        timer = self._timer
        if timer is None:
            timer = self._timer = get_clock().timer(self._on_timer)
        self.timed_out = False
        if not timer.set_deadline(monotonic() + timeout):
            await get_clock()._start()
        try:
            await self.wakeup.wait()
        finally:
            timer.disarm()
        return not self.timed_out

    def stop(self, reason: str) -> None:
        """The client reset the stream (``"disconnect"``) or the server closes (``"shutdown"``)."""
        if reason == "disconnect":
            self.gone = True
        elif self.end_on_shutdown:
            self.shutdown = True
        else:
            return
        if self.in_producer and self.task is not None:
            interrupt(self.task, StreamInterrupted(TaskHandle(current_loop(), self.task), reason))
        else:
            self.wakeup.set()

    # -- body ---------------------------------------------------------------------------------

    def data_received(self, data: bytes, flow_length: int, max_body_bytes: int) -> None:
        """Keep a DATA frame's payload for the handler (the connection calls it)."""
        self.received += len(data)
        if self.received > max_body_bytes:
            self.too_large = True
        if self.too_large or self.gone or self.response_ended:
            self.conn.consumed(self, flow_length)  # dropped: give the window back now
        else:
            self.chunks.append((data, flow_length))
        self.wakeup.set()

    # -- sending ------------------------------------------------------------------------------

    async def send_data(self, data: bytes, end_stream: bool = False) -> None:
        """Send ``data`` as DATA frames, waiting for flow-control window (and outbox room)."""
        conn = self.conn
        view = memoryview(data)
        write_timeout = conn.server.write_timeout
        while True:
            if self.gone or conn.closed:
                raise WriteError("the client reset the stream or closed the connection")
            room = conn.sendable(self) if view else 0
            if room > 0 or not view:
                piece = view[:room]
                view = view[room:]
                last = end_stream and not view
                try:
                    conn.h2.send_data(self.stream_id, bytes(piece), end_stream=last)
                except h2.exceptions.ProtocolError as exc:
                    self.gone = True
                    raise WriteError(f"the stream is closed: {exc}") from None
                if last:
                    self.response_ended = True
                if not view:
                    break
                continue
            conn.flush()
            conn.window_waiters.add(self)
            try:
                if not await self.wait(write_timeout):
                    raise WriteTimeout("the client opened no flow-control window in time")
            finally:
                conn.window_waiters.discard(self)
        self.last_write = monotonic()
        conn.flush()

    def send_headers(self, headers: list[tuple[bytes, bytes]], end_stream: bool, flush: bool = True) -> None:
        """Send the response head (HEADERS; END_STREAM when there is no body)."""
        conn = self.conn
        if self.gone or conn.closed:
            raise WriteError("the client reset the stream or closed the connection")
        try:
            conn.h2.send_headers(self.stream_id, headers, end_stream=end_stream)
        except h2.exceptions.ProtocolError as exc:
            self.gone = True
            raise WriteError(f"the stream is closed: {exc}") from None
        self.headers_sent = True
        if end_stream:
            self.response_ended = True
        if flush:
            conn.flush()


def response_headers(
    status: int, headers: Headers, body_length: int | None, method: str
) -> tuple[list[tuple[bytes, bytes]], bool]:
    """The HEADERS of a response and whether it has a body, by the framing rule of ``protocol/framing.py``.

    HTTP/2 frames the body itself (DATA frames, END_STREAM), so only the rule's
    ``Content-Length`` is kept; ``Connection``, ``Transfer-Encoding`` and the other
    connection-specific fields are dropped.
    """
    framing = frame_response(status, headers, body_length=body_length, method=method)
    fields: list[tuple[bytes, bytes]] = [(b":status", b"%d" % status), _SERVER, (b"date", http_date())]
    for name, value in framing.headers.items():
        if name in _CONNECTION_FIELDS:
            continue
        fields.append((name.encode("latin-1"), value.encode("latin-1")))
    lines = framing.header_lines
    if lines.startswith(b"Content-Length: "):
        fields.append((b"content-length", lines[16 : lines.index(b"\r\n")]))
    return fields, framing.send_body


class Http2Request(Request):
    """A :class:`Request` whose body comes from an HTTP/2 stream (same API for handlers)."""

    __slots__ = ("_stream",)

    def __init__(self, head: RequestHead, stream: Http2Stream) -> None:
        super().__init__(head, stream.conn.connection)
        self._stream = stream
        if stream.ended and not stream.chunks:
            self._reading_done = True

    async def iter_body(self) -> AsyncIterator[bytes]:
        """The body as it arrives, DATA frame by DATA frame (see :meth:`Request.iter_body`)."""
        if self._reading_done:
            return
        stream = self._stream
        conn = stream.conn
        while True:
            if stream.too_large:
                raise TooLargeError(f"request body is over {conn.server.max_body_bytes} bytes", 413)
            if stream.chunks:
                data, flow_length = stream.chunks.popleft()
                conn.consumed(stream, flow_length)
                if data:
                    yield data
                continue
            if stream.ended:
                self._reading_done = True
                return
            if stream.gone or conn.closed:
                raise ReadError("the client reset the stream before the body was complete")
            if not await stream.wait(conn.server.body_timeout):
                raise ReadTimeout("the client sent no body data in time")

    def _drain_parsed(self) -> bool:
        stream = self._stream
        while stream.chunks:
            stream.conn.consumed(stream, stream.chunks.popleft()[1])
        if stream.ended:
            self._reading_done = True
        return self._reading_done


def request_head(method: str, target: bytes, headers: Headers) -> RequestHead:
    """A :class:`RequestHead` for an HTTP/2 request (version ``"2"``)."""
    return RequestHead(method, target, "2", headers, True, False)


class Http2ResponseWriter:
    """What a streaming response uses to send itself over an HTTP/2 stream (see ``ResponseWriter``).

    Attributes:
        request: the request being answered.
        head_only: True for HEAD (send the head, no body).
        http2: True (streaming responses take their HTTP/2 path on it).
    """

    __slots__ = ("_stream", "chunked", "has_body", "head_only", "head_sent", "keep_alive", "request")

    http2 = True

    def __init__(self, stream: Http2Stream, request: Request) -> None:
        self._stream = stream
        self.request = request
        self.head_only = request.method == "HEAD"
        self.keep_alive = True
        self.chunked = False
        self.head_sent = False
        self.has_body = True

    @property
    def h2_stream(self) -> Http2Stream:
        """The stream this writer sends on."""
        return self._stream

    @property
    def server(self) -> HttpServer:
        """The server this response belongs to (``server.closing`` tells of a shutdown)."""
        return self._stream.conn.server

    async def write_head(self, status_code: int, headers: Headers) -> None:
        """Send the status and headers (HEADERS frame)."""
        fields, send_body = response_headers(status_code, headers, None, self.request.method)
        self.has_body = send_body
        self.head_sent = True
        self._stream.send_headers(fields, end_stream=not send_body)

    async def write(self, data: bytes) -> None:
        """Send a piece of the body (DATA frames; waits for flow-control window)."""
        if not self.has_body or not data:
            return
        await self._stream.send_data(data)

    async def end(self) -> None:
        """Finish the body (END_STREAM)."""
        if self.has_body and not self._stream.response_ended:
            await self._stream.send_data(b"", end_stream=True)


def malformed(reason: str) -> RemoteProtocolError:
    """A malformed request on a stream (answered with RST_STREAM PROTOCOL_ERROR)."""
    return RemoteProtocolError(reason, 400)
