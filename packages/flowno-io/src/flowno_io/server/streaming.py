"""Streaming responses: a body sent as it is produced, and Server-Sent Events.

A handler returns :class:`StreamingResponse` or :class:`EventSourceResponse`; the server calls its
``send(writer)``. Design, around the limits of flowno 0.1.19's loop:

* **No task of its own, no buffer.** The connection's worker task pulls the producer itself, one
  item at a time, and asks for the next item only after the kernel took the previous one; so a
  slow reader holds the producer back by the socket buffer and nothing more (backpressure). After
  its first wait a response runs in one task until it ends (the server's worker), which is the
  task the monitor interrupts.
* **One monitor task per server** watches every streaming socket in a private ``epoll`` for
  ``EPOLLRDHUP``/``EPOLLHUP`` (the client closed or reset; incoming bytes do not wake it, so a
  pipelined request is left alone). That ``epoll``'s own fd is what the task waits on in flowno's
  selector, so the socket itself stays free for the worker. The monitor also sends heartbeat
  comments for idle event streams, with a non-blocking ``send`` while the worker is parked in
  the producer (never while the worker writes).
* **Prompt close.** When the client goes away, or the server shuts down an event stream, and the
  worker is parked inside the producer (``await sleep(60)``, a queue, a pub/sub topic), the monitor
  throws flowno's ``TaskCancelled`` into it with :func:`~flowno_io._wakeup.interrupt`, which first
  removes the task's sleep/selector/waiter records: the producer's ``finally`` runs within
  milliseconds instead of at its next write, and the worker goes on serving other connections.
* **Fan-out without task switches.** When the body is a :class:`~flowno_io.Subscription` and the
  worker waits for its next item, ``Topic.publish()`` sends the item itself (non-blocking): N
  subscribers cost N ``send`` calls in one task step, not N task switches. Bytes the kernel does
  not take stay pending and go out first (the monitor flushes them when the socket turns
  writable, or the worker before its next write); meanwhile new items queue in the subscription,
  where its overflow policy applies.

Disconnects are detected this way on Linux (``select.epoll``); elsewhere only when a write fails.
"""

from __future__ import annotations

import fcntl
import heapq
import itertools
import logging
import select
import socket as _socket
import struct
import termios
import weakref
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from time import monotonic
from typing import TYPE_CHECKING, Any

from flowno import spawn

from .._errors import NetworkError, ReadError, TimeoutError
from ..io.clock import get_clock
from ..io.coroutines import resume as _resume
from ..io.flowno_compat import TaskCancelled, TaskHandle, current_loop, current_task, interrupt, park, sleep
from ..io.poller import HANGUP, WRITABLE, Poller
from ..protocol.headers import Headers
from ..protocol.http11_server import encode_chunk
from ..protocol.sse import ServerSentEvent, encode_comment
from .pubsub import Subscription

if TYPE_CHECKING:
    from .server import HttpServer, ResponseWriter

__all__ = [
    "DEFAULT_PING_INTERVAL",
    "EventSourceResponse",
    "StreamingResponse",
]

logger = logging.getLogger("flowno_io.server")

#: Bytes of pieces a producer yields without waiting that are written together at most.
BATCH_BYTES = 64 * 1024
#: Seconds of silence after which an event stream sends a heartbeat comment (as sse-starlette;
#: proxies commonly drop connections idle for 30-60 s).
DEFAULT_PING_INTERVAL = 15.0

_WATCH_EVENTS = HANGUP
_GONE_EVENTS = HANGUP | select.EPOLLERR

Body = AsyncIterable[Any] | Iterable[Any]


class StreamInterrupted(TaskCancelled):  # type: ignore[misc]
    """Thrown into a producer parked in an ``await`` when its response must stop.

    ``reason`` is ``"disconnect"`` (the client went away) or ``"shutdown"`` (the server is
    closing an event stream). It is a flowno ``TaskCancelled``, so cleanup code written for flowno
    cancellation handles it; the producer's ``finally`` blocks run.
    """

    def __init__(self, by: TaskHandle[Any], reason: str) -> None:
        super().__init__(by)
        self.reason = reason


