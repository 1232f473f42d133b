"""HTTP/2 (RFC 9113) for ``HttpServer``, over the sans-IO ``h2`` state machine.

How a connection becomes HTTP/2: over TLS when ALPN chose ``h2`` (``server/tls.py``); on cleartext
when its first bytes are the client preface ``PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n`` ("prior
knowledge"; :func:`detect_preface` is asked before the HTTP/1.1 parser sees anything, so a preface
split across reads is recognised and every other first read goes to HTTP/1.1 unchanged). An
``Upgrade: h2c`` request is served as HTTP/1.1.

Design, around flowno's limits (``docs/flowno-upstream.md``):

* **One task owns the socket.** The connection runs as the server's exchange coroutine (inline in
  the driver until it first waits, then on a pooled worker): it reads, feeds ``h2``, dispatches
  the events, and flushes ``data_to_send()``. It waits on a private :class:`~flowno_io.io.poller.Poller`
  holding only its socket: READABLE, plus WRITABLE while output waits in its outbox.
* **Streams run concurrently** on the same handlers, routing and middleware as HTTP/1.1
  (``server/http2_stream.py``). A stream's handler starts inline in the connection task; one that
  waits is handed to a pooled stream task (flowno keeps finished tasks forever, so tasks are
  reused). Handlers write into the ``h2`` state machine and flush with a non-blocking ``send``;
  what the kernel does not take stays in the outbox and the connection task is woken by asking
  its poller for WRITABLE (a writable socket wakes it at once, a full one when it drains).
* **Flow control with backpressure**: a writer waits while its stream or connection window is
  exhausted, or the outbox is above ``OUTBOX_HIGH_WATER``; WINDOW_UPDATE (or the drain) wakes it.
  A connection whose outbox is above the mark is not read either (a ping flood cannot queue
  answers without bound).

Limits (:class:`Http2Limits`, and the server's own ``max_header_bytes``, ``max_headers``,
``max_body_bytes``, ``keepalive_timeout``, ``write_timeout``, ``body_timeout``):

* ``max_concurrent_streams`` (100, as nginx and Go): SETTINGS_MAX_CONCURRENT_STREAMS. A client
  exceeding it gets GOAWAY PROTOCOL_ERROR from ``h2``; a new stream while as many handlers still
  run (streams the client reset but whose handler has not finished count) gets RST_STREAM
  REFUSED_STREAM (RFC 9113 §5.1.2 allows either).
* **Rapid reset** (CVE-2023-44487): streams the client resets before their response ended, and
  refused streams, spend tokens of a bucket of ``max_resets`` refilled at ``resets_per_second``;
  an empty bucket ends the connection with GOAWAY ENHANCE_YOUR_CALM. Streams reset in the same
  read as their HEADERS never start a handler.
* **Header list** (HPACK bomb): SETTINGS_MAX_HEADER_LIST_SIZE is the server's ``max_header_bytes``
  (16 KiB), enforced while decoding (a larger decoded list: GOAWAY ENHANCE_YOUR_CALM), and the
  HPACK dynamic table is at most ``header_table_size`` (4 KiB). More than ``max_headers`` fields:
  431 on the stream.
* Request bodies: a window of ``initial_window_size`` per stream, opened as the handler reads; a
  body over ``max_body_bytes`` is dropped and the handler's read raises (413).
* Idle: no stream for ``keepalive_timeout`` → GOAWAY NO_ERROR and close; a client that reads
  nothing for ``write_timeout`` while output waits → close.
* Shutdown: ``server.close()`` (SIGTERM) sends GOAWAY with the last stream id; streams in flight
  finish (event streams end with their shutdown event) within the grace, then the connection
  closes.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Coroutine
from dataclasses import dataclass
from time import monotonic
from typing import TYPE_CHECKING, Any

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from flowno import spawn
from h2.errors import ErrorCodes
from hyperframe.frame import GoAwayFrame

from .._errors import RemoteProtocolError
from ..io.clock import Timer, get_clock
from ..io.coroutines import resume as _resume
from ..io.flowno_compat import sleep
from ..io.poller import READABLE, WRITABLE, Poller
from ..io.tls_stream import ServerTlsStream
from ..io.wakeup import Wakeup
from ..protocol.headers import Headers
from .exchange import MAX_DRAIN_BYTES
from .http2_response import run_stream, send_error_answer
from .http2_stream import Http2Request, Http2Stream, request_head

if TYPE_CHECKING:
    from .connection import Connection
    from .server import HttpServer

__all__ = [
    "DEFAULT_HEADER_TABLE_SIZE",
    "DEFAULT_INITIAL_WINDOW_SIZE",
    "DEFAULT_MAX_CONCURRENT_STREAMS",
    "DEFAULT_MAX_RESETS",
    "DEFAULT_RESETS_PER_SECOND",
    "OUTBOX_HIGH_WATER",
    "PREFACE",
    "Http2Connection",
    "Http2Limits",
    "detect_preface",
    "serve_http2",
]

logger = logging.getLogger("flowno_io.server")

#: The client connection preface (RFC 9113 §3.4).
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: Streams one connection may have open at once (nginx ``http2_max_concurrent_streams``: 128;
#: Go, hypercorn: 100).
DEFAULT_MAX_CONCURRENT_STREAMS = 100
#: HPACK dynamic table bytes the client's encoder may use (RFC 7541's default).
DEFAULT_HEADER_TABLE_SIZE = 4096
#: Request body bytes a stream may send before its handler reads them (RFC 9113's default).
DEFAULT_INITIAL_WINDOW_SIZE = 65535
#: Rapid-reset bucket: resets (and refused streams) allowed in a burst, and refilled per second.
DEFAULT_MAX_RESETS = 200
DEFAULT_RESETS_PER_SECOND = 50.0
#: Bytes of output waiting for the socket above which writers wait and the socket is not read.
OUTBOX_HIGH_WATER = 256 * 1024
#: Bytes read from the socket at a time.
RECEIVE_SIZE = 65536


@dataclass(frozen=True)
class Http2Limits:
    """HTTP/2 limits of an :class:`~flowno_io.HttpServer` (``HttpServer(http2_limits=...)``).

    The header list size, header count, body size and timeouts are the server's own
    (``max_header_bytes``, ``max_headers``, ``max_body_bytes``, ``keepalive_timeout``...).

    Attributes:
        max_concurrent_streams: SETTINGS_MAX_CONCURRENT_STREAMS (over it: REFUSED_STREAM or
            GOAWAY PROTOCOL_ERROR).
        header_table_size: the HPACK dynamic table's size at most.
        initial_window_size: the per-stream window for request bodies.
        max_resets: streams the client may reset (or have refused) in a burst before the
            connection is closed with GOAWAY ENHANCE_YOUR_CALM (rapid reset, CVE-2023-44487).
        resets_per_second: how fast that allowance refills.
    """

    max_concurrent_streams: int = DEFAULT_MAX_CONCURRENT_STREAMS
    header_table_size: int = DEFAULT_HEADER_TABLE_SIZE
    initial_window_size: int = DEFAULT_INITIAL_WINDOW_SIZE
    max_resets: int = DEFAULT_MAX_RESETS
    resets_per_second: float = DEFAULT_RESETS_PER_SECOND

    def __post_init__(self) -> None:
        if not 1 <= self.max_concurrent_streams <= 2**31 - 1:
            raise ValueError(
                f"max_concurrent_streams must be within 1..2**31-1, not {self.max_concurrent_streams}"
            )
        if not 0 <= self.header_table_size <= 2**32 - 1:
            raise ValueError(f"header_table_size must be within 0..2**32-1, not {self.header_table_size}")
        if not 1 <= self.initial_window_size <= 2**31 - 1:
            raise ValueError(f"initial_window_size must be within 1..2**31-1, not {self.initial_window_size}")
        if self.max_resets < 1 or not self.resets_per_second >= 0:
            raise ValueError("max_resets must be >= 1 and resets_per_second >= 0")


def detect_preface(data: bytes) -> bool | None:
    """Whether a connection's first bytes are the HTTP/2 preface; ``None`` while they may still be.

    Example:
        >>> detect_preface(b"PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n"), detect_preface(b"PRI * H")
        (True, None)
        >>> detect_preface(b"GET / HTTP/1.1\\r\\n"), detect_preface(b"PRI * HTTP/1.1\\r\\n\\r\\n")
        (False, False)
    """
    if len(data) >= len(PREFACE):
        return data.startswith(PREFACE)
    return None if PREFACE.startswith(data) else False


async def serve_http2(server: HttpServer, connection: Connection, data: bytes) -> bool:
    """Serve ``connection`` as HTTP/2 until it closes (``data``: bytes already read); False."""
    conn = Http2Connection(server, connection)
    try:
        await conn.run(data)
    except Exception:
        logger.exception("unexpected error on an HTTP/2 connection")
    finally:
        conn.close()
    return False


class _StreamWorker:
    __slots__ = ("job", "wakeup")

    def __init__(self) -> None:
        self.wakeup = Wakeup()
        self.job: tuple[Coroutine[Any, Any, None], Any] | None = None


class _StreamTasks:
    """Pooled tasks of a server resuming stream handlers that wait (tasks are never freed by flowno)."""

    def __init__(self, server: HttpServer) -> None:
        self.server: HttpServer = weakref.proxy(server)
        self.idle: list[_StreamWorker] = []
        server._close_callbacks.add(self._on_server_close)

    async def run(self, coroutine: Coroutine[Any, Any, None], command: Any) -> None:
        """Go on running ``coroutine`` (which yielded ``command``) on a pooled task."""
        if self.idle:
            worker = self.idle.pop()
            worker.job = (coroutine, command)
            worker.wakeup.set()
        else:
            await spawn(self._work((coroutine, command)))

    async def _work(self, job: tuple[Coroutine[Any, Any, None], Any] | None) -> None:
        worker = _StreamWorker()
        while job is not None:
            try:
                await _resume(job[0], job[1])
            except Exception:
                logger.exception("unexpected error in an HTTP/2 stream")
            if self.server.closing:
                return
            worker.job = None
            self.idle.append(worker)
            await worker.wakeup.wait()
            job = worker.job

    def _on_server_close(self) -> None:
        idle, self.idle = self.idle, []
        for worker in idle:
            worker.wakeup.set()  # with no job: the task ends


_pools: weakref.WeakKeyDictionary[HttpServer, _StreamTasks] = weakref.WeakKeyDictionary()


def _tasks_of(server: HttpServer) -> _StreamTasks:
    tasks = _pools.get(server)
    if tasks is None:
        tasks = _pools[server] = _StreamTasks(server)
    return tasks


_ET = h2.events


class Http2Connection:
    """One HTTP/2 connection: the ``h2`` state machine, the socket's outbox, the streams."""

    def __init__(self, server: HttpServer, connection: Connection) -> None:
        self.server = server
        self.connection = connection
        limits: Http2Limits = server.http2_limits
        self.limits = limits
        stream = connection.stream
        self.sock = stream.sock
        self.tls = stream if isinstance(stream, ServerTlsStream) else None
        self.fd = connection.fd
        # Inbound headers are validated by h2 (RFC 9113 §8.2); outbound ones are ours, already
        # checked by Headers (lower-case names, no CR/LF/NUL) and cleaned by response_headers().
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        machine = self.h2 = h2.connection.H2Connection(config)
        codes = h2.settings.SettingCodes
        machine.local_settings = h2.settings.Settings(
            client=False,
            initial_values={
                codes.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
                codes.MAX_HEADER_LIST_SIZE: server.max_header_bytes,
                codes.HEADER_TABLE_SIZE: limits.header_table_size,
                codes.INITIAL_WINDOW_SIZE: limits.initial_window_size,
            },
        )
        machine.decoder.max_header_list_size = server.max_header_bytes
        machine.decoder.max_allowed_table_size = limits.header_table_size
        self.poller = Poller()
        self.interest = 0
        #: Bytes ``h2`` produced that the kernel did not take yet (sent first).
        self.outbox = bytearray()
        self.stalled_since: float | None = None
        #: Streams whose handler has not finished (reset ones included).
        self.streams: dict[int, Http2Stream] = {}
        #: Streams received in the read being dispatched (started after it, unless reset in it).
        self._new: list[Http2Stream] = []
        self.window_waiters: set[Http2Stream] = set()
        #: True while the connection task dispatches a read: it flushes once afterwards.
        self.dispatching = False
        self.closed = False
        #: A connection error was sent (GOAWAY with an error): flush and close.
        self.failed = False
        #: We sent GOAWAY for a shutdown (streams above ``goaway_last`` are refused).
        self.draining = False
        self.goaway_last = 2**31 - 1
        #: The client sent GOAWAY: no new streams will come.
        self.remote_goaway = False
        self.tokens = float(limits.max_resets)
        self.tokens_at = monotonic()
        self.last_activity = monotonic()
        self.timer: Timer | None = None
        self.expired = False

    # -- the connection task ------------------------------------------------------------------

    async def run(self, data: bytes) -> None:
        """Serve until the connection closes; ``data`` was read before (the preface)."""
        server = self.server
        machine = self.h2
        machine.initiate_connection()
        # The connection window covers every stream's window: a handler that does not read its
        # body holds its own stream back, never the others.
        limits = self.limits
        machine.increment_flow_control_window(
            min(2**31 - 1 - 65535, limits.max_concurrent_streams * limits.initial_window_size)
        )
        server._close_callbacks.add(self.on_server_close)
        if server.closing:
            self.on_server_close()
        self._set_interest(READABLE)
        self.timer = get_clock().timer(self._on_timer)
        first = True
        while not self.closed:
            self.dispatching = True
            try:
                if first and data:
                    received: bytes | None = data
                else:
                    try:
                        received = self.sock.recv(RECEIVE_SIZE)
                    except BlockingIOError:
                        received = None
                    except OSError:
                        return
                    if received == b"":
                        return
                first = False
                if received is not None and not self.failed:
                    self.last_activity = monotonic()
                    await self._receive(received)
            finally:
                self.dispatching = False
            self.flush()
            if self.closed or self.failed or self._finished():
                if self.failed:
                    # Lingering close, as for HTTP/1.1 errors: the client reads our GOAWAY
                    # instead of losing it to a reset caused by its unread frames.
                    await server._linger(self.connection)
                elif self.draining:
                    machine.close_connection(last_stream_id=self.goaway_last)
                    self.flush()
                return
            if self.expired and self._expire():
                return
            await self._arm()
            want = WRITABLE if self._pending() else 0
            if len(self.outbox) < OUTBOX_HIGH_WATER:
                want |= READABLE
            self._set_interest(want)
            if self.poller.ready(1):
                await sleep(0)  # already readable: let the other tasks run, without a selector round trip
            else:
                await self.poller.wait()

    def _finished(self) -> bool:
        return (self.draining or self.remote_goaway) and not self.streams

    async def _arm(self) -> None:
        """Arm the timer: idle (no stream) or stalled output, whichever comes first."""
        timer = self.timer
        if timer is None:
            return
        deadline = None
        if not self.streams:
            idle = (
                self.server.keepalive_timeout
                if self.connection.requests_served
                else self.server.header_timeout
            )
            deadline = self.last_activity + idle
        if self.stalled_since is not None:
            stall = self.stalled_since + self.server.write_timeout
            deadline = stall if deadline is None else min(deadline, stall)
        if deadline is None:
            timer.disarm()
        elif timer.deadline != deadline and not timer.set_deadline(deadline):
            await get_clock()._start()

    def _on_timer(self) -> None:
        if self.closed:
            return
        if self.stalled_since is not None:
            due = self.stalled_since + self.server.write_timeout
            if monotonic() < due:  # the client took some output since: wait on
                if self.timer is not None:
                    self.timer.set_deadline(due)  # (the clock runs: it called us)
                return
            self.expired = True
            self.connection.stream.shutdown()  # a full socket may never turn writable: wake by EOF
            return
        self.expired = True
        self.wake()

    def _arm_stall(self) -> None:
        """Output started waiting for the socket: fire at the write timeout unless it drains."""
        timer = self.timer
        if timer is None or self.stalled_since is None:
            return
        due = self.stalled_since + self.server.write_timeout
        if (timer.deadline is None or timer.deadline > due) and not timer.set_deadline(due):
            self.wake()  # the clock task is not running: the connection task starts it

    def _expire(self) -> bool:
        """The timer fired: True when the connection must close now."""
        self.expired = False
        now = monotonic()
        if self.stalled_since is not None and now >= self.stalled_since + self.server.write_timeout:
            return True
        if not self.streams:
            idle = (
                self.server.keepalive_timeout
                if self.connection.requests_served
                else self.server.header_timeout
            )
            if now >= self.last_activity + idle:
                self.h2.close_connection()
                self.flush()
                return True
        return False

    def _set_interest(self, events: int) -> None:
        if events != self.interest:
            self.interest = events
            self.poller.register(self.fd, events)

    def wake(self) -> None:
        """Wake the connection task (from a stream task, a timer, a close hook)."""
        if not self.dispatching and not self.closed and not self.interest & WRITABLE:
            self._set_interest(self.interest | WRITABLE)  # a writable socket wakes it at once

    # -- output -------------------------------------------------------------------------------

    def _pending(self) -> bool:
        return bool(self.outbox) or (self.tls is not None and self.tls.backlogged)

    def flush(self) -> None:
        """Send what ``h2`` produced, without waiting; the rest waits in the outbox."""
        if self.dispatching or self.closed:
            return
        data = self.h2.data_to_send()
        outbox = self.outbox
        if data:
            outbox += data
        before = len(outbox)
        try:
            if outbox:
                try:
                    sent = self.sock.send(outbox)
                except BlockingIOError:
                    sent = 0
                del outbox[:sent]
            elif self.tls is not None and self.tls.backlogged:
                self.tls.send_backlog_nowait()
        except OSError:
            self.connection.stream.shutdown()  # the connection task sees it and ends
            outbox.clear()
            return
        if self._pending():
            if self.stalled_since is None:
                self.stalled_since = monotonic()
                self._arm_stall()
            elif len(outbox) < before:
                self.stalled_since = monotonic()  # progress (the timer re-arms when it fires)
            self.wake()
        else:
            self.stalled_since = None
        if self.window_waiters and len(outbox) < OUTBOX_HIGH_WATER <= before:
            self._wake_writers()

    def sendable(self, stream: Http2Stream) -> int:
        """Body bytes ``stream`` may put into one DATA frame now (0: wait)."""
        if len(self.outbox) >= OUTBOX_HIGH_WATER:
            return 0
        try:
            window = self.h2.local_flow_control_window(stream.stream_id)
        except h2.exceptions.ProtocolError:
            stream.gone = True
            return 0
        return min(window, self.h2.max_outbound_frame_size)

    def _wake_writers(self) -> None:
        for stream in list(self.window_waiters):
            stream.wakeup.set()

    def consumed(self, stream: Http2Stream, flow_length: int) -> None:
        """The handler took ``flow_length`` bytes of body: open the window by that much."""
        if flow_length and not self.closed:
            try:
                self.h2.acknowledge_received_data(flow_length, stream.stream_id)
            except h2.exceptions.ProtocolError:
                return
            self.flush()

    def reset(self, stream: Http2Stream, code: ErrorCodes) -> None:
        """Reset ``stream`` (RST_STREAM with ``code``) unless it already ended."""
        if stream.response_ended or self.closed:
            return
        stream.response_ended = True
        if not stream.gone:
            try:
                self.h2.reset_stream(stream.stream_id, code)
            except h2.exceptions.ProtocolError:
                pass
        self.flush()

    # -- input --------------------------------------------------------------------------------

    async def _receive(self, data: bytes) -> None:
        machine = self.h2
        try:
            events: list[Any] = machine.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            # h2 queued GOAWAY with the error's code (PROTOCOL_ERROR, ENHANCE_YOUR_CALM for an
            # oversized header list, FLOW_CONTROL_ERROR...).
            logger.debug("HTTP/2 connection error from %s:%s: %s", *self.connection.client, exc)
            self._fail()
            return
        if _oversized_frame_pending(machine):
            # h2 checks a frame's length only once the whole frame is buffered: a bogus 16 MiB
            # length would make it wait for (and hold) 16 MiB. Refuse it from its header.
            machine.close_connection(error_code=ErrorCodes.FRAME_SIZE_ERROR)
            self._fail()
        streams = self.streams
        for event in events:
            kind = type(event)
            if kind is _ET.RequestReceived:
                self._request_received(event)
            elif kind is _ET.DataReceived:
                stream = streams.get(event.stream_id)
                length = event.flow_controlled_length or 0
                if stream is None:
                    self.consumed_closed(event.stream_id, length)
                else:
                    stream.data_received(event.data or b"", length, self.server.max_body_bytes)
            elif kind is _ET.StreamEnded:
                stream = streams.get(event.stream_id)
                if stream is not None:
                    stream.ended = True
                    stream.wakeup.set()
            elif kind is _ET.StreamReset:
                self._stream_reset(event)
            elif kind is _ET.WindowUpdated or kind is _ET.RemoteSettingsChanged:
                self._wake_writers()
            elif kind is _ET.ConnectionTerminated:
                self.remote_goaway = True
                if event.error_code:
                    self._fail()
            if self.failed:
                break
        new, self._new = self._new, []
        for stream in new:
            if stream.gone or self.failed:  # reset in the same read: no handler runs
                self.streams.pop(stream.stream_id, None)
            else:
                await self._start(stream)

    def consumed_closed(self, stream_id: int, length: int) -> None:
        """Body data for a stream whose handler finished: give the window back at once."""
        if length:
            try:
                self.h2.acknowledge_received_data(length, stream_id)
            except h2.exceptions.ProtocolError:
                pass

    def _request_received(self, event: Any) -> None:
        stream_id: int = event.stream_id
        if self.draining and stream_id > self.goaway_last:
            self._refuse(stream_id)
            return
        if len(self.streams) >= self.limits.max_concurrent_streams:
            # Still running: handlers of streams the client reset (their slots are not free yet).
            self._refuse(stream_id)
            self._spend_token()
            return
        stream = Http2Stream(self, stream_id)
        stream.ended = event.stream_ended is not None
        self.streams[stream_id] = stream
        self._new.append(stream)
        try:
            head = _request_head(event.headers, self.server.max_headers)
        except (RemoteProtocolError, ValueError) as exc:
            # Answered with its status (400, 431) instead of a handler. (A bad Content-Length,
            # the ValueError, is refused by h2 first: defence in depth.)
            if not isinstance(exc, RemoteProtocolError):
                exc = RemoteProtocolError("invalid Content-Length", 400)
            stream.error = exc
            stream.error_target = _method_and_path(event.headers)
            return
        request = stream.request = Http2Request(head, stream)
        length = request._content_length
        if length is not None and length > self.server.max_body_bytes:
            stream.too_large = True

    def _refuse(self, stream_id: int) -> None:
        try:
            self.h2.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
        except h2.exceptions.ProtocolError:
            pass  # the client reset it in the same read

    def _stream_reset(self, event: Any) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is None:
            return
        if not stream.response_ended:
            self._spend_token()
        stream.response_ended = True
        stream.stop("disconnect")

    def _spend_token(self) -> None:
        now = monotonic()
        limits = self.limits
        self.tokens = min(
            float(limits.max_resets), self.tokens + (now - self.tokens_at) * limits.resets_per_second
        )
        self.tokens_at = now
        self.tokens -= 1
        if self.tokens < 0 and not self.failed:
            logger.warning(
                "HTTP/2 client %s:%s resets streams too fast (rapid reset): closing", *self.connection.client
            )
            self.h2.close_connection(error_code=ErrorCodes.ENHANCE_YOUR_CALM)
            self._fail()

    def _fail(self) -> None:
        self.failed = True
        for stream in list(self.streams.values()):
            stream.stop("disconnect")

    async def _start(self, stream: Http2Stream) -> None:
        """Run the stream's handler inline until it first waits, then on a pooled task."""
        coroutine = (
            run_stream(self, stream) if stream.request is not None else send_error_answer(self, stream)
        )
        try:
            command = coroutine.send(None)
        except StopIteration:
            return
        await _tasks_of(self.server).run(coroutine, command)

    async def stream_done(self, stream: Http2Stream) -> None:
        """The stream's handler finished (called by it)."""
        if self.streams.pop(stream.stream_id, None) is None:
            return
        if stream.heartbeat is not None:
            stream.heartbeat.disarm()
        self.connection.requests_served += 1
        if not stream.response_ended:
            self.reset(stream, ErrorCodes.CANCEL)
        elif not stream.ended and not stream.gone and not self.closed and not _drainable(stream):
            # A response complete before its request (RFC 9113 §8.1): the client may stop sending.
            # (A short rest is read and dropped instead: some clients, httpx among them, fail a
            # request whose upload is cut short even after its response arrived.)
            try:
                self.h2.reset_stream(stream.stream_id, ErrorCodes.NO_ERROR)
            except h2.exceptions.ProtocolError:
                pass
        while stream.chunks:
            self.consumed_closed(stream.stream_id, stream.chunks.popleft()[1])
        self.flush()
        if not self.streams and not self.closed:
            self.last_activity = monotonic()
            if self.draining or self.remote_goaway:
                self.wake()
            elif not self.dispatching:
                await self._arm()

    # -- shutdown -----------------------------------------------------------------------------

    def on_server_close(self) -> None:
        """The server begins a graceful shutdown: GOAWAY now, close once the streams finished.

        The GOAWAY is written past ``h2`` (whose state machine allows no frame after its own
        GOAWAY), so the streams in flight can still send; ``h2.close_connection`` ends it.
        """
        if self.draining or self.closed:
            return
        self.draining = True
        self.goaway_last = self.h2.highest_inbound_stream_id
        self.outbox += self.h2.data_to_send()
        self.outbox += GoAwayFrame(0, last_stream_id=self.goaway_last, error_code=0).serialize()
        for stream in list(self.streams.values()):
            stream.stop("shutdown")
        self.flush()
        self.wake()

    def close(self) -> None:
        """Forget the connection (the server closes its socket): every stream stops."""
        if self.closed:
            return
        self.closed = True
        self.server._close_callbacks.discard(self.on_server_close)
        if self.timer is not None:
            self.timer.disarm()
        for stream in list(self.streams.values()):
            stream.stop("disconnect")
        self.poller.close()


