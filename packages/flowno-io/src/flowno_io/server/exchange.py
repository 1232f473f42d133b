"""The exchange: from a parsed request head to the response on the wire, and the error policy.

:class:`Exchanges` is a mixin of :class:`~flowno_io.server.server.HttpServer`: the driver (in
``server.py``) reads and dispatches; here each request is routed, handled (through the middleware
chain), answered with the framing rule of ``protocol/framing.py``, and its unread body drained.
Error policy (as uvicorn's): malformed request → its 4xx (400, 413, 431, 505), lingering close;
a handler that raises → 500 if nothing was sent yet, else close.
"""

from __future__ import annotations

import inspect
import logging
import socket as _socket
import types
from collections.abc import Callable, Coroutine
from time import monotonic, perf_counter
from typing import Any, TypeAlias

import orjson

from .._errors import HttpError, NetworkError, ProtocolError, TimeoutError
from ..io.coroutines import resume as _resume
from ..io.socket_stream import SocketStream
from ..protocol.framing import frame_response
from ..protocol.headers import Headers
from ..protocol.http11_server import (
    RequestHead,
    encode_response_head,
    http_date,
)
from ..protocol.models import Response
from ..protocol.trace_context import slot_or_none, trace_slot
from .connection import FEED_SLICE, SERVER_HEADER, Connection, ResponseWriter
from .middleware import (
    ErrorAnswer,
    run_error_hooks,
)
from .observer import ExchangeObserver
from .request import Request
from .routing import MethodNotAllowed, NotFound, Router
from .streaming import StreamDetached
from .tracing import run_in_trace

__all__ = [
    "COPY_BODY_BYTES",
    "LINGERING_MAX_BYTES",
    "LINGERING_TIME",
    "LINGERING_TIMEOUT",
    "MAX_DRAIN_BYTES",
    "Exchanges",
]

logger = logging.getLogger("flowno_io.server")

_COROUTINE = types.CoroutineType

#: Bytes of unread request body the server reads and drops to keep a connection alive; a larger
#: leftover closes the connection instead.
MAX_DRAIN_BYTES = 256 * 1024
#: Lingering close after an error answer (nginx's ``lingering_close``): read and drop what the
#: client still sends, so it can read our 4xx instead of losing it to a reset. At most
#: ``LINGERING_TIME`` seconds in all, ``LINGERING_TIMEOUT`` seconds of silence, and
#: ``LINGERING_MAX_BYTES`` bytes (nginx: 30 s, 5 s, no byte limit).
LINGERING_TIME = 5.0
LINGERING_TIMEOUT = 2.0
LINGERING_MAX_BYTES = 64 * 1024 * 1024
#: Bodies larger than this are sent after the head rather than copied into one buffer with it.
COPY_BODY_BYTES = 16 * 1024