class _ActiveStream:
    """The state of one streaming response while it is being sent."""

    __slots__ = (
        "due",
        "end_on_shutdown",
        "fd",
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
            self.heartbeat = encode_chunk(heartbeat) if writer.chunked else heartbeat
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
        if self.in_producer:
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
            while self.streams or not self.server.closing:
                await poller.wait()
                now = monotonic()
                events = poller.ready()
                if any(fd == poller.wake_fd for fd, _ in events):
                    poller.consume_pokes()
                self._on_socket_events(events, now)
                self._on_due(now)
                if self._heap:
                    await timer.arm_at(self._heap[0][0])
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


def _abandon(step: Any) -> None:
    """End a producer step suspended in an ``await`` (its ``finally`` blocks run).

    ``close()`` on an ``__anext__()`` awaitable leaves the generator marked running, so a later
    ``aclose()`` would fail: ``GeneratorExit`` is thrown into it instead.
    """
    try:
        step.throw(GeneratorExit())
    except (GeneratorExit, StopIteration, StopAsyncIteration, RuntimeError):
        return
    except Exception:
        logger.exception("a streaming producer raised while being closed")
        return
    step.close()  # it awaited again while closing: give up on it


async def _close_body(iterator: Any) -> None:
    aclose = getattr(iterator, "aclose", None)
    try:
        if aclose is not None:
            await aclose()
        else:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
    except Exception:
        logger.exception("closing a streaming response body raised")


class StreamingResponse:
    """A response whose body is sent while it is produced (chunked on HTTP/1.1).

    Args:
        body: an async iterable (async generator) or a plain iterable of ``bytes``/``str`` pieces
            (``str`` is sent as UTF-8). Plain iterables run on the loop thread: use them for data
            already in memory.
        status: the status code.
        headers: extra response headers.
        content_type: the ``Content-Type`` (none is sent when ``None`` and absent from ``headers``).

    The producer is pulled one piece at a time, only after the previous piece was handed to the
    kernel. If the client disconnects, the producer is closed at once (its ``finally`` runs) even
    while it is parked in an ``await``; the server then closes the connection. When the server
    shuts down gracefully, the response runs to its end (within the shutdown grace period).

    Example:
        >>> from flowno_io import StreamingResponse
        >>> import urllib.request
        >>> from flowno import sleep
        >>> from flowno_io import HttpServer
        >>> from flowno_io.testing import ServerThread
        >>> async def count(request):
        ...     async def numbers():
        ...         for n in range(3):
        ...             await sleep(0.01)
        ...             yield f"{n}\\n"
        ...     return StreamingResponse(numbers(), content_type="text/plain")
        >>> server = HttpServer("127.0.0.1", 0, routes={"/count": count})
        >>> with ServerThread(server) as url:
        ...     urllib.request.urlopen(url + "/count").read()
        b'0\\n1\\n2\\n'
    """

    #: The heartbeat bytes sent after ``ping_interval`` seconds of silence (event streams only).
    _heartbeat: bytes | None = None
    _ping_interval: float | None = None
    #: Stop at once (with :meth:`_final_bytes`) when the server shuts down, instead of finishing.
    _end_on_shutdown = False

    def __init__(
        self,
        body: Body,
        status: int = 200,
        headers: Headers | Mapping[str, str | list[str]] | None = None,
        *,
        content_type: str | None = None,
    ) -> None:
        self.body = body
        self.status_code = status
        self.headers = headers.copy() if isinstance(headers, Headers) else Headers(headers)
        if content_type is not None and "content-type" not in self.headers:
            self.headers.set("Content-Type", content_type)

    def _encode(self, item: Any) -> bytes:
        if isinstance(item, bytes):
            return item
        if isinstance(item, str):
            return item.encode("utf-8")
        if isinstance(item, bytearray | memoryview):
            return bytes(item)
        raise TypeError(f"a streaming body yielded {type(item).__name__}, not bytes or str")

    def _final_bytes(self) -> bytes:
        return b""

    async def send(self, writer: ResponseWriter) -> None:
        """Send the response on ``writer`` (called by the server).

        Raises:
            ReadError: the client disconnected before the end (the server closes the connection).
            NetworkError, TimeoutError: writing failed.
            Exception: whatever the producer raised (the body is left unterminated, so the client
                sees an incomplete response).
        """
        if getattr(writer, "http2", False):  # an HTTP/2 stream: server/http2_response.py
            from .http2_response import send_streaming

            await send_streaming(self, writer)
            return
        body = self.body
        iterator: AsyncIterator[Any] | Iterator[Any]
        iterator = body.__aiter__() if isinstance(body, AsyncIterable) else iter(body)
        try:
            await writer.write_head(self.status_code, self.headers)
            if writer.head_only:
                return
            # The server may start a response inline in its driver task and hand it to a worker
            # task at its first wait; after one wait, the task running it stays the same.
            await sleep(0)
            stream = _ActiveStream(writer, self._heartbeat, self._ping_interval, self._end_on_shutdown, self)
            monitor = _monitor_for(writer.server)
            await monitor.watch(stream)
            subscription = body if isinstance(body, Subscription) else None
            try:
                if subscription is not None:  # published items may be sent from the publisher's task
                    subscription._direct = stream
                    await self._pump_subscription(subscription, stream)
                else:
                    await self._pump(iterator, stream)
            finally:
                if subscription is not None:
                    subscription._direct = None
                monitor.unwatch(stream)
            if stream.gone:
                writer.keep_alive = False
                raise ReadError("the client disconnected during a streaming response")
            if stream.shutdown:
                await _close_body(iterator)
                final = self._final_bytes()
                if final:
                    await stream.write(final)
            await stream.flush()
            await writer.end()
        finally:
            await _close_body(iterator)

    async def _pump(self, iterator: AsyncIterator[Any] | Iterator[Any], stream: _ActiveStream) -> None:
        """Send what the producer yields; pieces it yields without waiting go out in one write.

        Each ``__anext__()`` is started inline: when it finishes without waiting, its piece joins
        a batch; when it must wait, the batch is written first (so nothing ready is held back),
        then the producer waits. A producer that never waits is written every ``BATCH_BYTES``, so
        a slow reader still holds it back by the socket buffer.
        """
        is_async = isinstance(iterator, AsyncIterator)
        batch: list[bytes] = []
        batched = 0
        while not stream.gone and not stream.shutdown:
            stream.in_producer = True
            try:
                if is_async:
                    step: Any = iterator.__anext__()  # type: ignore[union-attr]
                    try:
                        command = step.send(None)
                    except StopIteration as done:
                        item = done.value  # produced without waiting
                    else:
                        if batch:  # about to wait: send what is ready first
                            stream.in_producer = False
                            try:
                                await self._write_batch(stream, batch)
                            except BaseException:
                                _abandon(step)
                                raise
                            batch, batched = [], 0
                            stream.in_producer = True
                        item = await _resume(step, command)
                else:
                    item = next(iterator)  # type: ignore[arg-type]
            except (StopAsyncIteration, StopIteration):
                stream.in_producer = False
                if batch:
                    await self._write_batch(stream, batch)
                return
            except Exception:
                if stream.gone or stream.shutdown:
                    return  # the producer reacted to being interrupted
                stream.in_producer = False
                if batch:  # what it yielded before failing still goes out
                    await self._write_batch(stream, batch)
                raise
            finally:
                stream.in_producer = False
            data = self._encode(item)
            if not data:
                continue
            batch.append(data)
            batched += len(data)
            if batched >= BATCH_BYTES:
                await self._write_batch(stream, batch)
                batch, batched = [], 0
        if batch and not stream.gone:
            await self._write_batch(stream, batch)

    async def _pump_subscription(self, subscription: Subscription[Any], stream: _ActiveStream) -> None:
        """:meth:`_pump` for a :class:`~flowno_io.Subscription` body, without a coroutine per item.

        While the subscription is empty the worker waits on its wakeup flag directly (no
        ``__anext__()`` coroutine and no resumer frame held per idle stream); what was buffered
        meanwhile goes out in one write (up to ``BATCH_BYTES``).
        """
        wakeup = subscription._wakeup
        encode = self._encode
        while not stream.gone and not stream.shutdown:
            buffer = subscription._buffer
            if not buffer:
                if subscription._closed:
                    return
                subscription._waiting = True
                stream.in_producer = True
                try:
                    if not wakeup.is_set:  # Wakeup.wait() inlined: one coroutine less per idle stream
                        await park(wakeup)
                    wakeup.clear()
                except Exception:
                    if stream.gone or stream.shutdown:
                        return  # interrupted: the client left or the server is closing
                    raise
                finally:
                    subscription._waiting = False
                    stream.in_producer = False
                continue
            batch: list[bytes] = []
            batched = 0
            while buffer and batched < BATCH_BYTES:
                data = encode(buffer.popleft())
                if data:
                    batch.append(data)
                    batched += len(data)
            if batch:
                await self._write_batch(stream, batch)

    @staticmethod
    async def _write_batch(stream: _ActiveStream, batch: list[bytes]) -> None:
        try:
            await stream.write(batch[0] if len(batch) == 1 else b"".join(batch))
        except (NetworkError, TimeoutError):
            stream.gone = True
            raise
        stream.items_sent += len(batch)


class EventSourceResponse(StreamingResponse):
    """A ``text/event-stream`` response (Server-Sent Events) for browsers' ``EventSource``.

    Args:
        events: an async iterable (or plain iterable) of events. Each item is a
            :class:`~flowno_io.ServerSentEvent`; ``bytes`` are sent as they are (already encoded
            events, e.g. encoded once and fanned out by a :class:`~flowno_io.Topic`); a ``str`` or
            any other value becomes ``ServerSentEvent(data=item)`` (dicts and lists as JSON).
        status: the status code.
        headers: extra headers (``Content-Type``, ``Cache-Control: no-cache`` and
            ``X-Accel-Buffering: no`` are set unless given).
        ping_interval: seconds of silence before a heartbeat comment is sent; ``None`` disables.
        ping_comment: the heartbeat comment's text.
        shutdown_event: sent last when the server shuts down (the stream then ends cleanly);
            ``None`` sends nothing.

    The request's ``Last-Event-ID`` (``request.last_event_id``) tells a reconnecting client's
    position. A client that disconnects closes the producer at once, as for
    :class:`StreamingResponse`; a server shutdown also ends the stream at once.

    Example:
        >>> from flowno_io import EventSourceResponse
        >>> import urllib.request
        >>> from flowno_io import HttpServer, ServerSentEvent
        >>> from flowno_io.testing import ServerThread
        >>> async def feed(request):
        ...     async def events():
        ...         yield ServerSentEvent({"n": 1}, event="tick", id="1")
        ...         yield "plain text"
        ...     return EventSourceResponse(events())
        >>> server = HttpServer("127.0.0.1", 0, routes={"/feed": feed})
        >>> with ServerThread(server) as url:
        ...     print(urllib.request.urlopen(url + "/feed").read().decode())
        event: tick
        id: 1
        data: {"n":1}
        <BLANKLINE>
        data: plain text
        <BLANKLINE>
        <BLANKLINE>
    """

    _end_on_shutdown = True

    def __init__(
        self,
        events: Body,
        status: int = 200,
        headers: Headers | Mapping[str, str | list[str]] | None = None,
        *,
        ping_interval: float | None = DEFAULT_PING_INTERVAL,
        ping_comment: str = "ping",
        shutdown_event: ServerSentEvent | None = ServerSentEvent(comment="server shutting down"),  # noqa: B008
    ) -> None:
        super().__init__(events, status, headers, content_type="text/event-stream")
        for name, value in (("Cache-Control", "no-cache"), ("X-Accel-Buffering", "no")):
            if name.lower() not in self.headers:
                self.headers.set(name, value)
        if ping_interval is not None and ping_interval <= 0:
            raise ValueError(f"ping_interval must be > 0 or None, not {ping_interval!r}")
        self._ping_interval = ping_interval
        self._heartbeat = encode_comment(ping_comment) if ping_interval is not None else None
        self._shutdown_bytes = shutdown_event.encode() if shutdown_event is not None else b""

    def _encode(self, item: Any) -> bytes:
        if isinstance(item, ServerSentEvent):
            return item.encode()
        if isinstance(item, bytes | bytearray | memoryview):
            return bytes(item)
        if item is None:
            return b""
        if type(item) is str and "\n" not in item and "\r" not in item:
            return b"data: " + item.encode() + b"\n\n"  # the common one-line event, encoded directly
        return ServerSentEvent(item).encode()

    def _final_bytes(self) -> bytes:
        return self._shutdown_bytes
