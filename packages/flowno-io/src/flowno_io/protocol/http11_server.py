"""Server side of HTTP/1.1, sans-IO: request bytes in, events out; responses out as bytes.

Parsing is llhttp (through ``httptools``) in its strict mode, which already rejects the request
smuggling shapes: ``Content-Length`` together with ``Transfer-Encoding``, duplicate
``Content-Length``, a ``Transfer-Encoding`` that does not end in ``chunked``, chunk-size overflow,
bare-LF line endings, obs-fold. This module adds the limits and turns every parser failure into a
:class:`RemoteProtocolError` carrying the status to answer with.

Example:
    >>> parser = RequestParser()
    >>> parser.feed(b"POST /items?id=7 HTTP/1.1\\r\\nHost: a\\r\\nContent-Length: 2\\r\\n\\r\\nhi")
    >>> head = parser.next_event()
    >>> head.method, head.path, head.query_string, head.keep_alive
    ('POST', '/items', 'id=7', True)
    >>> parser.next_event(), parser.next_event() is END_OF_MESSAGE, parser.next_event()
    (b'hi', True, None)
"""

from __future__ import annotations

import re
from email.utils import formatdate
from time import time
from urllib.parse import unquote

import httptools

from .._errors import RemoteProtocolError, TooLargeError
from .headers import Headers
from .models import reason_phrase

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_MAX_HEADERS",
    "DEFAULT_MAX_HEADER_BYTES",
    "END_OF_MESSAGE",
    "RequestHead",
    "RequestParser",
    "encode_chunk",
    "encode_response_head",
    "http_date",
]

#: Request line + header fields, in bytes (→ 431). h11 uses 16 KiB; nginx 8 KiB per line with
#: 4 x 8 KiB buffers; Node.js 16 KiB. We take 16 KiB.
DEFAULT_MAX_HEADER_BYTES = 16 * 1024
#: Header fields per request (→ 431). aiohttp: 128; Node.js: 2000 (as `maxHeadersCount`).
DEFAULT_MAX_HEADERS = 100
#: Request body, in bytes (→ 413, sent before the body is read when Content-Length says so).
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024


class _EndOfMessage:
    __slots__ = ()

    def __repr__(self) -> str:
        return "END_OF_MESSAGE"


#: Event marking the end of a request's body.
END_OF_MESSAGE = _EndOfMessage()


# RFC 3986 host (reg-name, IPv4, or an IP-literal in brackets) with an optional port; may be empty.
_HOST = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=%]*|\[[0-9A-Fa-f:.vV]+\])(?::[0-9]*)?")
_NO_FIELDS: dict[str, list[str]] = {}  # never mutated: on_message_begin replaces it


class RequestHead:
    """The request line and headers of one request."""

    __slots__ = (
        "content_length",
        "expect_continue",
        "headers",
        "http_version",
        "keep_alive",
        "method",
        "path",
        "query_string",
        "raw_path",
        "target",
        "upgrade",
    )

    def __init__(
        self,
        method: str,
        target: bytes,
        http_version: str,
        headers: Headers,
        keep_alive: bool,
        upgrade: bool,
    ) -> None:
        self.method = method
        self.target = target
        self.http_version = http_version
        self.headers = headers
        self.keep_alive = keep_alive
        self.upgrade = upgrade
        raw_path, _, query = target.partition(b"?")
        if raw_path[:1] not in (b"/", b"*"):
            # absolute-form (RFC 9112 §3.2.2): keep only the path.
            try:
                parsed = httptools.parse_url(target)
            except httptools.HttpParserInvalidURLError:
                raise RemoteProtocolError(f"invalid request target {target[:100]!r}") from None
            raw_path = parsed.path or b"/"
            query = parsed.query or b""
        self.raw_path = raw_path
        self.path = unquote(raw_path.decode("latin-1")) if b"%" in raw_path else raw_path.decode("latin-1")
        self.query_string = query.decode("latin-1")
        expect = headers.get("expect")
        self.expect_continue = expect is not None and expect.lower() == "100-continue"
        length = headers.get("content-length")
        self.content_length = int(length) if length is not None else None

    def __repr__(self) -> str:
        return f"<RequestHead {self.method} {self.target!r} HTTP/{self.http_version}>"


Event = RequestHead | bytes | _EndOfMessage


