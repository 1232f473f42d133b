"""The one rule for a response's framing and keep-alive (RFC 9112 §6, §9), for every server path.

Plain responses, streaming responses, error answers, HEAD, and responses finished while the
server drains for shutdown all ask :func:`frame_response` how to frame themselves, so they cannot
disagree. What h11's ``_clean_up_response_headers_for_sending`` is to h11.

The rule:

* **Keep-alive** only when the request allows it (HTTP/1.1 by default, HTTP/1.0 with
  ``Connection: keep-alive``), the server allows it (not shutting down, the rest of the request
  body can be drained), the application did not ask for ``Connection: close``, and the body's end
  can be told without closing. The server writes the ``Connection`` header itself: ``close`` when
  the connection will close, ``keep-alive`` for an HTTP/1.0 client that keeps it; the
  application's own ``Connection`` value is read for ``close`` and otherwise dropped.
* **No body** for ``HEAD``, 1xx, 204 and 304 (the head is sent alone). A HEAD answer carries the
  ``Content-Length`` (or ``Transfer-Encoding``) a GET would have.
* **Known length** (a plain :class:`~flowno_io.Response`): ``Content-Length`` is the body's real
  length (an application's different value would desynchronise the connection).
* **Unknown length** (streaming): the application's ``Content-Length`` if it gave one, else
  ``Transfer-Encoding: chunked`` on HTTP/1.1, else (HTTP/1.0) the raw body ended by closing.
* The application's ``Transfer-Encoding`` is dropped: the framing is the server's to choose.

Example:
    >>> from flowno_io.protocol.headers import Headers
    >>> f = frame_response(200, Headers({"Connection": "close"}), body_length=5)
    >>> f.header_lines, f.keep_alive, f.send_body
    (b'Content-Length: 5\\r\\nConnection: close\\r\\n', False, True)
    >>> f = frame_response(200, Headers(), body_length=None, http_version="1.0", request_keep_alive=True)
    >>> f.header_lines, f.keep_alive, f.chunked
    (b'Connection: close\\r\\n', False, False)
"""

from __future__ import annotations

from .headers import Headers

__all__ = ["NO_BODY_STATUSES", "ResponseFraming", "frame_response"]

#: Statuses whose responses never have a body (besides 1xx), RFC 9110 §6.4.1.
NO_BODY_STATUSES = frozenset({204, 304})
_FRAMING_FIELDS = ("connection", "transfer-encoding", "content-length")


class ResponseFraming:
    """What :func:`frame_response` decided for one response."""

    __slots__ = ("chunked", "header_lines", "headers", "keep_alive", "send_body")

    def __init__(
        self, headers: Headers, header_lines: bytes, send_body: bool, chunked: bool, keep_alive: bool
    ) -> None:
        #: The application's headers without the fields the server decides (a copy only if needed).
        self.headers = headers
        #: Encoded ``Content-Length``/``Transfer-Encoding``/``Connection`` lines to add.
        self.header_lines = header_lines
        #: False for HEAD, 1xx, 204 and 304: the head is sent alone.
        self.send_body = send_body
        #: True when the body goes out in chunks (``encode_chunk``, then ``b"0\\r\\n\\r\\n"``).
        self.chunked = chunked
        #: True when the connection may serve another request after this response.
        self.keep_alive = keep_alive

    def __repr__(self) -> str:
        return (
            f"<ResponseFraming {self.header_lines!r} send_body={self.send_body} "
            f"chunked={self.chunked} keep_alive={self.keep_alive}>"
        )


def _has_token(value: str, token: str) -> bool:
    return any(part.strip().lower() == token for part in value.split(","))


def frame_response(
    status: int,
    headers: Headers,
    *,
    body_length: int | None,
    method: str = "GET",
    http_version: str = "1.1",
    request_keep_alive: bool = True,
    server_keep_alive: bool = True,
) -> ResponseFraming:
    """Decide the framing and keep-alive of one response.

    Args:
        status: the status code.
        headers: the application's response headers (not modified).
        body_length: the body's length when known (a plain response), ``None`` when streamed.
        method: the request's method (``HEAD`` gets no body).
        http_version: the request's version, ``"1.1"`` or ``"1.0"``.
        request_keep_alive: the request allows keep-alive (the parser's ``keep_alive``).
        server_keep_alive: the server allows it (not closing, request body drainable, no error).

    Returns:
        A :class:`ResponseFraming`.
    """
    fields = headers._fields
    keep_alive = request_keep_alive and server_keep_alive
    app_length = None
    if "connection" in fields or "transfer-encoding" in fields or "content-length" in fields:
        app_connection = fields.get("connection")
        if app_connection is not None and any(_has_token(value, "close") for value in app_connection):
            keep_alive = False
        length_values = fields.get("content-length")
        app_length = length_values[0].encode("latin-1") if length_values else None
        headers = headers.copy()
        for name in _FRAMING_FIELDS:
            headers.delete(name)
    chunked = False
    if status < 200 or status in NO_BODY_STATUSES:
        send_body = False
        lines = b"Content-Length: %b\r\n" % app_length if status == 304 and app_length is not None else b""
    else:
        send_body = method != "HEAD"
        if body_length is not None:
            lines = b"Content-Length: %d\r\n" % body_length
        elif app_length is not None:
            lines = b"Content-Length: %b\r\n" % app_length
        elif http_version == "1.1":
            chunked = send_body
            lines = b"Transfer-Encoding: chunked\r\n"
        else:
            lines = b""
            if send_body:
                keep_alive = False  # HTTP/1.0 without a length: the body ends when the connection closes
    if not keep_alive:
        lines += b"Connection: close\r\n"
    elif http_version == "1.0":
        lines += b"Connection: keep-alive\r\n"
    return ResponseFraming(headers, lines, send_body, chunked, keep_alive)
