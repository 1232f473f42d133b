"""The state of each streaming response while it is sent, and the per-server monitor of them.

Design in ``streaming.py`` (which holds the responses): the monitor task watches every streaming
socket in a private ``epoll`` for hang-ups, sends heartbeats and flushes the bytes a non-blocking
send left pending; a subscription stream that waits runs without a task (``StreamDetached``) and
the monitor finishes it.
"""

from __future__ import annotations

import fcntl
import functools
import heapq
import itertools
import select
import socket as _socket
import struct
import termios
import weakref
from collections import deque
from time import monotonic
from typing import TYPE_CHECKING, Any

from flowno import spawn

from .._errors import ProtocolError
from ..io.clock import get_clock
from ..io.flowno_compat import TaskCancelled, TaskHandle, current_loop, current_task, interrupt
from ..io.poller import HANGUP, WRITABLE, Poller
from ..protocol.http11_server import encode_chunk
from .pubsub import Subscription

if TYPE_CHECKING:
    from .server import HttpServer, ResponseWriter
    from .streaming import StreamingResponse

__all__ = ["BATCH_BYTES", "StreamDetached", "StreamInterrupted"]

#: Bytes of pieces a producer yields without waiting that are written together at most.
BATCH_BYTES = 64 * 1024

_WATCH_EVENTS = HANGUP
_GONE_EVENTS = HANGUP | select.EPOLLERR
#: Seconds per watched stream between two timer wake-ups of the monitor (heartbeats, write
#: timeouts). On flowno's own loop each wait re-adds the monitor's epoll to the loop's selector,
#: and the kernel checks every fd inside it for loops then (~0.5 ms of CPU at 10,000 streams);
#: heartbeats due at spread-out times would wake it ~1,000 times a second: half a core. On
#: ``flowno_io.EventLoop`` the epoll stays registered (``Poller``) and a wake costs tens of µs,
#: whatever the streams; the slack still bounds the wakes (a timer due is at most ~1 s late at
#: 19,000 streams, with a heartbeat every 15 s and a write timeout of 30 s, and ~50 ms at 1,000).
#: Socket events (hang-ups, writability) still wake it at once.
TIMER_SLACK_PER_STREAM = 50e-6


class StreamInterrupted(TaskCancelled):  # type: ignore[misc]
    """Thrown into a producer parked in an ``await`` when its response must stop.

    ``reason`` is ``"disconnect"`` (the client went away) or ``"shutdown"`` (the server is
    closing an event stream). It is a flowno ``TaskCancelled``, so cleanup code written for flowno
    cancellation handles it; the producer's ``finally`` blocks run.
    """

    def __init__(self, by: TaskHandle[Any], reason: str) -> None:
        super().__init__(by)
        self.reason = reason


class StreamDetached(BaseException):
    """Raised out of ``StreamingResponse.send`` when the stream goes on without a task.

    The server's worker (or driver) that runs the exchange lets the connection be: the stream's
    monitor owns it until the response ends, then hands it back (``HttpServer._finish_detached``).
    A ``BaseException``, so that no ``except Exception`` between ``send`` and the worker takes it
    for a failure.
    """


