"""Answering one HTTP/2 stream: the handler through the middleware chain, then the response.

The same error policy as HTTP/1.1 (``server/exchange.py``): a bad request → its 4xx; a handler
that raises → 500 if nothing was sent yet, else RST_STREAM INTERNAL_ERROR; a client that goes away
→ the stream is dropped. Where HTTP/1.1 closes the connection, HTTP/2 resets only the stream.

Streaming responses (``StreamingResponse``, ``EventSourceResponse``) take :func:`send_streaming`
(``StreamingResponse.send`` dispatches here on an HTTP/2 writer): each piece the producer yields
becomes DATA frames, sent as the flow-control window allows (a slow reader holds the producer
back by the window and nothing more); an idle event stream gets heartbeat comments from a timer
while the producer waits; RST_STREAM or the connection closing interrupts a producer parked in an
``await`` at once (``StreamInterrupted``), as on HTTP/1.1.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from time import monotonic
from typing import TYPE_CHECKING, Any

import h2.exceptions
import orjson
from h2.errors import ErrorCodes

from .._errors import NetworkError, ProtocolError, ReadError, TimeoutError
from ..io.clock import Timer, get_clock
from ..io.flowno_compat import current_task, sleep
from ..protocol.headers import Headers
from ..protocol.models import Response
from .http2_stream import Http2ResponseWriter, Http2Stream, response_headers
from .middleware import ErrorAnswer, run_error_hooks
from .observer import observe
from .streaming import _close_body

if TYPE_CHECKING:
    from .http2 import Http2Connection
    from .request import Request
    from .streaming import StreamingResponse

__all__ = ["run_stream", "send_error_answer", "send_streaming"]

logger = logging.getLogger("flowno_io.server")


async def run_stream(conn: Http2Connection, stream: Http2Stream) -> None:
    """Route and handle the stream's request and send the response (the stream's coroutine)."""
    server = conn.server
    request = stream.request
    if request is None:
        return
    try:
        try:
            chain = server._chain
            if server._observer is not None:  # metrics, tracing, Server-Timing (server/observer.py)
                result = await observe(server._observer, server, request)
            else:
                result = await (server._call_handler(request) if chain is None else chain(request))
        except ProtocolError as exc:  # body too large, invalid JSON
            await send_error(conn, stream, exc.status_hint, str(exc), request)
            return
        except (NetworkError, TimeoutError):
            conn.reset(stream, ErrorCodes.CANCEL)
            return
        except Exception:
            logger.exception("handler for %s %s raised", request.method, request.path)
            await send_error(conn, stream, 500, "internal server error", request)
            return
        server.stats["requests_served"] += 1
        if isinstance(result, Response):
            await send_response(stream, request, result)
            return
        writer = Http2ResponseWriter(stream, request)
        try:
            await result.send(writer)
        except (NetworkError, TimeoutError):
            conn.reset(stream, ErrorCodes.CANCEL)
        except Exception:
            logger.exception("streaming response for %s %s failed", request.method, request.path)
            if stream.headers_sent:
                conn.reset(stream, ErrorCodes.INTERNAL_ERROR)
            else:
                await send_error(conn, stream, 500, "internal server error", request)
    except (NetworkError, TimeoutError):
        conn.reset(stream, ErrorCodes.CANCEL)
    finally:
        await conn.stream_done(stream)


async def send_error_answer(conn: Http2Connection, stream: Http2Stream) -> None:
    """Answer a stream whose request head was refused (431, 400) without running a handler."""
    error = stream.error
    try:
        if error is not None:
            await send_error(conn, stream, error.status_hint, str(error), None)
    except (NetworkError, TimeoutError):
        pass
    finally:
        await conn.stream_done(stream)


async def send_response(stream: Http2Stream, request: Request, response: Response) -> None:
    """Send a plain response: HEADERS, then the body as DATA frames as the window allows."""
    body = response.body
    fields, send_body = response_headers(response.status_code, response.headers, len(body), request.method)
    if not send_body or not body:
        stream.send_headers(fields, end_stream=True)
    else:
        stream.send_headers(fields, end_stream=False, flush=False)
        await stream.send_data(body, end_stream=True)


_ERROR_HEADERS = Headers({"Content-Type": "application/json"})


async def send_error(
    conn: Http2Connection, stream: Http2Stream, status: int, message: str, request: Request | None
) -> None:
    """Answer ``status`` with a JSON error body; the error hooks (access log, CORS) see it first."""
    if stream.response_ended or stream.gone:
        return
    if stream.headers_sent:
        conn.reset(stream, ErrorCodes.INTERNAL_ERROR)
        return
    method = request.method if request is not None else (stream.error_target[0] or "GET")
    body = orjson.dumps({"error": message, "status": status})
    headers = _ERROR_HEADERS
    server = conn.server
    if server._error_hooks:
        headers = _ERROR_HEADERS.copy()
        if request is not None:
            answer = ErrorAnswer.of(
                conn.connection.client, conn.connection.parser, status, message, request, headers
            )
        else:
            target_method, path = stream.error_target
            answer = ErrorAnswer(conn.connection.client, status, message, target_method, path, None, headers)
        answer.size = 0 if method == "HEAD" else len(body)
        run_error_hooks(server._error_hooks, answer)
    fields, send_body = response_headers(status, headers, len(body), method)
    if not send_body:
        stream.send_headers(fields, end_stream=True)
    else:
        stream.send_headers(fields, end_stream=False, flush=False)
        await stream.send_data(body, end_stream=True)


class _Heartbeat:
    """Sends an idle event stream's heartbeat comment while its producer waits (a clock timer)."""

    __slots__ = ("data", "interval", "stream", "timer")

    def __init__(self, stream: Http2Stream, data: bytes, interval: float) -> None:
        self.stream = stream
        self.data = data
        self.interval = interval
        self.timer: Timer = get_clock().timer(self._fire)

    async def start(self) -> None:
        await self.timer.arm_at(self.stream.last_write + self.interval)

    def disarm(self) -> None:
        self.timer.disarm()

    def _fire(self) -> None:
        stream = self.stream
        conn = stream.conn
        if stream.gone or stream.shutdown or stream.response_ended or conn.closed:
            return
        now = monotonic()
        due = stream.last_write + self.interval
        if now >= due - 0.001:
            if stream.in_producer and conn.sendable(stream) >= len(self.data):
                try:
                    conn.h2.send_data(stream.stream_id, self.data)
                except h2.exceptions.ProtocolError:
                    return  # the stream closed meanwhile: no more heartbeats
                stream.last_write = now
                conn.flush()
            due = now + self.interval
        self.timer.set_deadline(due)  # the clock is running: it called us