class Exchanges:
    """What the server does with each request (a mixin: ``HttpServer`` provides the state)."""

    # Provided by HttpServer.
    router: Router[Any]
    write_timeout: float
    header_timeout: float
    keepalive_timeout: float
    stats: dict[str, int]
    _closing: bool
    _has_routes: bool
    _chain: Any
    _observer: ExchangeObserver | None
    _tracing: bool
    _error_hooks: Any
    _drop: Callable[[Connection], None]

    async def _exchange(self, connection: Connection, data: bytes) -> bool:
        """Answer every request in ``data``, in order; True to keep the connection.

        Pipelined input is parsed ``FEED_SLICE`` bytes at a time, only as the requests before it
        are answered: a client that pipelines and stops reading holds the raw bytes it sent and
        a few parsed requests, not thousands. The requests parsed before a protocol error are
        answered, then the error.
        """
        self._feed(connection, data)
        return await self._serve_rest(connection, self._serve_events(connection))

    @staticmethod
    def _feed(connection: Connection, data: bytes) -> None:
        """Give the parser ``data`` (the first ``FEED_SLICE`` bytes of it; the rest waits in
        ``connection.unfed``). A protocol error is kept in ``parser.error``, answered after the
        requests parsed before it."""
        if len(data) <= FEED_SLICE:
            try:
                connection.parser.feed(data)
            except ProtocolError:
                pass
        else:
            connection.unfed = memoryview(data)
            connection.feed_unfed()

    def _serve_events(self, connection: Connection) -> Step:
        """Answer the requests parsed so far, inline while nothing has to wait.

        Returns True (all answered: keep the connection), False (close it), or the coroutine that
        finishes the request that had to wait: when it returns True, call this again for the
        requests after it (:meth:`_serve_rest`).
        """
        parser = connection.parser
        while True:
            event = parser.next_event()
            if event is None:
                if connection.unfed and connection.feed_unfed():
                    continue
                break
            if type(event) is RequestHead:
                if parser.error is not None and not parser.body_complete():
                    break  # this request's own bytes are bad: answer it with the error
                step = self._handle_nowait(connection, event)
                if step is True:
                    continue
                return step
        if parser.error is not None:
            return self._answer_parse_error(connection)
        return True

    async def _serve_rest(self, connection: Connection, step: Step) -> bool:
        """Run a :meth:`_serve_events` result to its end (in a loop: no recursion per request)."""
        while type(step) is not bool:
            if not await step:
                return False
            step = self._serve_events(connection)
        return step

    async def _answer_parse_error(self, connection: Connection) -> bool:
        parser = connection.parser
        error = parser.error
        assert error is not None
        # The error answers the request being parsed when it failed: no body for a HEAD.
        head_only = parser.message_method == "HEAD"
        await self._send_error(connection, error.status_hint, str(error), head_only=head_only)
        return False

    async def _serve_connection(self, connection: Connection) -> None:
        """Serve one connection in the calling task until it closes (``handle_client``)."""
        detached = False
        try:
            while not self._closing or connection.parser.has_events():
                head = await self._next_head(connection)
                if head is None:
                    return
                if not await self._handle(connection, head):
                    return
        except StreamDetached:
            detached = True  # the stream's monitor owns the connection now (it parks or drops it at the end)
        except Exception:  # never let one connection take the worker down
            logger.exception("unexpected error on a connection")
        finally:
            if not detached:
                self._drop(connection)

    async def _next_head(self, connection: Connection) -> RequestHead | None:
        """The next request head, or None when the connection should close quietly."""
        parser = connection.parser
        stream = connection.stream
        head_deadline: float | None = None
        while True:
            event = parser.next_event()
            if event is not None:
                if isinstance(event, RequestHead):
                    return event
                continue  # leftovers of a body already answered (drained by _finish_body)
            if parser.in_head and head_deadline is None:
                head_deadline = monotonic() + self.header_timeout
            if head_deadline is not None:
                deadline = head_deadline
            elif connection.requests_served:
                deadline = monotonic() + self.keepalive_timeout
            else:
                deadline = monotonic() + self.header_timeout
            try:
                data = await stream.receive_some(deadline=deadline)
            except (NetworkError, TimeoutError):
                return None
            if not data:
                return None
            try:
                parser.feed(data)
            except ProtocolError as exc:
                await self._send_error(connection, exc.status_hint, str(exc))
                return None

    async def _handle(self, connection: Connection, head: RequestHead) -> bool:
        """Answer one request; True when the connection may serve another."""
        step = self._handle_nowait(connection, head)
        return step if type(step) is bool else await step

    def _handle_nowait(self, connection: Connection, head: RequestHead) -> Step:
        """Answer one request inline while nothing has to wait: True when the connection may serve
        another, False to close, or the coroutine finishing the request (it returns the same)."""
        request = Request(head, connection)
        if not head.expect_continue and connection.parser.take_end_of_message():
            request._reading_done = True  # no body (an answer to Expect stays as it was)
        if self._chain is not None:
            return self._handle_chained(connection, request)
        observer = self._observer
        start = 0.0
        if observer is not None:  # metrics, tracing, Server-Timing: observer.end (server/observer.py)
            start = perf_counter()
        extra = b""  # header lines the observer adds (Server-Timing)
        try:
            result = self._call_handler_nowait(request)
            if type(result) is _Suspended:
                return self._handle_suspended(connection, request, result, start)
            if observer is not None:
                result, extra = observer.end(request, result, start)
        except Exception as exc:
            return self._handler_failed(connection, request, exc)
        return self._respond_nowait(connection, request, result, extra)

    async def _handle_suspended(
        self, connection: Connection, request: Request, suspended: _Suspended, start: float
    ) -> bool:
        """The rest of :meth:`_handle_nowait` for a handler that had to wait."""
        extra = b""
        observer = self._observer
        try:
            result = _to_response(await suspended.resume(), suspended.handler)
            if observer is not None:
                result, extra = observer.end(request, result, start)
        except Exception as exc:
            return await self._handler_failed(connection, request, exc)
        return await self._respond(connection, request, result, extra)

    async def _handle_chained(self, connection: Connection, request: Request) -> bool:
        """:meth:`_handle_nowait` through the middleware chain."""
        chain = self._chain
        observer = self._observer
        extra = b""  # header lines the observer adds (Server-Timing)
        try:
            if observer is None:
                result = await chain(request)
            else:  # the middleware see the trace too
                start = perf_counter()
                result = await (run_in_trace(request, chain(request)) if self._tracing else chain(request))
                result, extra = observer.end(request, result, start)
        except Exception as exc:
            return await self._handler_failed(connection, request, exc)
        return await self._respond(connection, request, result, extra)

    async def _handler_failed(self, connection: Connection, request: Request, exc: Exception) -> bool:
        """The error policy for a handler (or middleware) that raised ``exc``; False: close."""
        head_only = request.method == "HEAD"
        if isinstance(exc, ProtocolError):  # bad body framing, body too large, invalid JSON
            await self._send_error(
                connection, exc.status_hint, str(exc), head_only=head_only, request=request
            )
        elif not isinstance(exc, (NetworkError, TimeoutError)):
            logger.error("handler for %s %s raised", request.method, request.path, exc_info=exc)
            await self._send_error(
                connection, 500, "internal server error", head_only=head_only, request=request
            )
        return False

    def _respond_nowait(self, connection: Connection, request: Request, result: Any, extra: bytes) -> Step:
        """Send a plain response inline when the socket takes it whole; else as :meth:`_respond`."""
        stream = connection.stream
        if type(result) is not Response or type(stream) is not SocketStream:
            return self._respond(connection, request, result, extra)
        connection.requests_served += 1
        self.stats["requests_served"] += 1
        data, body, keep_alive = self._encode_response(request, result, extra)
        try:
            sent = stream.send_nowait(data)
        except (NetworkError, TimeoutError):
            return False
        if sent < len(data) or body is not None:
            return self._send_rest(connection, request, memoryview(data)[sent:], body, keep_alive)
        if not keep_alive:
            return self._close_step(connection, request)
        if request._reading_done:
            return True
        return self._finish_body(connection, request)

    async def _send_rest(
        self, connection: Connection, request: Request, data: memoryview, body: bytes | None, keep_alive: bool
    ) -> bool:
        """The end of :meth:`_respond_nowait` when the socket did not take everything at once."""
        stream = connection.stream
        try:
            if data:
                await stream.send_all(data, timeout=self.write_timeout)
            if body is not None:
                await stream.send_all(body, timeout=self.write_timeout)
        except (NetworkError, TimeoutError):
            return False
        if not keep_alive:
            return await self._close_after(connection, request)
        return await self._finish_body(connection, request)

    async def _respond(self, connection: Connection, request: Request, result: Any, extra: bytes) -> bool:
        """Send the handler's ``result`` (plain or streaming) and drain what is left of the body."""
        connection.requests_served += 1
        self.stats["requests_served"] += 1
        try:
            if isinstance(result, Response):
                keep_alive = await self._send_response(
                    connection, request, result, request._keep_alive, extra
                )
            else:
                writer = ResponseWriter(connection, request, request._keep_alive)
                try:
                    await result.send(writer)
                except (NetworkError, TimeoutError):
                    return False
                except Exception:
                    logger.exception("streaming response for %s %s failed", request.method, request.path)
                    if not writer.head_sent:
                        await self._send_error(
                            connection,
                            500,
                            "internal server error",
                            head_only=request.method == "HEAD",
                            request=request,
                        )
                    return False
                keep_alive = writer.keep_alive
        except (NetworkError, TimeoutError):
            return False
        if not keep_alive:
            return await self._close_after(connection, request)
        return await self._finish_body(connection, request)

    def _close_step(self, connection: Connection, request: Request) -> Step:
        """How a connection ends after a response that closes it: False (close now) or, when
        request bytes may still be on their way, a lingering close (a coroutine returning False).

        Closing a socket with unread bytes makes the kernel send a reset, which can destroy the
        answer in flight. As nginx's ``lingering_close on``: linger when the request's body was
        not all received or bytes followed the request; else (the usual case) close at once.
        """
        if not connection.unfed and (request._reading_done or connection.parser.body_complete()):
            return False
        return self._linger_closing(connection)

    async def _close_after(self, connection: Connection, request: Request) -> bool:
        """:meth:`_close_step` from a coroutine; False."""
        step = self._close_step(connection, request)
        return step if type(step) is bool else await step

    async def _linger_closing(self, connection: Connection) -> bool:
        await self._linger(connection)
        return False

    async def _finish_detached(
        self, connection: Connection, writer: ResponseWriter, rest: Coroutine[Any, Any, None]
    ) -> bool:
        """The end of an exchange whose streaming response went on without a task
        (``StreamDetached``, see ``streaming.py``): ``rest`` sends the end of the response, then
        the connection serves the requests that follow, as ``_handle`` and ``_exchange`` would."""
        request = writer.request
        try:
            await rest
        except (NetworkError, TimeoutError):
            return False
        except Exception:
            logger.exception("streaming response for %s %s failed", request.method, request.path)
            return False
        if not writer.keep_alive:
            return False
        if not request.body_consumed and not await self._finish_body(connection, request):
            return False
        return await self._exchange(connection, b"")

    def _may_keep_alive(self, request: Request, *, streaming: bool = False) -> bool:
        """The server's side of keep-alive, asked when a response's head is framed.

        No when the server is closing, the request asked to upgrade, or the rest of its body
        cannot be drained cheaply (unknown length, more than ``MAX_DRAIN_BYTES``, or a client
        still waiting for ``100 Continue``, which may never send it). A plain response first drops
        the body bytes already read; a streaming one may still read the body, so it does not.
        """
        if self._closing or request._upgrade:
            return False
        if request._reading_done:
            return True
        if not request._continue_sent:  # the client may never send the body it announced
            return False
        if streaming:
            if request._connection.parser.body_complete():
                return True  # the rest of the body is in memory: draining it later cannot wait
        else:
            try:
                if request._drain_parsed():
                    return True
            except ProtocolError:
                return False
        length = request._content_length
        return length is not None and length <= MAX_DRAIN_BYTES

    async def _call_handler(self, request: Request) -> Any:
        """Route ``request`` and call its handler: the response (the chain's innermost link)."""
        result = self._call_handler_nowait(request)
        if type(result) is _Suspended:
            return _to_response(await result.resume(), result.handler)
        return result

    def _call_handler_nowait(self, request: Request) -> Any:
        """:meth:`_call_handler` inline: the response, or a :class:`_Suspended` handler that waits."""
        if not self._has_routes:
            return _seed_response(request)
        try:
            route, params = self.router.match_route(request.method, request.path)
        except NotFound:
            return Response.json({"error": "not found", "status": 404, "path": request.path}, 404)
        except MethodNotAllowed as exc:
            allow = ", ".join(exc.allowed)
            body = {"error": f"method {request.method} not allowed", "status": 405, "allow": exc.allowed}
            return Response.json(body, 405, {"Allow": allow})
        if params:
            request.path_params = params
        request.route = route.pattern
        handler = route.handler
        tracing = self._tracing
        if not tracing:
            result = handler(request)
        else:  # the request's trace is current while the handler runs (made if read: server/tracing.py)
            slot = slot_or_none(None) or trace_slot()
            previous = slot.trace
            slot.trace = request
            try:
                result = handler(request)
            finally:
                slot.trace = previous
        if type(result) is Response:
            return result
        if type(result) is _COROUTINE:  # an ``async def`` handler: its first step runs here
            coroutine = run_in_trace(request, result) if tracing else result
        elif inspect.isawaitable(result):
            coroutine = _awaited(result)
        else:
            return _to_response(result, handler)
        try:
            command = coroutine.send(None)
        except StopIteration as stop:
            result = stop.value
        else:
            return _Suspended(coroutine, command, handler)
        if type(result) is Response:
            return result
        return _to_response(result, handler)

    async def _send_response(
        self,
        connection: Connection,
        request: Request,
        response: Response,
        request_keep_alive: bool,
        extra: bytes = b"",
    ) -> bool:
        """Send a plain response; True when the connection may serve another request.

        ``extra``: header lines (``Name: value\r\n``) added after the framed ones (Server-Timing).
        """
        data, body, keep_alive = self._encode_response(request, response, extra, request_keep_alive)
        stream = connection.stream
        await stream.send_all(data, timeout=self.write_timeout)
        if body is not None:  # no copy of a large body: the head went first, on its own
            await stream.send_all(body, timeout=self.write_timeout)
        return keep_alive

    def _encode_response(
        self, request: Request, response: Response, extra: bytes, request_keep_alive: bool | None = None
    ) -> tuple[bytes, bytes | None, bool]:
        """The bytes of a plain response (the head, with the body when small), the body to send
        after it when large (else None), and whether the connection may serve another request."""
        body = response.body
        framing = frame_response(
            response.status_code,
            response.headers,
            body_length=len(body),
            method=request.method,
            http_version=request.http_version,
            request_keep_alive=request._keep_alive if request_keep_alive is None else request_keep_alive,
            server_keep_alive=self._may_keep_alive(request),
        )
        head = encode_response_head(
            response.status_code,
            framing.headers,
            b"%bDate: %b\r\n%b%b" % (SERVER_HEADER, http_date(), framing.header_lines, extra),
        )
        if not framing.send_body or not body:
            return head, None, framing.keep_alive
        if len(body) <= COPY_BODY_BYTES:
            return head + body, None, framing.keep_alive
        return head, body, framing.keep_alive

    async def _finish_body(self, connection: Connection, request: Request) -> bool:
        """Read and drop what the handler left of the request body; False to close instead."""
        if request.body_consumed:
            return True
        dropped = 0
        try:
            async for chunk in request.iter_body():
                dropped += len(chunk)
                if dropped > MAX_DRAIN_BYTES:
                    return False
        except (HttpError, OSError):
            return False
        return True

    async def _send_error(
        self,
        connection: Connection,
        status: int,
        message: str,
        *,
        head_only: bool = False,
        request: Request | None = None,
    ) -> None:
        """Answer ``status`` with a JSON error body (none for HEAD), then close with lingering.

        The error hooks (middleware ``on_error``) see the answer first and may add headers.
        """
        body = orjson.dumps({"error": message, "status": status})
        headers = _ERROR_HEADERS
        if self._error_hooks:
            headers = _ERROR_HEADERS.copy()
            answer = ErrorAnswer.of(connection.client, connection.parser, status, message, request, headers)
            answer.size = 0 if head_only else len(body)
            run_error_hooks(self._error_hooks, answer)
        framing = frame_response(
            status,
            headers,
            body_length=len(body),
            method="HEAD" if head_only else "GET",
            server_keep_alive=False,
        )
        head = encode_response_head(
            status, framing.headers, b"%bDate: %b\r\n%b" % (SERVER_HEADER, http_date(), framing.header_lines)
        )
        try:
            await connection.stream.send_all(
                head + body if framing.send_body else head, timeout=self.write_timeout
            )
        except (NetworkError, TimeoutError):
            return
        await self._linger(connection)

    async def _linger(self, connection: Connection) -> None:
        """Lingering close: stop sending, then read and drop what the client still sends.

        A client that writes its whole request (a large body we refused with 413, say) before
        reading would otherwise get a reset, which destroys our answer in flight.
        """
        stream = connection.stream
        try:
            stream.sock.shutdown(_socket.SHUT_WR)
        except OSError:
            return
        deadline = monotonic() + LINGERING_TIME
        discarded = 0
        while discarded < LINGERING_MAX_BYTES and not self._closing:
            timeout = min(LINGERING_TIMEOUT, deadline - monotonic())
            if timeout <= 0:
                return
            try:
                data = await stream.receive_some(timeout=timeout)
            except (NetworkError, TimeoutError):
                return
            if not data:
                return
            discarded += len(data)


