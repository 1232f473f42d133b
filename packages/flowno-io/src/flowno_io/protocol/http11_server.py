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
    "DEFAULT_MAX_TRAILERS",
    "DEFAULT_MAX_TRAILER_BYTES",
    "END_OF_MESSAGE",
    "MAX_LEADING_BLANK_LINES",
    "RequestHead",
    "RequestParser",
    "encode_chunk",
    "encode_response_head",
    "http_date",
]

#: Request line + header fields, in bytes (→ 431). h11 uses 16 KiB; nginx 8 KiB per line with
#: 4 x 8 KiB buffers; Node.js 16 KiB. We take 16 KiB. The count is the head's own bytes (leading
#: blank lines included), never the bytes of the reads that carried it; one unfinished line (that
#: httptools buffers until it ends) is bounded by the same number.
DEFAULT_MAX_HEADER_BYTES = 16 * 1024
#: Header fields per request (→ 431). aiohttp: 128; Node.js: 2000 (as `maxHeadersCount`).
DEFAULT_MAX_HEADERS = 100
#: Request body, in bytes (→ 413, sent before the body is read when Content-Length says so).
DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
#: Trailer fields of one chunked request (→ 431). Trailers are counted and dropped (no handler
#: reads them), but they are still bytes a peer makes us parse: the same bound as the head's fields.
DEFAULT_MAX_TRAILERS = 100
#: Trailer section of one chunked request, in bytes (→ 431); an unfinished trailer line is bounded
#: by the same number. Node.js counts trailers in its 16 KiB ``maxHeaderSize``; h11 bounds any
#: incomplete event by 16 KiB.
DEFAULT_MAX_TRAILER_BYTES = 16 * 1024
#: Empty lines (CRLF) accepted before a request line (→ 400). RFC 9112 §2.2 asks a server to
#: ignore at least one (old browsers sent one after a POST body); more are someone holding the
#: connection open. They count towards the head's bytes and its timeout, as the request began.
MAX_LEADING_BLANK_LINES = 8

#: Bytes of a request line besides its method and target: two spaces, ``HTTP/1.1`` and CRLF.
_REQUEST_LINE_OVERHEAD = 12
#: Bytes of a field line besides its name and value: ``": "`` and CRLF.
_FIELD_LINE_OVERHEAD = 4
_CRLF_BYTES = frozenset(b"\r\n")


class _EndOfMessage:
    __slots__ = ()

    def __repr__(self) -> str:
        return "END_OF_MESSAGE"


#: Event marking the end of a request's body.
END_OF_MESSAGE = _EndOfMessage()


# RFC 3986 host (reg-name, IPv4, or an IP-literal in brackets) with an optional port; may be empty.
_HOST = re.compile(r"(?:[A-Za-z0-9\-._~!$&'()*+,;=%]*|\[[0-9A-Fa-f:.vV]+\])(?::[0-9]*)?")
_new_headers = Headers.__new__
_NO_FIELDS: dict[str, list[str]] = {}  # never mutated: on_message_begin replaces it
#: Host values that matched ``_HOST`` (a server sees the same few): checked once. Bounded.
_VALID_HOSTS: set[str] = set()
_MAX_VALID_HOSTS = 256
#: Field names as received → their lower-case ``str`` (the usual few, decoded once). Bounded.
_FIELD_NAMES: dict[bytes, str] = {}
_MAX_FIELD_NAMES = 256


def _trailing_crlf(data: bytes) -> int:
    """How many CR and LF bytes ``data`` ends with."""
    tail = data[-64:]
    run = len(tail) - len(tail.rstrip(b"\r\n"))
    if run == len(tail):
        run = len(data) - len(data.rstrip(b"\r\n"))
    return run


def _leading_crlf(data: bytes) -> int:
    """How many CR and LF bytes ``data`` begins with."""
    head = data[:64]
    run = len(head) - len(head.lstrip(b"\r\n"))
    if run == len(head):
        run = len(data) - len(data.lstrip(b"\r\n"))
    return run


#: Request targets already split (target → target without its fragment, raw path, path, query):
#: clients ask for the same few targets again and again. Bounded, in entries and in key length;
#: a target beyond either bound is split every time.
_TARGETS: dict[bytes, tuple[bytes, bytes, str, str]] = {}
_MAX_TARGETS = 512
_MAX_TARGET_BYTES = 256


