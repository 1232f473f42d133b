"""Client side of HTTP/1.1, sans-IO: requests out as bytes; response bytes in, head and body out.

Parsing is llhttp (through ``httptools``), strict: a response with both ``Content-Length`` and
``Transfer-Encoding``, a bad chunk size or a malformed status line raises
:class:`RemoteProtocolError`. This module adds what the parser cannot know: that a response to
``HEAD`` has no body, that ``1xx`` responses precede the real one, and a limit on the head size.

Example:
    >>> head = encode_request_head("GET", "/items?id=7", [("host", "example.com")])
    >>> head
    b'GET /items?id=7 HTTP/1.1\\r\\nhost: example.com\\r\\n\\r\\n'
    >>> parser = ResponseParser()
    >>> parser.feed(b"HTTP/1.1 200 OK\\r\\nContent-Length: 5\\r\\n\\r\\nhel")
    >>> parser.status_code, parser.headers.get("content-length"), parser.take_body()
    (200, '5', b'hel')
    >>> parser.feed(b"lo")
    >>> parser.take_body(), parser.message_complete, parser.reusable
    (b'lo', True, True)
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import httptools

from .._errors import LocalProtocolError, RemoteProtocolError, TooLargeError
from .headers import Headers
from .http11_server import encode_chunk

__all__ = [
    "CHUNKED_END",
    "DEFAULT_MAX_RESPONSE_HEADER_BYTES",
    "ResponseParser",
    "encode_chunk",
    "encode_request_head",
]

#: Status line + header fields of a response, in bytes (→ ``TooLargeError``, status hint 431).
#: Responses carry bigger heads than requests (cookies, CSP): h11/httpx allow 16 KiB, aiohttp
#: 8190 bytes per line, curl 100 KiB in all. We take 64 KiB.
DEFAULT_MAX_RESPONSE_HEADER_BYTES = 64 * 1024

#: The last chunk and empty trailer section that end a chunked request body.
CHUNKED_END = b"0\r\n\r\n"

#: Field names as received -> their lower-cased ``str`` (servers send the same few names in
#: the same case on every response: one lookup instead of a decode and a ``lower``), up to
#: ``_FIELD_NAMES_KEPT`` of them so a server inventing names cannot grow it.
_FIELD_NAMES: dict[bytes, str] = {}
_FIELD_NAMES_KEPT = 512

# RFC 9110 §5.6.2 token, for methods.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# A request target: visible ASCII only (no spaces, controls or non-ASCII; callers percent-encode).
_TARGET = re.compile(r"[\x21-\x7e]+")


def encode_request_head(method: str, target: str, headers: Iterable[tuple[str, str]]) -> bytes:
    """Request line, header lines and the blank line, as bytes.

    Header names and values are taken as given (``Headers`` has validated them); the method must
    be a token and the target visible ASCII, else :class:`LocalProtocolError`.

    Example:
        >>> encode_request_head("GET", "/a b", [])
        Traceback (most recent call last):
        ...
        flowno_io._errors.LocalProtocolError: invalid request target '/a b'
    """
    if _TOKEN.fullmatch(method) is None:
        raise LocalProtocolError(f"invalid method {method!r}")
    if _TARGET.fullmatch(target) is None:
        raise LocalProtocolError(f"invalid request target {target!r}")
    lines = [f"{method} {target} HTTP/1.1\r\n"]
    lines.extend(f"{name}: {value}\r\n" for name, value in headers)
    lines.append("\r\n")
    return "".join(lines).encode()


class ResponseParser:
    """Parse one HTTP/1.1 response: feed bytes, read the head, drain the body.

    Feed what the socket gives with :meth:`feed`, and :meth:`feed_eof` when it closes. Once
    :attr:`headers_complete` is set, ``status_code``, ``reason``, ``http_version`` and ``headers``
    hold the head; body bytes (de-chunked) accumulate until :meth:`take_body` takes them;
    :attr:`message_complete` marks the end of the body. ``1xx`` interim responses are skipped.

    Args:
        head_request: the request was ``HEAD``, so the response has no body whatever its headers
            say.
        max_header_bytes: status line + header fields limit (→ :class:`TooLargeError`, 431).
        persistent: the parser of a connection, to read its next responses too
            (:meth:`next_response`); it keeps its httptools parser until :meth:`close`.

    Raises (from ``feed`` / ``feed_eof``):
        RemoteProtocolError: malformed response, or the connection closed before its end.
        TooLargeError: the head is larger than ``max_header_bytes``.

    Example (a body that ends when the server closes the connection):
        >>> parser = ResponseParser()
        >>> parser.feed(b"HTTP/1.0 200 OK\\r\\n\\r\\npart one, ")
        >>> parser.feed(b"part two")
        >>> parser.feed_eof()
        >>> parser.take_body(), parser.message_complete, parser.reusable
        (b'part one, part two', True, False)
    """

    __slots__ = (
        "_body",
        "_failure",
        "_fields",
        "_head_fed",
        "_interim",
        "_parser",
        "_persistent",
        "bytes_received",
        "close_delimited",
        "head_request",
        "headers",
        "headers_complete",
        "http_version",
        "keep_alive",
        "max_header_bytes",
        "message_complete",
        "reason",
        "status_code",
        "trailing_data",
    )

    def __init__(
        self,
        *,
        head_request: bool = False,
        max_header_bytes: int = DEFAULT_MAX_RESPONSE_HEADER_BYTES,
        persistent: bool = False,
    ) -> None:
        self._parser = httptools.HttpResponseParser(self)
        # Kept at the end of a response, for :meth:`next_response` (else dropped: see
        # ``on_message_complete``).
        self._persistent = persistent
        self.head_request = head_request
        self.max_header_bytes = max_header_bytes
        self._fields: dict[str, list[str]] = {}
        self._body: list[bytes] = []
        self._head_fed = 0  # bytes fed while the head was unfinished
        self._interim = False
        #: Every byte fed so far (0 means the server sent nothing at all).
        self.bytes_received = 0
        self.status_code = 0
        self.reason = ""
        self.http_version = "1.1"
        self.headers: Headers = Headers()
        self.headers_complete = False
        self.message_complete = False
        #: The body has no length and ends when the server closes the connection.
        self.close_delimited = False
        #: The server's framing allows another request on this connection.
        self.keep_alive = False
        #: Bytes arrived after the end of the response (the connection cannot be reused).
        self.trailing_data = False
        self._failure: RemoteProtocolError | None = None

    def next_response(self, *, head_request: bool, max_header_bytes: int) -> None:
        """Read the next response of the same connection (a ``persistent`` parser).

        Every per-response value is replaced by a new one, never changed in place: what a
        caller took from the last response (``headers``, ``reason``...) stays as it was.

        llhttp goes on to the next message of a kept-alive connection by itself, so the
        httptools parser is kept when the last response ended where llhttp ends it; after a
        ``HEAD`` (llhttp still awaits the ``Content-Length`` bytes), or any response that does
        not allow reuse, it is replaced by a new one.
        """
        if (
            self.head_request
            or not (self.message_complete and self.keep_alive)
            or self.trailing_data
            or self._parser is _ENDED
        ):
            self.__init__(  # type: ignore[misc]
                head_request=head_request, max_header_bytes=max_header_bytes, persistent=self._persistent
            )
            return
        # The last response ended reusable: ``_interim``, ``close_delimited``, ``trailing_data``
        # and ``_failure`` are False/None already; ``keep_alive``, ``http_version`` and
        # ``status_code`` are set again before anything reads them (with ``headers_complete``).
        self.head_request = head_request
        self.max_header_bytes = max_header_bytes
        self._fields = {}
        if self._body:
            self._body = []
        self._head_fed = 0
        self.bytes_received = 0
        self.reason = ""
        self.headers = Headers()  # (its own: a caller may change the ones it was given)
        self.headers_complete = False
        self.message_complete = False

    def close(self) -> None:
        """Drop the httptools parser: no more responses (frees a ``persistent`` parser's cycle)."""
        self._parser = _ENDED

    # -- feeding ----------------------------------------------------------------------------

    def feed(self, data: bytes) -> None:
        """Parse the next bytes from the server."""
        self.bytes_received += len(data)
        if self.message_complete:
            if data:
                self.trailing_data = True
            return
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            if self.message_complete:  # the next message began (``on_message_begin`` stopped it)
                self.trailing_data = True
                return
            # The error a callback raised. (Not ``exc.__context__``: when ``feed`` runs while the
            # caller handles another exception, a BlockingIOError say, that one replaces it.)
            failure, self._failure = self._failure, None
            if failure is not None:
                raise failure from None
            raise RemoteProtocolError(f"malformed response: {exc}") from None
        except httptools.HttpParserUpgrade:
            raise RemoteProtocolError("the server switched protocols (unsupported)") from None
        except httptools.HttpParserError as exc:
            if self.message_complete:  # garbage after a complete response
                self.trailing_data = True
                return
            raise RemoteProtocolError(f"malformed response: {exc}") from None
        if not self.headers_complete:
            # Bytes of an unfinished head count against the limit, so an endless header line (which
            # llhttp buffers) cannot grow without bound.
            self._head_fed += len(data)
            if self._head_fed > self.max_header_bytes:
                raise TooLargeError(f"response head larger than {self.max_header_bytes} bytes", 431)

    def feed_eof(self) -> None:
        """The server closed the connection: end a close-delimited body, or raise if cut short.

        Raises:
            RemoteProtocolError: the response was not complete.
        """
        if self.message_complete:
            return
        if self.headers_complete and self.close_delimited:
            self.message_complete = True
            return
        if self.bytes_received == 0:
            raise RemoteProtocolError("server closed the connection without sending a response")
        if not self.headers_complete:
            raise RemoteProtocolError("server closed the connection in the middle of the response head")
        raise RemoteProtocolError("server closed the connection before the end of the response body")

    def take_body(self) -> bytes:
        """Body bytes parsed since the last call (``b""`` if none)."""
        body = self._body
        if not body:
            return b""
        self._body = []
        return body[0] if len(body) == 1 else b"".join(body)

    @property
    def has_body_data(self) -> bool:
        """True when :meth:`take_body` would return bytes."""
        return bool(self._body)

    @property
    def reusable(self) -> bool:
        """The response is complete and the connection may carry another request."""
        return self.message_complete and self.keep_alive and not self.trailing_data

    # -- httptools callbacks ----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.message_complete:
            # Bytes after the end of the response, in the same feed: stop llhttp here (it would
            # parse them as the next response, into this one's attributes).
            self.trailing_data = True
            raise _TrailingData

    def on_status(self, status: bytes) -> None:
        # (Counted against the limit with the fields: a latin-1 ``str`` has the length of its bytes.)
        self.reason += status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        # Counted against the limit once the head is complete (``_head_size``); until then
        # ``feed`` bounds what a head may buffer (each feed's bytes count against it).
        key = _FIELD_NAMES.get(name)
        if key is None:
            key = name.decode("latin-1").lower()
            if len(_FIELD_NAMES) < _FIELD_NAMES_KEPT:
                _FIELD_NAMES[name] = key
        fields = self._fields
        values = fields.get(key)
        if values is None:
            fields[key] = [value.decode("latin-1")]
        else:
            values.append(value.decode("latin-1"))

    def _fail(self, error: RemoteProtocolError) -> RemoteProtocolError:
        """Keep the error a callback raises, for ``feed`` to raise (``raise self._fail(...)``)."""
        self._failure = error
        return error

    def _head_size(self) -> int:
        """The status line's reason and the header fields, in bytes as counted for the limit
        (latin-1 decoding and lower-casing keep every length)."""
        size = len(self.reason)
        for name, values in self._fields.items():
            size += (len(name) + 4) * len(values) + sum(map(len, values))
        return size

    def on_headers_complete(self) -> None:
        # (A head within every byte fed so far is within the limit if they are: counted only
        # when they are not.)
        limit = self.max_header_bytes
        if self.bytes_received > limit and self._head_size() > limit:
            raise self._fail(TooLargeError(f"response head larger than {limit} bytes", 431))
        parser = self._parser
        status = parser.get_status_code()
        if 100 <= status < 200:
            if status == 101:
                raise self._fail(RemoteProtocolError("the server switched protocols (unsupported)"))
            # An interim response (100 Continue, 103 Early Hints): forget it, await the real one.
            self._interim = True
            self._fields = {}
            self.reason = ""
            self._head_fed = 0
            return
        fields = self._fields
        self.status_code = status
        self.http_version = parser.get_http_version()
        self.headers = Headers._from_trusted(fields)
        self.headers_complete = True
        if self.head_request or status in (204, 304):
            self.keep_alive = _keep_alive(self.http_version, fields)
            if self.head_request:
                # llhttp would wait for the Content-Length bytes: the message ends here instead.
                self.message_complete = True
            return
        transfer_encoding = fields.get("transfer-encoding")
        self.close_delimited = "content-length" not in fields and not (
            transfer_encoding and transfer_encoding[-1].lower().rstrip().endswith("chunked")
        )
        self.keep_alive = not self.close_delimited and parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        if self.message_complete:  # body bytes after the head of a HEAD response
            self.trailing_data = True
            return
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self.message_complete = True
        # The httptools parser holds bound methods of this object: a reference cycle that only the
        # cyclic GC could free. Nothing is parsed after the end (``feed`` only notes trailing
        # bytes), so break it here and let the response be freed when its last user drops it.
        # (A persistent parser keeps it for the next response, until ``close``.)
        if not self._persistent:
            self._parser = _ENDED


class _TrailingData(Exception):
    """Raised by ``on_message_begin`` to stop llhttp at bytes after the end of a response."""


#: What a ``ResponseParser`` holds instead of its httptools parser once the response ended.
_ENDED = httptools.HttpResponseParser(object())


def _keep_alive(http_version: str, fields: dict[str, list[str]]) -> bool:
    tokens = {token.strip().lower() for value in fields.get("connection", ()) for token in value.split(",")}
    if http_version == "1.1":
        return "close" not in tokens
    return "keep-alive" in tokens