def _oversized_frame_pending(machine: h2.connection.H2Connection) -> bool:
    """True when the partial frame ``h2`` holds announces a length over the frame size limit."""
    pending = machine.incoming_buffer._data  # h2's own buffer of the frame being received
    return len(pending) >= 3 and int.from_bytes(pending[:3], "big") > machine.max_inbound_frame_size


def _method_and_path(fields: list[tuple[bytes, bytes]]) -> tuple[str | None, str | None]:
    """The ``:method`` and ``:path`` (without the query) of a refused request, for its access log."""
    pseudo = {name: value.decode("latin-1") for name, value in fields if name in (b":method", b":path")}
    path = pseudo.get(b":path")
    return pseudo.get(b":method"), path.split("?", 1)[0] if path is not None else None


def _drainable(stream: Http2Stream) -> bool:
    """True when the rest of an unread request body is announced and at most ``MAX_DRAIN_BYTES``."""
    request = stream.request
    length = request._content_length if request is not None else None
    return length is not None and length - stream.received <= MAX_DRAIN_BYTES


def _request_head(fields: list[tuple[bytes, bytes]], max_headers: int) -> Any:
    """The request head of a HEADERS block (``h2`` checked the pseudo-headers, RFC 9113 §8.3)."""
    method = path = authority = None
    headers: dict[str, list[str]] = {}
    count = 0
    for name, value in fields:
        if name[:1] == b":":
            if name == b":method":
                method = value.decode("latin-1")
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value.decode("latin-1")
            continue
        if b"\r" in value or b"\n" in value or b"\0" in value:
            raise RemoteProtocolError("invalid character in a header value", 400)
        count += 1
        key = name.decode("latin-1")
        values = headers.get(key)
        if values is None:
            headers[key] = [value.decode("latin-1")]
        else:
            values.append(value.decode("latin-1"))
    if count > max_headers:
        raise RemoteProtocolError(f"more than {max_headers} header fields", 431)
    cookies = headers.get("cookie")
    if cookies is not None and len(cookies) > 1:
        headers["cookie"] = ["; ".join(cookies)]  # RFC 9113 §8.2.3
    if authority and "host" not in headers:
        headers["host"] = [authority]
    if method is None or not path:
        raise RemoteProtocolError("CONNECT and requests without :path are not supported", 400)
    return request_head(method, path, Headers._from_trusted(headers))
