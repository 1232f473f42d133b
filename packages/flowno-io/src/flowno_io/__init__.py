"""flowno-io: a fast, correct HTTP/1.1 server and client, with Server-Sent Events, for Flowno.

The public API of ``flowno.io`` (``Headers``, ``HttpClient``, ``HttpServer``, ``Response``, the
streaming response types) is kept, so code ports by changing the import.
"""

from ._client import (
    ErrStreamingResponse,
    HttpClient,
    HTTPException,
    OkStreamingResponse,
    Timeout,
    streaming_response_is_ok,
)
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
    TooManyRedirects,
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
    "ErrStreamingResponse",
    "HTTPException",
    "HTTPStatusError",
    "Headers",
    "HttpClient",
    "HttpError",
    "HttpServer",
    "LocalProtocolError",
    "NetworkError",
    "OkStreamingResponse",
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
    "Timeout",
    "TimeoutError",
    "TooLargeError",
    "TooManyRedirects",
    "TotalTimeout",
    "WriteError",
    "WriteTimeout",
    "open_tcp_stream",
    "streaming_response_is_ok",
]