class _ActiveStream:
    """The state of one streaming response while it is being sent."""

    __slots__ = (
        "detachable",
        "detached",
        "due",
        "end_on_shutdown",
        "fd",
        "finishing",
        "gone",
        "heap_seq",
        "heartbeat",
        "in_producer",
        "interval",
        "items_sent",
        "last_write",
        "monitor",
        "pending",
        "pending_since",
        "response",
        "shutdown",
        "sock",
        "stalled_since",
        "subscription",
        "task",
        "unacked",
        "writer",
    )

    def __init__(
        self,
        writer: ResponseWriter,
        heartbeat: bytes | None,
        interval: float | None,
        end_on_shutdown: bool,
        response: StreamingResponse | None = None,
    ) -> None:
        self.writer = writer
        #: The response being sent (its ``_encode`` turns a published item into bytes).
        self.response = response
        self.end_on_shutdown = end_on_shutdown
        self.sock: _socket.socket = writer.stream.sock
        self.fd = self.sock.fileno()
        #: The task running the response (see ``StreamingResponse.send`` for why it is stable).
        self.task: Any = current_task()
        self.monitor: _StreamMonitor | None = None
        #: True while the worker is parked in the producer: only then may others write (heartbeats,
        #: direct deliveries), and only then is the producer interrupted.
        self.in_producer = False
        self.gone = False
        self.shutdown = False
        self.interval = interval
        self.heartbeat = None
        if heartbeat is not None and interval is not None and not writer.head_only:
            self.heartbeat = _framed_heartbeat(heartbeat) if writer.chunked else heartbeat
        #: Framed bytes that a non-blocking send could not hand to the kernel yet; they go out
        #: before anything else (the monitor flushes them when the socket is writable).
        self.pending = b""
        self.pending_since = 0.0
        self.last_write = monotonic()
        #: Bytes the peer had not acknowledged at the last heartbeat, and since when that queue
        #: has not shrunk: a peer that takes nothing (stopped reading, or vanished without a FIN)
        #: is found this way, as heartbeats alone fit in the send buffer and never block.
        self.unacked = 0
        self.stalled_since: float | None = None
        #: The monitor's live heap entry for this stream (its due time and sequence number).
        self.due: float | None = None
        self.heap_seq = -1
        #: Pieces (SSE events) of the body sent so far (for metrics).
        self.items_sent = 0
        #: The body when it is a :class:`~flowno_io.Subscription`.
        self.subscription: Subscription[Any] | None = None
        #: True when the stream may run without a task while it waits: a subscription body on a
        #: plain HTTP/1.1 socket, sent by the server's own writer (wrappers such as the access
        #: log's counting writer must see every write, so they keep their task).
        self.detachable = False
        #: True while no task runs the response (``detach``); ``finishing`` once its end is queued.
        self.detached = False
        self.finishing = False

    def stop(self, reason: str) -> None:
        """Mark the response stopped; interrupt the producer if the worker is parked in it."""
        if reason == "disconnect":
            self.gone = True
            if self.monitor is not None:
                self.monitor.unwatch(self)
        elif self.end_on_shutdown:
            self.shutdown = True
        else:
            return  # runs to its end; the server force-closes it after the grace period
        if self.detached:
            if self.monitor is not None:
                self.monitor.finish_later(self)
        elif self.in_producer:
            loop = current_loop()
            interrupt(self.task, StreamInterrupted(TaskHandle(loop, self.task), reason))
        elif reason == "disconnect":
            try:  # a worker blocked in send_all wakes up with an error
                self.sock.shutdown(_socket.SHUT_RDWR)
            except OSError:
                pass

    def send_nowait(self, data: bytes, now: float) -> None:
        """Send framed ``data`` without blocking; what the kernel does not take becomes ``pending``.

        Only while the worker is parked in the producer (``in_producer``), so writes never interleave.
        """
        try:
            sent = self.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.stop("disconnect")
            return
        if sent == len(data):
            self.pending = b""
            return
        if not self.pending:
            self.pending_since = now
        self.pending = data[sent:]
        if self.monitor is not None:
            self.monitor.flush_later(self)

    def send_heartbeat(self, now: float) -> None:
        """Send a heartbeat (or what is pending) without blocking."""
        if self.in_producer and not self.gone and not self.shutdown and self.heartbeat is not None:
            queued = _unacked_bytes(self.sock)
            if queued == 0 or queued < self.unacked:
                self.stalled_since = None  # the peer took something since the last heartbeat
            elif self.stalled_since is None:
                self.stalled_since = now
            self.send_nowait(self.pending or self.heartbeat, now)
            self.unacked = _unacked_bytes(self.sock)
            self.last_write = now

    def deliver(self, data: bytes) -> bool:
        """Send a published piece straight from the publisher's task; False when the worker must.

        Used for a :class:`~flowno_io.Subscription` body whose worker waits for its next item: a
        fan-out to N subscribers then costs N ``send`` calls and no task switch per subscriber.
        """
        if not self.in_producer or self.pending or self.gone or self.shutdown:
            return False
        if data:
            now = monotonic()
            self.send_nowait(_shared_chunk(data) if self.writer.chunked else data, now)
            self.last_write = now
            self.items_sent += 1
        return True

    def __call__(self, item: Any) -> bool:
        """A :class:`~flowno_io.Subscription`'s direct delivery (``_direct``): :meth:`deliver` of
        the encoded item, inlined for the common case (the kernel takes it all), as a fan-out
        runs it once per subscriber. The stream itself is the callback: no closure per subscriber.
        """
        if not self.in_producer or self.pending or self.gone or self.shutdown or self.response is None:
            return False
        data = item if type(item) is bytes else self.response._encode(item)
        if not data:
            return True
        if self.writer.chunked:
            data = _shared_chunk(data)
        try:
            sent = self.sock.send(data)
        except (BlockingIOError, OSError):
            sent = -1  # the slow path below sees the error again, or keeps the bytes pending
        now = monotonic()
        self.last_write = now
        if sent != len(data):
            self.send_nowait(data if sent <= 0 else data[sent:], now)
        return True

    def detach(self) -> bool:
        """Go on without a task while the subscription waits (see the module docstring).

        Only between two items: nothing buffered, nothing pending, and the request's body ended
        (what is left of it is already parsed and dropped); the connection's parser is released.
        False (nothing changed) otherwise.
        """
        subscription = self.subscription
        if (
            not self.detachable
            or subscription is None
            or subscription._buffer
            or subscription._closed
            or self.pending
            or self.gone
            or self.shutdown
            or self.finishing
            or self.monitor is None
        ):
            return False
        request = self.writer.request
        try:
            if not request._drain_parsed():
                return False
        except ProtocolError:
            return False
        connection = request._connection
        if not connection.unfed:
            connection.parser.release()
        self.detached = True
        self.in_producer = True  # others may write: the fan-out, heartbeats, the monitor's flushes
        self.task = None
        subscription._waiting = True
        subscription._on_close = self
        return True

    def on_body_closed(self) -> None:
        """The subscription closed (topic closed, overflow policy): end the detached response."""
        if self.detached and self.monitor is not None:
            self.monitor.finish_later(self)

    def send_buffered(self, now: float) -> None:
        """Send what the subscription buffered while bytes were pending (a detached stream, once
        the socket took them), ``BATCH_BYTES`` at a time, without blocking."""
        subscription = self.subscription
        response = self.response
        if subscription is None or response is None:
            return
        buffer = subscription._buffer
        while buffer and not self.pending and not self.gone and not self.shutdown:
            batch: list[bytes] = []
            batched = 0
            while buffer and batched < BATCH_BYTES:
                data = response._encode(buffer.popleft())
                if data:
                    batch.append(data)
                    batched += len(data)
            if batch:
                data = batch[0] if len(batch) == 1 else b"".join(batch)
                self.send_nowait(encode_chunk(data) if self.writer.chunked else data, now)
                self.last_write = now
                self.items_sent += len(batch)

    async def flush(self) -> None:
        """Send the bytes still pending (the worker's own writes go after them)."""
        if self.pending:
            pending, self.pending = self.pending, b""
            await self.writer.stream.send_all(pending, timeout=self.writer.server.write_timeout)

    async def write(self, data: bytes) -> None:
        """Send one piece of the body (after any bytes still pending)."""
        await self.flush()
        await self.writer.write(data)
        self.last_write = monotonic()


