"""Streaming responses of ``HttpClient``: the seed's ``OkStreamingResponse`` / ``ErrStreamingResponse``.

A :class:`BodyReader` owns the connection of one response until its body ends; the iterators
here turn its bytes into byte chunks, JSON lines, or Server-Sent Events (parsed by the shared
sans-IO decoders in ``protocol/decoders.py`` and ``protocol/sse.py``). A body cut short by the server raises
(``RemoteProtocolError`` / ``ReadError``); it never ends as if it were complete.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, Self, TypeVar

import orjson

from .._errors import HttpError, HTTPStatusError, TooLargeError
from ..protocol.decoders import ContentDecoder, LineDecoder, make_decoder
from ..protocol.headers import Headers
from ..protocol.http11_client import ResponseParser
from ..protocol.models import _is_json_type
from ..protocol.sse import ServerSentEvent, SSEDecoder
from .pool import Connection

if TYPE_CHECKING:
    from typing_extensions import TypeIs  # typing.TypeIs is Python 3.13+

    from .client import HttpClient

__all__ = [
    "BodyReader",
    "ErrStreamingResponse",
    "HTTPException",
    "OkStreamingResponse",
    "ResponseBase",
    "body_iterator",
    "decode_text",
    "streaming_response_is_ok",
]

T = TypeVar("T")

_JSON_LINES_TYPES = frozenset(
    {
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
        "application/x-jsonlines",
        "application/jsonlines",
        "application/json-lines",
    }
)


class BodyReader:
    """The body of one response: decoded bytes as they arrive, and the connection until the end.

    Made right after the head arrived (before any ``await``): it takes the exchange's number
    from the connection then, its token for the connection (the parser is the connection's,
    reused by the next exchange: a reader kept longer reads nothing of that one).

    Args:
        connection: the connection the response arrives on.
        parser: the parser holding the response head.
        read_timeout: seconds to wait for each arrival of bytes.
        deadline: ``time.monotonic()`` limit for the whole exchange.
        max_body_bytes: decoded body limit (→ ``TooLargeError``), ``None`` for none.
    """

    __slots__ = (
        "_connection",
        "_decoder",
        "deadline",
        "done",
        "exchange",
        "headers",
        "max_body_bytes",
        "owner",
        "parser",
        "read_timeout",
    )

    def __init__(
        self,
        connection: Connection,
        parser: ResponseParser,
        read_timeout: float | None,
        deadline: float | None,
        max_body_bytes: int | None,
    ) -> None:
        self._connection = connection
        self.parser = parser
        self.exchange = connection.exchanges
        #: The response's headers (the parser's hold the next response's once it started).
        self.headers = parser.headers
        self.read_timeout = read_timeout
        self.deadline = deadline
        self.max_body_bytes = max_body_bytes
        self._decoder: ContentDecoder | None = None
        #: The body ended (or was abandoned); the connection is no longer ours.
        self.done = False
        #: The iterator consuming this body (one only).
        self.owner: object = None

    def claim(self, owner: object) -> None:
        """Make ``owner`` the one consumer of the body.

        Raises:
            RuntimeError: another iterator already reads it.
        """
        if self.owner is None:
            self.owner = owner
        elif self.owner is not owner:
            raise RuntimeError("the response body is already being read by another iterator")

    async def read(self) -> bytes:
        """The next decoded body bytes; ``b""`` once the body has ended."""
        if self.done:
            return b""
        try:
            decoder = self._decoder
            if decoder is None:
                encoding = self.headers.get("content-encoding")
                decoder = self._decoder = make_decoder(encoding, max_output_bytes=self.max_body_bytes)
            while True:
                data = await self._connection.receive_body(
                    self.parser, self.exchange, read_timeout=self.read_timeout, deadline=self.deadline
                )
                if not data:
                    self.done = True
                    return decoder.flush()
                output = decoder.decode(data)
                if output:
                    return output
        except BaseException:
            self.close()
            raise

    def read_all_nowait(self) -> bytes | None:
        """The whole decoded body if all of it has arrived already, else ``None`` (never waits).

        What :meth:`read_all` returns then, without its coroutines (a small response usually
        comes with its head). The connection is back in the pool afterwards.

        Raises:
            TooLargeError: the body (raw or decoded) exceeds the limit.
        """
        if self.done:
            return None
        parser = self.parser
        # (Once its exchange ended the parser is another's: the body was all taken, b"".)
        if not parser.message_complete and self._connection.exchange == self.exchange:
            return None
        try:
            body = self._connection.take_complete_body(parser, self.exchange)
            return self._finish(body)
        except BaseException:
            self.close()
            raise

    async def read_all(self) -> bytes:
        """The whole decoded body (for buffered responses).

        Raises:
            TooLargeError: the body (announced or received, raw or decoded) exceeds the limit.
        """
        parser = self.parser
        connection = self._connection
        limit = self.max_body_bytes
        chunks: list[bytes] = []
        try:
            # (HEAD, 204, 304: no body; an exchange already ended: the body was all taken.)
            if limit is not None and not parser.message_complete and connection.exchange == self.exchange:
                length = self.headers.get("content-length")
                if length is not None and length.isdigit() and int(length) > limit:
                    raise TooLargeError(f"response body larger than {limit} bytes", 413)
            size = 0
            while True:
                data = await connection.receive_body(
                    parser, self.exchange, read_timeout=self.read_timeout, deadline=self.deadline
                )
                if not data:
                    break
                size += len(data)
                if limit is not None and size > limit:
                    raise TooLargeError(f"response body larger than {limit} bytes", 413)
                chunks.append(data)
            return self._finish(chunks[0] if len(chunks) == 1 else b"".join(chunks))
        except BaseException:
            self.close()
            raise

    def _finish(self, body: bytes) -> bytes:
        """``body`` (all of it, still content-encoded) checked and decoded; the reader is done."""
        limit = self.max_body_bytes
        if limit is not None and len(body) > limit:
            raise TooLargeError(f"response body larger than {limit} bytes", 413)
        encoding = self.headers.get("content-encoding")
        if encoding:
            decoder = make_decoder(encoding, max_output_bytes=limit)
            body = decoder.decode(body) + decoder.flush()
        self.done = True
        return body

    async def discard(self, max_bytes: int) -> None:
        """Read and drop the body to keep the connection; one over ``max_bytes`` is closed instead."""
        size = 0
        try:
            while not self.done:
                data = await self._connection.receive_body(
                    self.parser, self.exchange, read_timeout=self.read_timeout, deadline=self.deadline
                )
                if not data:
                    self.done = True
                    return
                size += len(data)
                if size > max_bytes:
                    self.close()
        except HttpError:
            self.close()
        except BaseException:
            self.close()  # cancelled while draining: the connection must not stay checked out
            raise

    def finish(self) -> None:
        """Stop reading: the connection is reused if the rest of the body already arrived."""
        if not self.done:
            self.done = True
            self._connection.finish_nowait(self.parser, self.exchange)

    def close(self) -> None:
        """Abandon the rest of the body (the connection is closed, not reused)."""
        if not self.done:
            self.done = True
            if self._connection.owns(self.exchange):
                self._connection.abort()

    def __del__(self) -> None:
        # A response dropped before the end of its body frees its connection (closing it).
        if not self.done:  # (every buffered response is done: no call for those)
            try:
                self.close()
            except Exception:  # interpreter shutdown
                pass


class _BodyIterator:
    """Base of the body iterators: one consumer per body."""

    __slots__ = ("_reader", "_started")

    def __init__(self, reader: BodyReader) -> None:
        self._reader = reader
        self._started = False

    def __aiter__(self) -> Self:
        return self

    def _start(self) -> None:
        self._reader.claim(self)
        self._started = True

    async def aclose(self) -> None:
        """Stop reading; the connection is closed unless the body already ended."""
        self._reader.close()


class _ByteChunks(_BodyIterator):
    """Decoded body bytes, as they arrive."""

    __slots__ = ()

    async def __anext__(self) -> bytes:
        if not self._started:
            self._start()
        data = await self._reader.read()
        if not data:
            raise StopAsyncIteration
        return data


class _SSEEvents(_BodyIterator):
    """Every Server-Sent Event, whole (``ServerSentEvent``)."""

    __slots__ = ("_decoder", "_ended", "_index", "_pending")

    def __init__(self, reader: BodyReader) -> None:
        super().__init__(reader)
        self._decoder = SSEDecoder()
        self._pending: list[ServerSentEvent] = []
        self._index = 0
        self._ended = False

    @property
    def last_event_id(self) -> str | None:
        """The ID to send as ``Last-Event-ID`` when reconnecting."""
        return self._decoder.last_event_id

    async def _next_event(self) -> ServerSentEvent | None:
        if not self._started:
            self._start()
        while True:
            pending = self._pending
            if self._index < len(pending):
                event = pending[self._index]
                self._index += 1
                return event
            if self._ended:
                return None
            data = await self._reader.read()
            self._index = 0
            if data:
                self._pending = self._decoder.feed(data)
            else:
                self._pending = self._decoder.close()
                self._ended = True

    async def __anext__(self) -> Any:
        event = await self._next_event()
        if event is None:
            raise StopAsyncIteration
        return event


class _SSEData(_SSEEvents):
    """Each event's data parsed as JSON (or the text when it is not JSON), until ``[DONE]``."""

    __slots__ = ()

    async def __anext__(self) -> Any:
        event = await self._next_event()
        if event is None:
            raise StopAsyncIteration
        data = event.data
        if data == "[DONE]":
            self._ended = True
            self._pending = []
            self._reader.finish()
            raise StopAsyncIteration
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            return data