_ERROR_HEADERS = Headers({"Content-Type": "application/json"})


def _to_response(result: Any, handler: object = None) -> Any:
    if isinstance(result, Response):
        return result
    if inspect.iscoroutine(result):
        result.close()  # never awaited: close it so Python does not warn a second time
        name = getattr(handler, "__qualname__", None) or repr(handler)
        raise TypeError(
            f"handler {name} returned a coroutine ({result.__qualname__}) that was never awaited, "
            "not a response: add the missing 'await' (return await ...)"
        )
    if result is None:
        return Response(b"", 204)
    if isinstance(result, (bytes, str)):
        return Response(result)
    if isinstance(result, (dict, list)):
        return Response.json(result)
    if hasattr(result, "send"):
        return result  # a streaming response
    raise TypeError(f"a handler returned {type(result).__name__}, not a response")


def _seed_response(request: Request) -> Response:
    target = request.raw_path.decode("latin-1")
    if request.query_string:
        target += "?" + request.query_string
    line = f"{request.method} {target} HTTP/{request.http_version}"
    return Response(f"Hello, world!\nRequest: {line}", content_type="text/plain")


#: What :meth:`Exchanges._serve_events` and :meth:`Exchanges._handle_nowait` return: True (keep the
#: connection), False (close it), or a coroutine to run that returns one of those.
Step: TypeAlias = "bool | Coroutine[Any, Any, bool]"


class _Suspended:
    """A handler's coroutine that waited at its first step (``command``: what it yielded)."""

    __slots__ = ("command", "coroutine", "handler")

    def __init__(self, coroutine: Coroutine[Any, Any, Any], command: Any, handler: object) -> None:
        self.coroutine = coroutine
        self.command = command
        self.handler = handler

    def resume(self) -> Any:
        """Await this to run the rest of the coroutine in the current task; its result."""
        return _resume(self.coroutine, self.command)


async def _awaited(awaitable: Any) -> Any:
    return await awaitable
