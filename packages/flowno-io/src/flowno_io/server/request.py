"""``Request``: what a server handler receives."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import orjson

from .._errors import ReadError, RemoteProtocolError
from ..protocol.headers import Headers
from ..protocol.http11_server import END_OF_MESSAGE, RequestHead
from ..protocol.trace_context import TraceContext

if TYPE_CHECKING:
    from .connection import Connection

__all__ = ["Request"]

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


class Request:
    """One HTTP request, as a handler sees it.

    Attributes:
        method: ``"GET"``, ``"POST"``, ... (upper case, as sent).
        path: the decoded path, without the query (``"/users/7"``).
        raw_path: the path as sent (percent-encoded bytes).
        query_string: the raw query (``"a=1&b=2"``).
        path_params: values captured by the route pattern (``{"id": 7}``).
        headers: the request :class:`Headers`.
        http_version: ``"1.1"`` or ``"1.0"``.
        client: the peer's ``(host, port)``.
        route: the pattern of the route that matched (``"/users/{id:int}"``), ``None`` before
            routing or when none did.
        trace: the W3C trace context when ``TracingMiddleware`` runs (else ``None``).
    """

    __slots__ = (
        "_body",
        "_connection",
        "_content_length",
        "_continue_sent",
        "_keep_alive",
        "_query",
        "_reading_done",
        "_state",
        "_trace",
        "_upgrade",
        "client",
        "headers",
        "http_version",
        "method",
        "path",
        "path_params",
        "query_string",
        "raw_path",
        "route",
    )

    def __init__(self, head: RequestHead, connection: Connection) -> None:
        self.method = head.method
        self.path = head.path
        self.raw_path = head.raw_path
        self.query_string = head.query_string
        self.headers: Headers = head.headers
        self.http_version = head.http_version
        self.client: tuple[str, int] = connection.client
        self.path_params: dict[str, Any] = {}
        self._state: dict[str, Any] | None = None  # made at first use: most requests never use it
        #: The matched route's pattern (``/users/{id:int}``), set by routing; ``None`` when none matched.
        self.route: str | None = None
        self._trace: TraceContext | None = None  # made when first read (see ``trace``)
        self._connection = connection
        self._body: bytes | None = None
        self._query: dict[str, list[str]] | None = None
        # RFC 9110 §10.1.1: a 100 (Continue) goes only to HTTP/1.1 clients.
        self._continue_sent = not head.expect_continue or head.http_version != "1.1"
        self._content_length = head.content_length
        self._upgrade = head.upgrade
        #: The request allows keep-alive (``RequestHead.keep_alive``).
        self._keep_alive = head.keep_alive
        # A request with neither Content-Length nor chunked coding has no body; llhttp has then
        # already queued END_OF_MESSAGE right after the head.
        self._reading_done = False

    @property
    def trace(self) -> TraceContext | None:
        """The W3C trace context when the server traces (``TracingMiddleware``), else ``None``.

        Made from the request's ``traceparent``/``tracestate`` the first time it is read (a request
        whose trace nobody reads costs nothing), then the same object at every read.
        """
        trace = self._trace
        if trace is None and self._connection.server._tracing:
            trace = self._trace = TraceContext.from_fields(self.headers._fields)
        return trace

    @trace.setter
    def trace(self, value: TraceContext | None) -> None:
        self._trace = value

    @property
    def state(self) -> dict[str, Any]:
        """Free-form per-request storage for handlers and middleware."""
        state = self._state
        if state is None:
            state = self._state = {}
        return state

    @state.setter
    def state(self, value: dict[str, Any]) -> None:
        self._state = value

    # -- query ------------------------------------------------------------------------------

    @property
    def query_params(self) -> dict[str, str]:
        """Query parameters, the last value winning for repeated names (``?a=1&a=2`` → ``"2"``)."""
        return {name: values[-1] for name, values in self.query_params_all.items()}

    @property
    def query_params_all(self) -> dict[str, list[str]]:
        """Query parameters with every value of repeated names."""
        if self._query is None:
            self._query = parse_qs(self.query_string, keep_blank_values=True)
        return self._query

    @property
    def last_event_id(self) -> str | None:
        """The ``Last-Event-ID`` header an EventSource sends when it reconnects."""
        return self.headers.get("last-event-id")

    # -- body -------------------------------------------------------------------------------

    async def iter_body(self) -> AsyncIterator[bytes]:
        """The body as it arrives, chunk by chunk (each chunk at most 64 KiB of network read).

        Raises:
            ReadError: the client closed before the body was complete.
            ReadTimeout: the client sent nothing for the server's ``body_timeout``.
            TooLargeError: the body is over the server's ``max_body_bytes`` (the server answers 413).
        """
        if self._reading_done:
            return
        connection = self._connection
        parser = connection.parser
        if not self._continue_sent:
            self._continue_sent = True
            if not parser.has_events():
                await connection.stream.send_all(_CONTINUE, timeout=connection.server.write_timeout)
        while True:
            event = parser.next_event()
            if event is None:
                if parser.error is not None:
                    raise parser.error
                if connection.feed_unfed():
                    continue
                data = await connection.stream.receive_some(timeout=connection.server.body_timeout)
                if not data:
                    raise ReadError("client closed the connection before the body was complete")
                parser.feed(data)
                continue
            if event is END_OF_MESSAGE:
                self._reading_done = True
                return
            if isinstance(event, bytes):
                yield event
            else:  # a head before the end of this body cannot happen with a correct parser
                raise RemoteProtocolError("request framing error")

    async def body(self) -> bytes:
        """The whole body (read once, then cached)."""
        if self._body is None:
            chunks = [chunk async for chunk in self.iter_body()]
            self._body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        return self._body

    async def text(self) -> str:
        """The body decoded as UTF-8 (invalid bytes replaced)."""
        return (await self.body()).decode("utf-8", errors="replace")

    async def json(self) -> Any:
        """The body parsed as JSON.

        Raises:
            RemoteProtocolError: the body is not valid JSON (the server answers 400).
        """
        try:
            return orjson.loads(await self.body())
        except orjson.JSONDecodeError as exc:
            raise RemoteProtocolError(f"request body is not valid JSON: {exc}", 400) from None

    def _drain_parsed(self) -> bool:
        """Drop the body bytes already parsed, without waiting; True once the body has ended."""
        if self._reading_done:
            return True
        connection = self._connection
        parser = connection.parser
        while parser.has_events() or connection.feed_unfed():
            event = parser.next_event()
            if event is None:
                continue
            if event is END_OF_MESSAGE:
                self._reading_done = True
                return True
            if not isinstance(event, bytes):
                raise RemoteProtocolError("request framing error")
        return False

    @property
    def expecting_continue(self) -> bool:
        """True while the client waits for ``100 Continue`` before sending the body it announced."""
        return not self._continue_sent

    @property
    def body_consumed(self) -> bool:
        """True once the whole body has been read."""
        return self._reading_done

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.path!r}>"