class _JSONLines(_BodyIterator):
    """Each non-empty line parsed as JSON (or the text when it is not JSON).

    With ``document_fallback`` (chunked ``application/json``), a first value that does not fit on
    one line switches to reading the whole body as one JSON document.
    """

    __slots__ = ("_decoder", "_document", "_document_fallback", "_ended", "_index", "_lines")

    def __init__(self, reader: BodyReader, *, document_fallback: bool = False) -> None:
        super().__init__(reader)
        self._decoder = LineDecoder()
        self._lines: list[str] = []
        self._index = 0
        self._ended = False
        self._document_fallback = document_fallback
        self._document: list[str] | None = None

    async def __anext__(self) -> Any:
        if not self._started:
            self._start()
        while True:
            lines = self._lines
            while self._index < len(lines):
                line = lines[self._index]
                self._index += 1
                if self._document is not None:
                    self._document.append(line)
                    continue
                if not line.strip():
                    continue
                try:
                    value = orjson.loads(line)
                except orjson.JSONDecodeError:
                    if self._document_fallback:
                        self._document = [line]
                        continue
                    return line
                self._document_fallback = False
                return value
            if self._ended:
                document, self._document = self._document, None
                if document is None:
                    raise StopAsyncIteration
                text = "\n".join(document)
                try:
                    return orjson.loads(text)
                except orjson.JSONDecodeError:
                    return text
            data = await self._reader.read()
            self._index = 0
            if data:
                self._lines = self._decoder.feed(data)
            else:
                self._lines = self._decoder.close()
                self._ended = True