class _StreamMonitor:
    """Per-server task: disconnects, heartbeats and pending-byte flushes of streaming responses."""

    def __init__(self, server: HttpServer) -> None:
        # A proxy: ``_monitors`` maps the server to this monitor, which must not keep it alive.
        self.server: HttpServer = weakref.proxy(server)
        self.streams: dict[int, _ActiveStream] = {}
        self._poller: Poller | None = None
        self._heap: list[tuple[float, int, _ActiveStream]] = []
        self._seq = itertools.count()
        self._running = False
        #: Pieces sent by the streams no longer watched (with theirs: ``items_sent()``).
        self.items_sent_ended = 0
        #: Detached streams to finish (``finish_later``), in order.
        self._finishing: deque[_ActiveStream] = deque()
        server._close_callbacks.add(self._on_server_close)

    # -- registration (called by the worker) ---------------------------------------------------

    async def watch(self, stream: _ActiveStream) -> None:
        """Start watching ``stream`` (spawning the monitor task if needed)."""
        if self._poller is None:
            self._poller = Poller(wakeable=True)
        stream.monitor = self
        self.streams[stream.fd] = stream
        self._poller.register(stream.fd, _WATCH_EVENTS)
        if stream.heartbeat is not None and stream.interval is not None:
            self._schedule(stream, stream.last_write + stream.interval)
        if self.server.closing and stream.end_on_shutdown:
            stream.shutdown = True
        if not self._running:
            self._running = True
            await spawn(self._run())

    def unwatch(self, stream: _ActiveStream) -> None:
        """Stop watching ``stream`` (idempotent)."""
        if self.streams.get(stream.fd) is not stream:
            return
        del self.streams[stream.fd]
        self.items_sent_ended += stream.items_sent
        stream.heap_seq = -1  # its heap entry is now stale
        if self._poller is not None:
            self._poller.unregister(stream.fd)
        if not self.streams and self.server.closing:
            self._poke()  # let the monitor exit

    def items_sent(self) -> int:
        """Pieces (SSE events) sent by every stream so far, those still running included."""
        return self.items_sent_ended + sum(stream.items_sent for stream in self.streams.values())

    def flush_later(self, stream: _ActiveStream) -> None:
        """Flush ``stream.pending`` once the socket is writable; drop the client after the write timeout."""
        if self.streams.get(stream.fd) is not stream:
            return
        if self._poller is not None:
            self._poller.modify(stream.fd, _WATCH_EVENTS | WRITABLE)
        deadline = stream.pending_since + self.server.write_timeout
        if stream.due is None or stream.due > deadline:
            self._schedule(stream, deadline)

    def finish_later(self, stream: _ActiveStream) -> None:
        """Queue the end of a detached stream (the monitor task runs it: it may have to write)."""
        if stream.finishing:
            return
        stream.finishing = True
        self._finishing.append(stream)
        self._poke()

    async def _finish(self, stream: _ActiveStream) -> None:
        """End a detached stream: drop a client that left; otherwise send the rest of the response
        in a new exchange coroutine, after which the connection goes on as after any response."""
        subscription = stream.subscription
        response = stream.response
        server = self.server
        connection = stream.writer.request._connection
        if stream.gone or subscription is None or response is None:
            stream.detached = stream.in_producer = False
            if subscription is not None:
                subscription._direct = subscription._on_close = None
                subscription._waiting = False
                subscription.close()
            self.unwatch(stream)
            server._drop(connection)
            return
        await server._start(
            connection, server._finish_detached(connection, stream.writer, response._send_rest(stream))
        )

    # -- the task --------------------------------------------------------------------------------

    def _close(self) -> None:
        if self._poller is not None:
            self._poller.close()
            self._poller = None
        self._heap.clear()

    def _poke(self) -> None:
        if self._poller is not None:
            self._poller.poke()

    def _schedule(self, stream: _ActiveStream, due: float, poke: bool = True) -> None:
        seq = next(self._seq)
        stream.due = due
        stream.heap_seq = seq
        earliest = self._heap[0][0] if self._heap else None
        heapq.heappush(self._heap, (due, seq, stream))
        if poke and (earliest is None or due < earliest):
            self._poke()  # the monitor re-arms its timer

    def _on_server_close(self) -> None:
        for stream in list(self.streams.values()):
            stream.stop("shutdown")
        self._poke()

    async def _run(self) -> None:
        poller = self._poller
        assert poller is not None
        timer = get_clock().timer(self._poke)
        try:
            while self.streams or self._finishing or not self.server.closing:
                await poller.wait()
                now = monotonic()
                events = poller.ready()
                if any(fd == poller.wake_fd for fd, _ in events):
                    poller.consume_pokes()
                self._on_socket_events(events, now)
                self._on_due(now)
                finishing = self._finishing
                while finishing:
                    await self._finish(finishing.popleft())
                if self._heap:
                    slack = len(self.streams) * TIMER_SLACK_PER_STREAM
                    await timer.arm_at(max(self._heap[0][0], now + slack))
                else:
                    timer.disarm()
        finally:
            timer.disarm()
            self._running = False
            self._close()

    def _on_socket_events(self, events: list[tuple[int, int]], now: float) -> None:
        for fd, mask in events:
            stream = self.streams.get(fd)
            if stream is None:
                continue
            if mask & _GONE_EVENTS:
                stream.stop("disconnect")
                continue
            if stream.pending and stream.in_producer:
                stream.send_nowait(stream.pending, now)
            if stream.detached and not stream.pending:
                stream.send_buffered(now)
            if not stream.pending and self._poller is not None:  # flushed: stop watching writability
                self._poller.modify(fd, _WATCH_EVENTS)

    def _on_due(self, now: float) -> None:
        heap = self._heap
        write_timeout = self.server.write_timeout
        while heap and heap[0][0] <= now:
            _, seq, stream = heapq.heappop(heap)
            if seq != stream.heap_seq:
                continue  # stale: rescheduled or unwatched since
            stream.due = None
            if stream.pending:
                if now - stream.pending_since > write_timeout:
                    stream.stop("disconnect")  # not reading: treat as gone (the server closes it)
                    continue
                due = stream.pending_since + write_timeout
                if stream.interval is not None:
                    due = min(due, now + stream.interval)
                self._schedule(stream, due, poke=False)
                continue
            if stream.interval is None:
                continue
            if stream.stalled_since is not None and now - stream.stalled_since > write_timeout:
                stream.stop("disconnect")  # heartbeats have not moved the peer's window: gone
                continue
            due = stream.last_write + stream.interval
            if due <= now:
                stream.send_heartbeat(now)
                due = now + stream.interval
            if not stream.gone:
                self._schedule(stream, due, poke=False)