def _split_target(target: bytes) -> tuple[bytes, bytes, str, str]:
    """The target without its fragment, its raw path, decoded path and query string.

    Raises:
        RemoteProtocolError: an absolute-form target that is not a URL.
    """
    fragment = target.find(b"#")
    if fragment >= 0:
        # RFC 9112 §3.2: a fragment is not part of a request-target; a client that sends one
        # anyway means the resource without it (aiohttp and uvicorn drop it too).
        target = target[:fragment]
    raw_path, _, query = target.partition(b"?")
    if raw_path[:1] not in (b"/", b"*"):
        # absolute-form (RFC 9112 §3.2.2): keep only the path.
        try:
            parsed = httptools.parse_url(target)
        except httptools.HttpParserInvalidURLError:
            raise RemoteProtocolError(f"invalid request target {target[:100]!r}") from None
        raw_path = parsed.path or b"/"
        query = parsed.query or b""
    path = unquote(raw_path.decode("latin-1")) if b"%" in raw_path else raw_path.decode("latin-1")
    return target, raw_path, path, query.decode("latin-1")


def _joined(values: list[str]) -> str:
    """A field's lines as one value (what ``Headers.get`` returns)."""
    return values[0] if len(values) == 1 else ", ".join(values)


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
        self.http_version = http_version
        self.headers = headers
        self.keep_alive = keep_alive
        self.upgrade = upgrade
        split = _TARGETS.get(target)
        if split is None:
            split = _split_target(target)
            if len(_TARGETS) < _MAX_TARGETS and len(target) <= _MAX_TARGET_BYTES:
                _TARGETS[target] = split
        self.target, self.raw_path, self.path, self.query_string = split
        fields = headers._fields
        expect = fields.get("expect")
        self.expect_continue = expect is not None and _joined(expect).lower() == "100-continue"
        length = fields.get("content-length")
        self.content_length = int(_joined(length)) if length is not None else None

    def __repr__(self) -> str:
        return f"<RequestHead {self.method} {self.target!r} HTTP/{self.http_version}>"


Event = RequestHead | bytes | _EndOfMessage