class RequestParser:
    """Incremental parser of a stream of (possibly pipelined) requests.

    Feed bytes with :meth:`feed`; take events in order with :meth:`next_event`: a
    :class:`RequestHead`, then zero or more body ``bytes``, then :data:`END_OF_MESSAGE`, then the
    next request's head. ``feed`` raises :class:`RemoteProtocolError` (``status_hint`` 400, 505
    for an HTTP/2 preface) or :class:`TooLargeError` (431 for the head, 413 for the body); after
    an error the parser is unusable and the connection must close.

    Args:
        max_header_bytes: request line + headers (→ 431).
        max_headers: number of header fields (→ 431).
        max_body_bytes: body size (→ 413; checked against Content-Length before the body arrives).
    """

    __slots__ = (
        "_body_bytes",
        "_error",
        "_events",
        "_field_count",
        "_fields",
        "_finished",
        "_head_bytes",
        "_in_head",
        "_parser",
        "_url",
        "max_body_bytes",
        "max_header_bytes",
        "max_headers",
        "message_method",
        "messages_in_progress",
    )

    def __init__(
        self,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_headers: int = DEFAULT_MAX_HEADERS,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    ) -> None:
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self.max_body_bytes = max_body_bytes
        self._parser = httptools.HttpRequestParser(self)
        # A plain list: it holds a few events at a time, and an idle deque costs ~600 bytes.
        self._events: list[Event] = []
        self._url = b""
        self._fields = _NO_FIELDS
        self._field_count = 0
        self._head_bytes = 0
        self._in_head = False
        self._body_bytes = 0
        self._error: RemoteProtocolError | None = None
        self._finished = False
        #: Method of the request being parsed, once its headers end (None before).
        self.message_method: str | None = None
        #: Requests whose head has been parsed but whose end has not.
        self.messages_in_progress = 0

    # -- feeding ----------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Parse ``data``; complete events become available through :meth:`next_event`."""
        if self._error is not None:
            raise self._error
        if self._finished:
            return  # the last request said the connection closes after it: ignore what follows
        if self._in_head:
            # Bytes fed while a head is incomplete count against the head limit, so a peer cannot
            # make httptools buffer an endless header line (it keeps partial fields until they
            # end). The bound is ``max_header_bytes`` plus the one read in which the head began.
            self._head_bytes += len(data)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            if self._error is None:  # a callback failed without saying why
                self._error = RemoteProtocolError("malformed request")
            raise self._error from None
        except httptools.HttpParserUpgrade:
            # An Upgrade request (we speak no other protocol): it is served as plain HTTP/1.1 and
            # the connection closes after it, so trailing bytes do not matter.
            self._finished = True
        except httptools.HttpParserError as exc:
            message = str(exc)
            if "after `Connection: close`" in message:
                self._finished = True  # the requests before it are still served
                return
            status = 505 if "PRI" in message else 400
            self._error = RemoteProtocolError(f"malformed request: {message}", status)
            raise self._error from None
        if self._in_head and self._head_bytes > self.max_header_bytes:
            self._fail(TooLargeError("request line and headers too large", 431))

    def next_event(self) -> Event | None:
        """The next event, or ``None`` when more bytes are needed."""
        events = self._events
        return events.pop(0) if events else None

    @property
    def error(self) -> RemoteProtocolError | None:
        """The error that stopped the parser, if one did (every later ``feed`` raises it)."""
        return self._error

    def body_complete(self) -> bool:
        """True when the end of the current request's body is among the queued events."""
        for event in self._events:
            if event is END_OF_MESSAGE:
                return True
            if type(event) is RequestHead:
                return False
        return False

    def has_events(self) -> bool:
        """True when :meth:`next_event` would return an event."""
        return bool(self._events)

    @property
    def message_target(self) -> bytes:
        """The request target of the message being parsed, as far as it was read (for error logs)."""
        return self._url

    @property
    def in_head(self) -> bool:
        """True while a request head has begun but is not complete."""
        return self._in_head

    def _fail(self, error: RemoteProtocolError) -> None:
        self._error = error
        raise error

    # -- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.message_method = None
        self._in_head = True
        self._head_bytes = 0
        self._url = b""
        self._fields = {}
        self._field_count = 0
        self._body_bytes = 0

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)
        if self._head_bytes > self.max_header_bytes:
            self._fail(TooLargeError("request line too long", 431))

    def on_header(self, name: bytes, value: bytes) -> None:
        self._field_count += 1
        self._head_bytes += len(name) + len(value) + 4
        if self._field_count > self.max_headers:
            self._fail(TooLargeError(f"more than {self.max_headers} header fields", 431))
        if self._head_bytes > self.max_header_bytes:
            self._fail(TooLargeError("request headers too large", 431))
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1").strip(" \t")  # RFC 9110 §5.5: OWS is not part of the value
        values = self._fields.get(key)
        if values is None:
            self._fields[key] = [text]
        else:
            values.append(text)

    def on_headers_complete(self) -> None:
        self._in_head = False
        parser = self._parser
        fields = self._fields
        version = parser.get_http_version()
        method = self.message_method = parser.get_method().decode("ascii")
        host = fields.get("host")
        if host is None:
            if version == "1.1":
                self._fail(RemoteProtocolError("HTTP/1.1 request without Host header", 400))
        elif len(host) > 1:  # RFC 9112 §3.2: more than one Host is a 400
            self._fail(RemoteProtocolError("more than one Host header", 400))
        elif _HOST.fullmatch(host[0]) is None:
            self._fail(RemoteProtocolError(f"invalid Host header {host[0][:100]!r}", 400))
        keep_alive = parser.should_keep_alive()
        if version == "1.0" and "transfer-encoding" in fields:
            # RFC 9112 §6.1: framing of an HTTP/1.0 message with Transfer-Encoding is faulty:
            # answer it, then close (whatever follows it on the connection is not trusted).
            keep_alive = False
        length = fields.get("content-length")
        if length is not None:
            text = length[0]
            if not text.isdigit():
                self._fail(RemoteProtocolError(f"invalid Content-Length {text!r}", 400))
            if int(text) > self.max_body_bytes:
                self._fail(TooLargeError(f"body larger than {self.max_body_bytes} bytes", 413))
        head = RequestHead(
            method,
            self._url,
            version,
            Headers._from_trusted(fields),
            keep_alive,
            parser.should_upgrade(),
        )
        self.messages_in_progress += 1
        self._events.append(head)
        self._fields = _NO_FIELDS  # the head owns them now; an idle connection keeps nothing
        self._url = b""

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if self._body_bytes > self.max_body_bytes:
            self._fail(TooLargeError(f"body larger than {self.max_body_bytes} bytes", 413))
        self._events.append(body)

    def on_message_complete(self) -> None:
        self.messages_in_progress -= 1
        self._events.append(END_OF_MESSAGE)