#: The last piece framed as a chunk by :func:`_shared_chunk`, and its framing.
_last_chunk: tuple[bytes, bytes] = (b"", b"")


def _shared_chunk(data: bytes) -> bytes:
    """``encode_chunk(data)``, framed once for every subscriber a publish delivers the same bytes to."""
    global _last_chunk
    last, framed = _last_chunk
    if data is last:
        return framed
    framed = encode_chunk(data)
    _last_chunk = (data, framed)
    return framed


@functools.lru_cache(maxsize=16)
def _framed_heartbeat(heartbeat: bytes) -> bytes:
    """``encode_chunk(heartbeat)``, one object for every stream with the same heartbeat."""
    return encode_chunk(heartbeat)


def _unacked_bytes(sock: _socket.socket) -> int:
    """Bytes in the socket's send queue the peer has not acknowledged (Linux ``SIOCOUTQ``)."""
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]  # type: ignore[no-any-return]
    except OSError:
        return 0


_monitors: weakref.WeakKeyDictionary[HttpServer, _StreamMonitor] = weakref.WeakKeyDictionary()


def _monitor_for(server: HttpServer) -> _StreamMonitor:
    monitor = _monitors.get(server)
    if monitor is None:
        monitor = _monitors[server] = _StreamMonitor(server)
    return monitor
