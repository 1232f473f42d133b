"""Every exception flowno-io raises, in one tree.

::

    HttpError                       base of everything below
    ├── ProtocolError               bytes that break HTTP/1.1 (carries ``status_hint``)
    │   ├── RemoteProtocolError     the peer sent them (server: a bad request; client: a bad response)
    │   ├── LocalProtocolError      we were asked to send them (e.g. CR/LF in a header)
    │   └── TooLargeError           a limit was exceeded (431 for headers, 413 for bodies)
    ├── NetworkError                the transport failed
    │   ├── ConnectError            could not connect (refused, unreachable, DNS)
    │   ├── ReadError               receiving failed (reset, or closed before the message ended)
    │   ├── WriteError              sending failed (reset, broken pipe)
    │   └── ClosedResourceError     the stream was already closed by us
    ├── TimeoutError                an operation took too long (also a builtin ``TimeoutError``)
    │   ├── ConnectTimeout
    │   ├── ReadTimeout
    │   ├── WriteTimeout
    │   ├── PoolTimeout             no pooled connection became free in time
    │   └── TotalTimeout            the whole request took too long
    ├── HTTPStatusError             ``response.raise_for_status()`` on a 4xx/5xx
    └── TooManyRedirects            the client followed more redirects than allowed

Network errors are translated from ``OSError`` at the I/O boundary (``io/socket_stream.py``), so code above
it never sees a bare ``OSError``.
"""

from __future__ import annotations

import builtins
from typing import Any

__all__ = [
    "ClosedResourceError",
    "ConnectError",
    "ConnectTimeout",
    "HTTPStatusError",
    "HttpError",
    "LocalProtocolError",
    "NetworkError",
    "PoolTimeout",
    "ProtocolError",
    "ReadError",
    "ReadTimeout",
    "RemoteProtocolError",
    "TimeoutError",
    "TooLargeError",
    "TooManyRedirects",
    "TotalTimeout",
    "WriteError",
    "WriteTimeout",
]


class HttpError(Exception):
    """Base class of every error raised by flowno-io."""


class ProtocolError(HttpError):
    """Bytes that violate HTTP/1.1.

    Args:
        message: what was wrong.
        status_hint: the status a server should answer with (400 unless a more precise one fits).
    """

    def __init__(self, message: str, status_hint: int = 400) -> None:
        super().__init__(message)
        self.status_hint = status_hint


class RemoteProtocolError(ProtocolError):
    """The peer sent bytes that are not valid HTTP/1.1."""


class LocalProtocolError(ProtocolError):
    """We were asked to send something that is not valid HTTP/1.1."""


class TooLargeError(RemoteProtocolError):
    """A size limit was exceeded: 431 for the request line and headers, 413 for a body."""


class NetworkError(HttpError):
    """The transport failed."""


class ConnectError(NetworkError):
    """Could not open a connection."""


class ReadError(NetworkError):
    """Receiving failed, or the peer closed before the message was complete."""


class WriteError(NetworkError):
    """Sending failed (connection reset, broken pipe)."""


class ClosedResourceError(NetworkError):
    """The stream was used after we closed it."""


class TimeoutError(HttpError, builtins.TimeoutError):
    """An operation did not finish in time."""


class ConnectTimeout(TimeoutError):
    """Connecting took longer than the connect timeout."""


class ReadTimeout(TimeoutError):
    """No data arrived within the read timeout."""


class WriteTimeout(TimeoutError):
    """The peer did not accept data within the write timeout."""


class PoolTimeout(TimeoutError):
    """No pooled connection became free within the pool timeout."""


class TotalTimeout(TimeoutError):
    """The whole request took longer than the total timeout."""


class HTTPStatusError(HttpError):
    """Raised by ``raise_for_status()`` for a 4xx or 5xx response.

    Attributes:
        response: the response that carried the error status.
    """

    def __init__(self, message: str, *, response: Any) -> None:
        super().__init__(message)
        self.response = response


class TooManyRedirects(HttpError):
    """The client followed ``max_redirects`` redirects and was sent on once more."""
