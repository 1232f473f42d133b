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
from ._pubsub import Subscription, Topic
from ._request import Request
from ._server import HttpServer, ResponseWriter
from ._sse import ServerSentEvent, SSEDecoder
from ._stream import SocketStream, open_tcp_stream
from ._streaming_response import EventSourceResponse, StreamingResponse, StreamInterrupted
from ._workers import run

__all__ = [
    "ClosedResourceError",
    "ConnectError",
    "ConnectTimeout",
    "ErrStreamingResponse",
    "EventSourceResponse",
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
    "StreamInterrupted",
    "StreamingResponse",
    "Subscription",
    "Timeout",
    "TimeoutError",
    "TooLargeError",
    "TooManyRedirects",
    "Topic",
    "TotalTimeout",
    "WriteError",
    "WriteTimeout",
    "open_tcp_stream",
    "run",
    "streaming_response_is_ok",
]
