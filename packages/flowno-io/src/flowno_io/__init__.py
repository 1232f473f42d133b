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
    TooManyRedirects,
    TotalTimeout,
    WriteError,
    WriteTimeout,
)
from .client.client import (
    ErrStreamingResponse,
    HttpClient,
    HTTPException,
    OkStreamingResponse,
    Timeout,
    streaming_response_is_ok,
)
from .io.flowno_compat import EventLoop, cancel, sleep
from .io.socket_stream import SocketStream, open_tcp_stream
from .protocol.headers import Headers
from .protocol.models import Response
from .protocol.sse import ServerSentEvent, SSEDecoder
from .server.pubsub import Subscription, Topic
from .server.request import Request
from .server.server import HttpServer, ResponseWriter
from .server.streaming import EventSourceResponse, StreamingResponse, StreamInterrupted
from .server.workers import run

__all__ = [
    "ClosedResourceError",
    "ConnectError",
    "ConnectTimeout",
    "ErrStreamingResponse",
    "EventLoop",
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
    "cancel",
    "open_tcp_stream",
    "run",
    "sleep",
    "streaming_response_is_ok",
]
