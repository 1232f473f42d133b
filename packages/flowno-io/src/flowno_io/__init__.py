"""flowno-io: a fast, correct HTTP/1.1 server and client, with Server-Sent Events, for Flowno.

The public API of ``flowno.io`` (``Headers``, ``HttpClient``, ``HttpServer``, ``Response``, the
streaming response types) is kept, so code ports by changing the import.
"""

from ._errors import (
    ClosedResourceError,
    ConnectError,
    ConnectTimeout,
    HttpError,
    HTTPStatusError,
    LocalProtocolError,
    NetworkError,
    PoolTimeout,
    ProtocolError,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    TimeoutError,
    TooLargeError,
    TotalTimeout,
    WriteError,
    WriteTimeout,
)
from ._headers import Headers
from ._models import Response
from ._request import Request
from ._server import HttpServer, ResponseWriter
from ._sse import ServerSentEvent, SSEDecoder
from ._stream import SocketStream, open_tcp_stream

__all__ = [
    "ClosedResourceError",
    "ConnectError",
    "ConnectTimeout",
    "HTTPStatusError",
    "Headers",
    "HttpError",
    "HttpServer",
    "LocalProtocolError",
    "NetworkError",
    "PoolTimeout",
    "ProtocolError",
    "ReadError",
    "ReadTimeout",
    "RemoteProtocolError",
    "Request",
    "Response",
    "ResponseWriter",
    "SSEDecoder",
    "ServerSentEvent",
    "SocketStream",
    "TimeoutError",
    "TooLargeError",
    "TotalTimeout",
    "WriteError",
    "WriteTimeout",
    "open_tcp_stream",
]