class RequestParser:
    """Incremental parser of a stream of (possibly pipelined) requests.

    Feed bytes with :meth:`feed`; take events in order with :meth:`next_event`: a
    :class:`RequestHead`, then zero or more body ``bytes``, then :data:`END_OF_MESSAGE`, then the
    next request's head. ``feed`` raises :class:`RemoteProtocolError` (``status_hint`` 400, 505
    for an HTTP/2 preface) or :class:`TooLargeError` (431 for the head or the trailers, 413 for
    the body); after an error the parser is unusable and the connection must close.

    How the bytes are split across ``feed`` calls never changes the events nor the error, with one
    exception: empty lines between two requests that arrive in the same ``feed`` are skipped by
    llhttp unseen, so they do not count towards :data:`MAX_LEADING_BLANK_LINES` (they cost nothing
    and hold nothing: the next request is already there).

    Args:
        max_header_bytes: request line + headers (→ 431).
        max_headers: number of header fields (→ 431).
        max_body_bytes: body size (→ 413; checked against Content-Length before the body arrives).
        max_trailers: trailer fields of a chunked body (→ 431).
        max_trailer_bytes: trailer section of a chunked body (→ 431).
    """

    __slots__ = (
        "_after_chunk_header",
        "_body_bytes",
        "_body_crlf",
        "_crlf_run",
        "_error",
        "_events",
        "_field_count",
        "_fields",
        "_finished",
        "_head_bytes",
        "_in_message_head",
        "_leading_bytes",
        "_line_bytes",
        "_message_crlf",
        "_parser",
        "_read_leading",
        "_trailer_bytes",
        "_trailer_count",
        "_upgrade_framing",
        "_url",
        "max_body_bytes",
        "max_header_bytes",
        "max_headers",
        "max_trailer_bytes",
        "max_trailers",
        "message_method",
        "messages_in_progress",
    )

    def __init__(
        self,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_headers: int = DEFAULT_MAX_HEADERS,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        *,
        max_trailers: int = DEFAULT_MAX_TRAILERS,
        max_trailer_bytes: int = DEFAULT_MAX_TRAILER_BYTES,
    ) -> None:
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self.max_body_bytes = max_body_bytes
        self.max_trailers = max_trailers
        self.max_trailer_bytes = max_trailer_bytes
        self._parser: httptools.HttpRequestParser | None = httptools.HttpRequestParser(self)
        # A plain list: it holds a few events at a time, and an idle deque costs ~600 bytes.
        self._events: list[Event] = []
        self._url = b""
        self._fields = _NO_FIELDS
        self._field_count = 0
        #: Bytes of the current head that the callbacks reported (plus leading empty lines).
        self._head_bytes = 0
        #: Between on_message_begin and on_headers_complete.
        self._in_message_head = False
        #: CR/LF bytes received before the next request line (empty lines), while between requests.
        self._leading_bytes = 0
        #: CR/LF bytes at the start of the current feed, when it began between requests.
        self._read_leading = 0
        #: Bytes since the last LF, while httptools may be buffering an unfinished line (a header
        #: or trailer field); None when unknown because no such line was in progress.
        self._line_bytes: int | None = None
        #: CR/LF bytes at the end of everything fed, and at the end of the last complete message:
        #: their difference is the empty lines received since (the two runs overlap).
        self._crlf_run = 0
        self._message_crlf = 0
        self._body_crlf = 0
        self._after_chunk_header = False
        self._trailer_count = 0
        self._trailer_bytes = 0
        #: The framing header of an Upgrade request's body, until httptools stops at its head.
        self._upgrade_framing: bytes | None = None
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
        if self._finished or not data:
            return  # after a request that closes the connection, what follows is ignored
        if data[0] in _CRLF_BYTES and not self._in_message_head and not self.messages_in_progress:
            self._read_leading = _leading_crlf(data)  # empty lines before the next request line
        else:
            self._read_leading = 0
        parser = self._parser
        if parser is None:  # released while idle (see release())
            parser = self._parser = httptools.HttpRequestParser(self)
        try:
            parser.feed_data(data)
        except httptools.HttpParserCallbackError:
            if self._error is None:  # a callback failed without saying why
                self._error = RemoteProtocolError("malformed request")
            raise self._error from None
        except httptools.HttpParserUpgrade as upgrade:
            # llhttp stops at the head of an Upgrade request (httptools makes it skip the body).
            # We speak no other protocol: the request is served as plain HTTP/1.1 with its body,
            # and the connection closes after it, so whatever follows its body is ignored.
            framing = self._upgrade_framing
            if framing is None:
                self._finished = True
                return
            self._upgrade_framing = None
            self._parse_upgrade_body(framing, data[upgrade.args[0] :])
            return
        except httptools.HttpParserError as exc:
            message = str(exc)
            if "after `Connection: close`" in message:
                self._finished = True  # the requests before it are still served
                return
            status = 505 if "PRI" in message else 400
            self._error = RemoteProtocolError(f"malformed request: {message}", status)
            raise self._error from None
        if data[-1] in _CRLF_BYTES:
            run = len(data) - len(data.rstrip(b"\r\n")) if len(data) <= 64 else _trailing_crlf(data)
            self._crlf_run = self._crlf_run + run if run == len(data) else run
        else:
            self._crlf_run = 0
        if self._in_message_head or self.messages_in_progress or self._crlf_run != self._message_crlf:
            self._after_feed(data)
        else:  # between requests, and nothing after the last one (the usual case)
            self._line_bytes = None
            self._leading_bytes = 0

    def _after_feed(self, data: bytes) -> None:
        """Bound what httptools buffers, and note empty lines that began the next request."""
        if self._finished:
            return
        if self._in_message_head:
            # ``_line_bytes`` is None when the head began in this read: its last LF is in the head
            # when one of its fields ended here.
            self._line_bytes = self._unfinished_line(data, self._field_count > 0)
            if self._line_bytes > self.max_header_bytes:
                self._fail(TooLargeError("request line or header field too long", 431))
        elif self.messages_in_progress:
            if self._after_chunk_header:  # the trailer section (or a chunk's data yet to come)
                # When the section began in this read, so did the chunk-size line's LF before it.
                self._line_bytes = self._unfinished_line(data, True)
                if self._trailer_bytes + self._line_bytes > self.max_trailer_bytes:
                    self._fail(TooLargeError("request trailers too large", 431))
            else:
                self._line_bytes = None
        else:
            self._line_bytes = None
            # Between requests: CR/LF bytes after the last message are empty lines before the next
            # request line. The next request has begun: they count towards its head and its timeout.
            self._leading_bytes = max(0, self._crlf_run - self._message_crlf)
            if self._leading_bytes:
                self._check_leading(self._leading_bytes)

    def _unfinished_line(self, data: bytes, line_began_in_data: bool) -> int:
        """Bytes of the line in progress at the end of ``data`` (a lower bound in its first read)."""
        newline = data.rfind(b"\n")
        if self._line_bytes is None:
            # The head or trailer section began in this read: the last LF may be before it. It is
            # within it when a line of it ended here (``line_began_in_data``); else count nothing
            # yet (the next reads count in full, so the bound is the limit plus one read).
            return len(data) - newline - 1 if newline >= 0 and line_began_in_data else 0
        if newline < 0:
            return self._line_bytes + len(data)
        return len(data) - newline - 1

    def _check_leading(self, leading_bytes: int) -> None:
        self.message_method = None  # a new request has begun (an error must not answer as to a HEAD)
        if (leading_bytes + 1) // 2 > MAX_LEADING_BLANK_LINES:
            message = f"more than {MAX_LEADING_BLANK_LINES} empty lines before a request"
            self._fail(RemoteProtocolError(message, 400))
        if leading_bytes > self.max_header_bytes:
            self._fail(TooLargeError("request headers too large", 431))

    def _parse_upgrade_body(self, framing: bytes, rest: bytes) -> None:
        """Go on parsing an Upgrade request's body, which httptools skipped, with a fresh parser."""
        parser = self._parser = httptools.HttpRequestParser(_UpgradeBody(self))
        # The head the fresh parser sees: just the framing, and Connection: close so that any
        # request after this one is ignored (the connection closes after the response).
        parser.feed_data(b"PUT / HTTP/1.1\r\nConnection: close\r\n" + framing + b"\r\n\r\n")
        self.feed(rest)

    def next_event(self) -> Event | None:
        """The next event, or ``None`` when more bytes are needed."""
        events = self._events
        return events.pop(0) if events else None

    def take_end_of_message(self) -> bool:
        """Take :data:`END_OF_MESSAGE` if it is the next event (a request without a body, just
        after its head); True when taken."""
        events = self._events
        if events and events[0] is END_OF_MESSAGE:
            del events[0]
            return True
        return False

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

    def release(self) -> bool:
        """Drop the llhttp parser (~1 KiB) while the connection is idle between requests; ``feed``
        makes a new one. For a connection held by a long streaming response.

        Returns:
            False (nothing released) unless every fed byte is parsed into events already taken:
            no event queued, no message in progress, no error, no upgrade pending.
        """
        if (
            self._events
            or self.messages_in_progress
            or self._in_message_head
            or self._leading_bytes
            or self._error is not None
            or self._finished
            or self._upgrade_framing is not None
        ):
            return False
        self._parser = None
        return True

    def has_events(self) -> bool:
        """True when :meth:`next_event` would return an event."""
        return bool(self._events)

    @property
    def message_target(self) -> bytes:
        """The request target of the message being parsed, as far as it was read (for error logs)."""
        return self._url

    @property
    def in_head(self) -> bool:
        """True from the first byte of a request (an empty line before it counts) to its head's end."""
        return self._in_message_head or self._leading_bytes > 0

    def _fail(self, error: RemoteProtocolError) -> None:
        self._error = error
        raise error

    # -- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        leading = self._leading_bytes + self._read_leading
        self._leading_bytes = self._read_leading = 0
        if leading:
            self._check_leading(leading)
        self.message_method = None
        self._in_message_head = True
        self._line_bytes = None
        self._head_bytes = leading + _REQUEST_LINE_OVERHEAD
        self._fields = {}
        self._field_count = 0  # (``_url`` is empty again since the last head's end)

    def on_url(self, url: bytes) -> None:
        self._url += url
        self._head_bytes += len(url)
        if self._head_bytes > self.max_header_bytes:
            self._fail(TooLargeError("request line too long", 431))

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_message_head:
            self._on_trailer(name, value)
            return
        self._field_count += 1
        self._head_bytes += len(name) + len(value) + _FIELD_LINE_OVERHEAD
        if self._field_count > self.max_headers:
            self._fail(TooLargeError(f"more than {self.max_headers} header fields", 431))
        if self._head_bytes > self.max_header_bytes:
            self._fail(TooLargeError("request headers too large", 431))
        key = _FIELD_NAMES.get(name)
        if key is None:
            key = name.decode("latin-1").lower()
            if len(_FIELD_NAMES) < _MAX_FIELD_NAMES and len(name) <= 64:
                _FIELD_NAMES[name] = key
        text = value.decode("latin-1").strip(" \t")  # RFC 9110 §5.5: OWS is not part of the value
        values = self._fields.get(key)
        if values is None:
            self._fields[key] = [text]
        else:
            values.append(text)

    def _on_trailer(self, name: bytes, value: bytes) -> None:
        """A trailer field: counted against the trailer limits, then dropped (nothing reads it)."""
        self._trailer_count += 1
        self._trailer_bytes += len(name) + len(value) + _FIELD_LINE_OVERHEAD
        if self._trailer_count > self.max_trailers:
            self._fail(TooLargeError(f"more than {self.max_trailers} trailer fields", 431))
        if self._trailer_bytes > self.max_trailer_bytes:
            self._fail(TooLargeError("request trailers too large", 431))

    def on_headers_complete(self) -> None:
        self._in_message_head = False
        parser: httptools.HttpRequestParser = self._parser  # type: ignore[assignment]  # feeding: set
        fields = self._fields
        version = parser.get_http_version()
        method = self.message_method = parser.get_method().decode("ascii")
        self._head_bytes += len(method) + 2  # and the empty line that ends the head
        if self._head_bytes > self.max_header_bytes:
            self._fail(TooLargeError("request headers too large", 431))
        host = fields.get("host")
        if host is None:
            if version == "1.1":
                self._fail(RemoteProtocolError("HTTP/1.1 request without Host header", 400))
        elif len(host) > 1:  # RFC 9112 §3.2: more than one Host is a 400
            self._fail(RemoteProtocolError("more than one Host header", 400))
        elif host[0] not in _VALID_HOSTS:
            if _HOST.fullmatch(host[0]) is None:
                self._fail(RemoteProtocolError(f"invalid Host header {host[0][:100]!r}", 400))
            if len(_VALID_HOSTS) < _MAX_VALID_HOSTS and len(host[0]) <= _MAX_TARGET_BYTES:
                _VALID_HOSTS.add(host[0])
        keep_alive = parser.should_keep_alive()
        if version == "1.0" and "transfer-encoding" in fields:
            # RFC 9112 §6.1: framing of an HTTP/1.0 message with Transfer-Encoding is faulty:
            # answer it, then close (whatever follows it on the connection is not trusted).
            keep_alive = False
        length = fields.get("content-length")
        content_length = 0
        if length is not None:
            text = length[0]
            if not text.isdigit():
                self._fail(RemoteProtocolError(f"invalid Content-Length {text!r}", 400))
            content_length = int(text)
            if content_length > self.max_body_bytes:
                self._fail(TooLargeError(f"body larger than {self.max_body_bytes} bytes", 413))
        upgrade = parser.should_upgrade()
        if upgrade and method != "CONNECT":
            if "transfer-encoding" in fields:  # llhttp made sure it ends in chunked
                self._upgrade_framing = b"Transfer-Encoding: chunked"
            elif content_length:
                self._upgrade_framing = b"Content-Length: %d" % content_length
        headers = _new_headers(Headers)  # Headers._from_trusted(fields), without the call
        headers._fields = fields
        head = RequestHead(method, self._url, version, headers, keep_alive, upgrade)
        self.messages_in_progress += 1
        self._events.append(head)
        self._fields = _NO_FIELDS  # the head owns them now; an idle connection keeps nothing
        self._url = b""
        self._body_bytes = 0
        self._body_crlf = 4  # the head ends with CRLF CRLF
        self._trailer_count = self._trailer_bytes = 0

    def on_body(self, body: bytes) -> None:
        self._after_chunk_header = False
        self._body_bytes += len(body)
        if self._body_bytes > self.max_body_bytes:
            self._fail(TooLargeError(f"body larger than {self.max_body_bytes} bytes", 413))
        if body[-1] in _CRLF_BYTES:
            run = _trailing_crlf(body)
            self._body_crlf = self._body_crlf + run if run == len(body) else run
        else:
            self._body_crlf = 0
        self._events.append(body)

    def on_chunk_header(self) -> None:
        self._after_chunk_header = True
        self._body_crlf = 4  # a chunked body ends with CRLF CRLF: a body chunk's bytes are not last

    def on_message_complete(self) -> None:
        if self._upgrade_framing is not None:
            return  # httptools skipped this Upgrade request's body: _parse_upgrade_body reads it
        self._after_chunk_header = False
        self._message_crlf = self._body_crlf
        self.messages_in_progress -= 1
        self._events.append(END_OF_MESSAGE)


class _UpgradeBody:
    """httptools callbacks for the body of an Upgrade request, after a made-up head (see feed)."""

    __slots__ = ("_head_done", "_owner", "on_body", "on_chunk_header")

    def __init__(self, owner: RequestParser) -> None:
        self._owner = owner
        self._head_done = False
        self.on_body = owner.on_body
        self.on_chunk_header = owner.on_chunk_header

    def on_headers_complete(self) -> None:
        self._head_done = True

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._head_done:  # a trailer
            self._owner.on_header(name, value)

    def on_message_complete(self) -> None:
        self._owner.on_message_complete()
        self._owner._finished = True


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
    lines = [_STATUS_LINES.get(status_code) or _status_line(status_code)]
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
