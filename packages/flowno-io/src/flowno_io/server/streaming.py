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

* **No task while a subscription waits.** A :class:`~flowno_io.Subscription` body whose stream
  is idle (nothing buffered, nothing pending) *detaches*: ``send`` raises :class:`StreamDetached`
  out of the exchange, the worker goes back to the pool (neither parking nor dropping the
  connection), the connection's parser is released, and the stream lives on as its
  :class:`_ActiveStream` alone: the topic's fan-out sends to it directly, the monitor sends its
  heartbeats, flushes what the kernel did not take and then what the subscription buffered
  meanwhile. When it must end (the subscription closes, the client leaves, the server shuts
  down) the monitor finishes the exchange: a client gone is dropped at once; otherwise the rest
  of the response goes out in a new exchange coroutine (``HttpServer._start``), after which the
  connection serves its next request or closes, as after any response. An idle live stream then
  costs no coroutine frames and no task (issue 20: ~2.5 KiB less per stream).

Disconnects are detected this way on Linux (``select.epoll``); elsewhere only when a write fails.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Mapping
from typing import Any

from .._errors import NetworkError, ReadError, TimeoutError
from ..io.coroutines import resume as _resume
from ..io.flowno_compat import current_task, park, sleep
from ..io.socket_stream import SocketStream
from ..protocol.headers import Headers
from ..protocol.sse import ServerSentEvent, encode_comment
from .connection import ResponseWriter
from .pubsub import Subscription
from .stream_monitor import (
    BATCH_BYTES,
    StreamDetached,
    StreamInterrupted,
    _ActiveStream,
    _monitor_for,
)
from .stream_monitor import _monitors as _monitors  # read by metrics.py

__all__ = [
    "DEFAULT_PING_INTERVAL",
    "EventSourceResponse",
    "StreamDetached",
    "StreamInterrupted",
    "StreamingResponse",
]

logger = logging.getLogger("flowno_io.server")

#: Seconds of silence after which an event stream sends a heartbeat comment (as sse-starlette;
#: proxies commonly drop connections idle for 30-60 s).
DEFAULT_PING_INTERVAL = 15.0

Body = AsyncIterable[Any] | Iterable[Any]


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
        detached = False
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
                    stream.subscription = subscription
                    stream.detachable = type(writer) is ResponseWriter and type(writer.stream) is SocketStream
                    await self._pump_subscription(subscription, stream)
                else:
                    await self._pump(iterator, stream)
            except StreamDetached:
                detached = True  # the stream lives on without this task: no clean-up here
                raise
            finally:
                if not detached:
                    if subscription is not None:
                        subscription._direct = None
                    monitor.unwatch(stream)
            await self._end(stream, iterator)
        finally:
            if not detached:
                await _close_body(iterator)

    async def _end(self, stream: _ActiveStream, iterator: Any) -> None:
        """After the body: the final bytes of a shutdown, the last chunk (or the error of a client gone)."""
        writer = stream.writer
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

    async def _send_rest(self, stream: _ActiveStream) -> None:
        """The rest of a detached response (its subscription closed or the server shuts down):
        what the subscription still holds, then the end, as ``send`` would have sent them."""
        subscription = stream.subscription
        assert subscription is not None and stream.monitor is not None
        stream.detached = stream.in_producer = False
        subscription._waiting = False
        subscription._on_close = None
        try:
            try:
                await self._pump_subscription(subscription, stream)
            finally:
                subscription._direct = None
                stream.monitor.unwatch(stream)
            await self._end(stream, subscription)
        finally:
            await _close_body(subscription)

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
                if stream.detachable and stream.detach():
                    raise StreamDetached
                subscription._waiting = True
                stream.task = current_task()  # a response finished after detaching runs in another task
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


#: The default ``shutdown_event`` of an event stream, and its encoding.
_SHUTTING_DOWN = ServerSentEvent(comment="server shutting down")
_SHUTTING_DOWN_BYTES = _SHUTTING_DOWN.encode()


#: The headers of an event stream (``Cache-Control``/``X-Accel-Buffering`` unless given).
_EVENT_STREAM_HEADERS = Headers(
    {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
)


@functools.lru_cache(maxsize=64)
def _encoded_comment(text: str) -> bytes:
    return encode_comment(text)


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
        shutdown_event: ServerSentEvent | None = _SHUTTING_DOWN,
    ) -> None:
        if headers is None:  # a copy of the defaults shares their names and values
            super().__init__(events, status, _EVENT_STREAM_HEADERS)
        else:
            super().__init__(events, status, headers, content_type="text/event-stream")
            for name, value in _EVENT_STREAM_HEADERS.items():
                if name not in self.headers:
                    self.headers.set(name, value)
        if ping_interval is not None and ping_interval <= 0:
            raise ValueError(f"ping_interval must be > 0 or None, not {ping_interval!r}")
        self._ping_interval = ping_interval
        # Encoded once per process, not per response (a live stream holds them for hours).
        self._heartbeat = _encoded_comment(ping_comment) if ping_interval is not None else None
        if shutdown_event is _SHUTTING_DOWN:
            self._shutdown_bytes = _SHUTTING_DOWN_BYTES
        else:
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