def body_iterator(reader: BodyReader) -> AsyncIterator[Any]:
    """The iterator for ``OkStreamingResponse.body``, chosen by the response's ``Content-Type``."""
    headers = reader.headers
    content_type = headers.get("content-type") or ""
    mime = content_type.split(";", 1)[0].strip().lower()
    if mime == "text/event-stream":
        return _SSEData(reader)
    if mime in _JSON_LINES_TYPES:
        return _JSONLines(reader)
    # Decided by the media type alone, never by the framing: a JSON endpoint yields the same
    # values whether its server sent Content-Length or (as a gzipping proxy does) chunks.
    if mime == "application/json":
        return _JSONLines(reader, document_fallback=True)
    return _ByteChunks(reader)


def decode_text(body: bytes, content_type: str | None) -> str:
    """``body`` decoded with the ``charset`` of ``content_type`` (UTF-8 when none or unknown);
    invalid bytes are replaced.

    >>> decode_text("café".encode("latin-1"), "text/plain; charset=ISO-8859-1")
    'café'
    >>> decode_text("café".encode(), "text/plain"), decode_text(b"ok", "text/plain; charset=nonsense")
    ('café', 'ok')
    """
    encoding = "utf-8"
    if content_type and "charset" in content_type.lower():
        for parameter in content_type.split(";")[1:]:
            name, _, value = parameter.partition("=")
            if name.strip().lower() == "charset":
                encoding = value.strip().strip('"') or encoding
                break
    try:
        return body.decode(encoding, "replace")
    except LookupError:
        return body.decode("utf-8", "replace")


