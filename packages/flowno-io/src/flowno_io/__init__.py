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
from .client.auth import Auth, BasicAuth, DigestAuth
from .client.client import (
    ClientResponse,
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
from .server.access_log import AccessLogMiddleware
from .server.compression import GZipMiddleware
from .server.cors import CORSMiddleware
from .server.http2 import Http2Limits
from .server.pubsub import Subscription, Topic
from .server.request import Request
from .server.server import HttpServer, ResponseWriter
from .server.streaming import EventSourceResponse, StreamingResponse, StreamInterrupted
from .server.workers import WorkerSlot, run, worker_slot

__all__ = [
    "AccessLogMiddleware",
    "Auth",
    "BasicAuth",
    "CORSMiddleware",
    "ClientResponse",
    "ClosedResourceError",
    "ConnectError",
    "ConnectTimeout",
    "DigestAuth",
    "ErrStreamingResponse",
    "EventLoop",
    "EventSourceResponse",
    "GZipMiddleware",
    "HTTPException",
    "HTTPStatusError",
    "Headers",
    "Http2Limits",
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
    "WorkerSlot",
    "WriteError",
    "WriteTimeout",
    "cancel",
    "open_tcp_stream",
    "run",
    "sleep",
    "streaming_response_is_ok",
    "worker_slot",
]