async def send_streaming(response: StreamingResponse, writer: Any) -> None:
    """``StreamingResponse.send`` on an HTTP/2 stream (``writer`` may wrap the HTTP/2 writer).

    Raises:
        ReadError: the client reset the stream or closed the connection before the end.
        NetworkError, TimeoutError: writing failed.
        Exception: whatever the producer raised.
    """
    stream: Http2Stream = writer.h2_stream
    body = response.body
    iterator: AsyncIterator[Any] | Iterator[Any]
    iterator = body.__aiter__() if isinstance(body, AsyncIterable) else iter(body)
    try:
        await writer.write_head(response.status_code, response.headers)
        if writer.head_only:
            return
        await sleep(0)  # the stream may have started inline in the connection task: settle in ours
        stream.task = current_task()
        stream.end_on_shutdown = response._end_on_shutdown
        if stream.end_on_shutdown and (writer.server.closing or stream.conn.draining):
            stream.shutdown = True
        heartbeat = response._heartbeat
        if heartbeat is not None and response._ping_interval is not None:
            beat = stream.heartbeat = _Heartbeat(stream, heartbeat, response._ping_interval)
            await beat.start()
        is_async = isinstance(iterator, AsyncIterator)
        encode = response._encode
        try:
            while not stream.gone and not stream.shutdown:
                stream.in_producer = True
                try:
                    item = await iterator.__anext__() if is_async else next(iterator)  # type: ignore[union-attr,arg-type]
                except (StopAsyncIteration, StopIteration):
                    break
                except Exception:
                    if stream.gone or stream.shutdown:
                        break  # the producer reacted to being interrupted
                    raise
                finally:
                    stream.in_producer = False
                data = encode(item)
                if data:
                    await writer.write(data)
        finally:
            stream.task = None
            if stream.heartbeat is not None:
                stream.heartbeat.disarm()
        if stream.gone:
            raise ReadError("the client reset the stream during a streaming response")
        if stream.shutdown:
            await _close_body(iterator)
            final = response._final_bytes()
            if final:
                await writer.write(final)
        await writer.end()
    finally:
        await _close_body(iterator)