# -- serializing responses --------------------------------------------------------------------

_STATUS_LINES: dict[int, bytes] = {}


def _status_line(status_code: int, http_version: str = "1.1") -> bytes:
    line = _STATUS_LINES.get(status_code)
    if line is None:
        reason = reason_phrase(status_code)
        line = f"HTTP/1.1 {status_code} {reason}\r\n".encode("latin-1")
        if len(_STATUS_LINES) < 1000:
            _STATUS_LINES[status_code] = line
    return line


_date_cache: tuple[int, bytes] = (0, b"")


def http_date() -> bytes:
    """The current time as an IMF-fixdate header value, computed at most once a second."""
    global _date_cache
    now = int(time())
    if _date_cache[0] != now:
        _date_cache = (now, formatdate(now, usegmt=True).encode("ascii"))
    return _date_cache[1]


def encode_response_head(status_code: int, headers: Headers, extra: bytes = b"") -> bytes:
    """Status line, ``headers`` and ``extra`` (pre-encoded ``b"Name: value\\r\\n"`` lines), CRLF.

    Example:
        >>> encode_response_head(204, Headers({"X-A": "1"}), b"Server: t\\r\\n")
        b'HTTP/1.1 204 No Content\\r\\nx-a: 1\\r\\nServer: t\\r\\n\\r\\n'
    """
    lines = [_status_line(status_code)]
    for name, values in headers._fields.items():
        for value in values:
            lines.append(f"{name}: {value}\r\n".encode())
    lines.append(extra)
    lines.append(b"\r\n")
    return b"".join(lines)


def encode_chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (empty ``data`` gives nothing: use ``b"0\\r\\n\\r\\n"`` to end).

    >>> encode_chunk(b"hello")
    b'5\\r\\nhello\\r\\n'
    """
    if not data:
        return b""
    return b"%x\r\n%b\r\n" % (len(data), data)