@dataclass
class ResponseBase:
    """What both streaming responses have: the client, the status line and the headers.

    ``url`` is the URL of the final request and ``history`` the redirect responses followed to
    reach it (oldest first; bodies not kept), both set by ``HttpClient``.
    """

    client: HttpClient
    status: str  # e.g. "HTTP/1.1 200 OK"
    headers: Headers
    url: str = field(default="", init=False, compare=False)
    history: list[Any] = field(default_factory=list, init=False, repr=False, compare=False)

    @property
    def status_code(self) -> int:
        """The numeric status (``0`` if the status line is malformed, as in the seed)."""
        parts = self.status.split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit():
            return 0
        return int(parts[1])

    @property
    def reason(self) -> str:
        """The reason phrase the server sent."""
        parts = self.status.split(" ", 2)
        return parts[2] if len(parts) == 3 else ""

    @property
    def http_version(self) -> str:
        """``"1.1"`` or ``"1.0"``."""
        return self.status.split(" ", 1)[0].removeprefix("HTTP/")

    @property
    def is_ok(self) -> bool:
        """True for a 2xx status."""
        return 200 <= self.status_code < 300

    def is_json(self) -> bool:
        """True when ``Content-Type`` is JSON (``application/json`` or ``*+json``)."""
        return _is_json_type(self.headers.get("content-type"))

    async def aclose(self) -> None:
        """Stop reading the body; its connection is closed unless the body already ended."""

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


@dataclass
class OkStreamingResponse(ResponseBase, Generic[T]):
    """A 2xx streaming response; ``body`` yields items as they arrive (see ``stream_request``)."""

    body: AsyncIterator[T]
    _reader: BodyReader | None = field(default=None, repr=False, compare=False)

    def events(self) -> AsyncIterator[ServerSentEvent]:
        """The body as whole Server-Sent Events (``data``, ``event``, ``id``, ``retry``).

        Use either this or ``body``, not both. Unlike ``body`` it does not stop at ``[DONE]``.
        """
        return _SSEEvents(self._require_reader())

    def iter_bytes(self) -> AsyncIterator[bytes]:
        """The body as decompressed byte chunks, whatever its ``Content-Type``."""
        return _ByteChunks(self._require_reader())

    def _require_reader(self) -> BodyReader:
        if self._reader is None:
            raise RuntimeError("this response was not created by HttpClient")
        return self._reader

    def raise_for_status(self) -> Self:
        """Return the response (a 2xx never raises)."""
        return self

    async def aclose(self) -> None:
        if self._reader is not None:
            self._reader.close()


@dataclass
class ErrStreamingResponse(ResponseBase):
    """A non-2xx answer to a streaming request; ``body`` holds the whole (decompressed) body."""

    body: bytes | AsyncIterator[bytes]

    async def _body_bytes(self) -> bytes:
        if isinstance(self.body, bytes):
            return self.body
        self.body = b"".join([chunk async for chunk in self.body])
        return self.body

    async def decode_json(self) -> Any:
        """The body parsed as JSON (async, as in the seed)."""
        return orjson.loads(await self._body_bytes())

    async def text(self) -> str:
        """The body decoded with the ``Content-Type`` charset, UTF-8 by default (invalid bytes replaced)."""
        return decode_text(await self._body_bytes(), self.headers.get("content-type"))

    def raise_for_status(self) -> Self:
        """Raise :class:`HTTPException` (an ``HTTPStatusError``) for a 4xx/5xx; else return self."""
        if self.status_code >= 400:
            body = self.body if isinstance(self.body, bytes) else b""
            raise HTTPException(self.status, body, response=self)
        return self


class HTTPException(HTTPStatusError):
    """The seed's HTTP error (status line and body), now an :class:`HTTPStatusError`.

    Example:
        >>> from flowno_io import HTTPException, HTTPStatusError
        >>> error = HTTPException("HTTP/1.1 404 Not Found", b"no such page")
        >>> error.status, error.body, isinstance(error, HTTPStatusError)
        ('HTTP/1.1 404 Not Found', b'no such page', True)
    """

    def __init__(self, status: str, message: str | bytes, *, response: Any = None) -> None:
        super().__init__(f"Status: {status}\nBody: {message!r}", response=response)
        self.status = status
        self.body = message


def streaming_response_is_ok(
    response: OkStreamingResponse[T] | ErrStreamingResponse,
) -> TypeIs[OkStreamingResponse[T]]:
    """Narrow a streaming response to the 2xx kind (a ``TypeIs`` guard, as in the seed).

    Example:
        >>> from flowno_io import ErrStreamingResponse, Headers, OkStreamingResponse, streaming_response_is_ok
        >>> from flowno_io import Headers
        >>> streaming_response_is_ok(ErrStreamingResponse(None, "HTTP/1.1 500 Oops", Headers(), b""))
        False
    """
    return isinstance(response, OkStreamingResponse)
