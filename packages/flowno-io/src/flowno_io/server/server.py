"""``HttpServer``: HTTP/1.1 on the flowno event loop.

Design, around the limits of flowno 0.1.19's loop (see ``docs/flowno-upstream.md``):

* **One driver task, a private epoll.** The listening socket and every connection that waits for
  its next request sit in an ``epoll`` of the server's own; the flowno loop sees only that one
  descriptor (``serve()`` parks on it with flowno's socket command). When it wakes, the driver
  accepts and reads every ready socket and runs each request's exchange *inline*: the exchange is
  a coroutine that usually finishes without waiting (whole request in hand, response fits the
  socket buffer), so a request costs no task switch, no selector registration, and one loop step
  is shared by every connection that was ready. Idle keep-alive connections cost no task and do
  not sit in the loop's waiter list (which it scans on every wake-up).
* **Workers for exchanges that wait.** When an exchange must wait (a body still arriving, a slow
  handler, a full socket buffer, a streaming response) the driver hands the suspended coroutine
  to a worker task, which resumes it on the loop and then returns the connection to the driver.
  Workers are pooled and reused, because flowno keeps every finished task forever.
* **Try the syscall first.** All I/O is non-blocking and waits only on ``EAGAIN`` (``io/socket_stream.py``).
* **Timeouts by timer.** A parked connection's keep-alive or header deadline closes it from the
  clock task; a worker's waits time out by socket shutdown (``io/clock.py``).

Error policy (as uvicorn's): malformed request → its 4xx (400, 413, 431, 505) and close; a
handler that raises → 500 if nothing was sent yet, else close; the server keeps serving.
"""

from __future__ import annotations

import errno
import inspect
import logging
import resource
import socket as _socket
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from time import monotonic
from typing import Any, TypeAlias

import orjson
from flowno import Event, SocketHandle, spawn

from .._errors import HttpError, NetworkError, ProtocolError, TimeoutError
from ..io.clock import Timer, get_clock
from ..io.coroutines import resume as _resume
from ..io.flowno_compat import sleep
from ..io.poller import READABLE, Poller
from ..io.socket_stream import SocketStream
from ..io.wakeup import Wakeup
from ..protocol.framing import frame_response
from ..protocol.headers import Headers
from ..protocol.http11_server import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_HEADERS,
    RequestHead,
    RequestParser,
    encode_chunk,
    encode_response_head,
    http_date,
)
from ..protocol.models import Response
from .request import Request
from .routing import MethodNotAllowed, NotFound, Router
from .signals import ShutdownSignals

__all__ = [
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_KEEPALIVE_TIMEOUT",
    "DEFAULT_SHUTDOWN_GRACE",
    "DEFAULT_WRITE_TIMEOUT",
    "Handler",
    "HttpServer",
    "ResponseWriter",
]

logger = logging.getLogger("flowno_io.server")

Handler: TypeAlias = Callable[[Request], Awaitable[Any] | Any]

#: Seconds from a request's first byte to the end of its headers (slow-loris guard; then close).
DEFAULT_HEADER_TIMEOUT = 10.0
#: Seconds a client may go without sending while a handler reads the body (→ close).
DEFAULT_BODY_TIMEOUT = 30.0
#: Seconds an idle keep-alive connection is kept open waiting for its next request.
DEFAULT_KEEPALIVE_TIMEOUT = 5.0
#: Seconds a client may go without reading while we send (→ close).
DEFAULT_WRITE_TIMEOUT = 30.0
#: Bytes of unread request body the server reads and drops to keep a connection alive; a larger
#: leftover closes the connection instead.
MAX_DRAIN_BYTES = 256 * 1024
#: Bytes of pipelined input parsed at a time: requests are parsed only as earlier ones are
#: answered, so a client that pipelines and stops reading holds at most this much parsed.
FEED_SLICE = 4096
#: Lingering close after an error answer (nginx's ``lingering_close``): read and drop what the
#: client still sends, so it can read our 4xx instead of losing it to a reset. At most
#: ``LINGERING_TIME`` seconds in all, ``LINGERING_TIMEOUT`` seconds of silence, and
#: ``LINGERING_MAX_BYTES`` bytes (nginx: 30 s, 5 s, no byte limit).
LINGERING_TIME = 5.0
LINGERING_TIMEOUT = 2.0
LINGERING_MAX_BYTES = 64 * 1024 * 1024
#: Bodies larger than this are sent after the head rather than copied into one buffer with it.
COPY_BODY_BYTES = 16 * 1024

#: Seconds ``close()`` (and SIGTERM) gives in-flight requests before shutting their sockets down.
DEFAULT_SHUTDOWN_GRACE = 10.0
#: Seconds ``close()`` waits, after the grace period, for shut-down connections to be released.
FORCE_CLOSE_WAIT = 1.0

_SERVER_HEADER = b"Server: flowno-io\r\n"


def _default_max_connections() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 10_000
    return max(16, min(10_000, soft - 64))


class _Connection:
    """One accepted connection: its stream, parser and bookkeeping."""

    __slots__ = (
        "client",
        "fd",
        "head_deadline",
        "parked",
        "parser",
        "requests_served",
        "server",
        "stream",
        "timer",
        "unfed",
    )

    def __init__(self, server: HttpServer, sock: _socket.socket, client: Any) -> None:
        self.server = server
        self.stream = SocketStream(sock)
        self.fd = sock.fileno()
        self.client: tuple[str, int] = (client[0], client[1]) if isinstance(client, tuple) else ("", 0)
        self.parser = RequestParser(server.max_header_bytes, server.max_headers, server.max_body_bytes)
        self.requests_served = 0
        #: True while the driver watches it (between requests); False while a worker owns it.
        self.parked = False
        self.head_deadline: float | None = None
        self.timer: Timer | None = None
        #: Bytes read from the socket but not yet given to the parser (see ``FEED_SLICE``).
        self.unfed: memoryview | bytes = b""

    def feed_unfed(self) -> bool:
        """Give the parser the next slice of the bytes read ahead; False when there are none.

        A protocol error is kept by the parser (``parser.error``) and answered after the requests
        parsed before it.
        """
        unfed = self.unfed
        if not unfed or self.parser.error is not None:
            return False
        self.unfed = unfed[FEED_SLICE:]
        try:
            self.parser.feed(bytes(unfed[:FEED_SLICE]))
        except ProtocolError:
            pass
        return True

    def expire(self) -> None:
        """The keep-alive or header deadline of a parked connection passed: close it."""
        if self.parked:
            self.server._drop(self)


_Exchange: TypeAlias = Coroutine[Any, Any, bool]


class _Worker:
    """A pooled task that resumes exchanges the driver could not finish inline."""

    __slots__ = ("job", "wakeup")

    def __init__(self) -> None:
        self.wakeup = Wakeup()  # reusable; a flowno Event per wait would stay in the loop forever
        self.job: tuple[_Connection, _Exchange, Any] | None = None


class ResponseWriter:
    """What a streaming response uses to send itself (see ``StreamingResponse``).

    Attributes:
        request: the request being answered.
        head_only: True for HEAD (send the head, no body).
        chunked: True once :meth:`write_head` chose chunked framing (HTTP/1.1).
    """

    __slots__ = (
        "_connection",
        "_request_keep_alive",
        "chunked",
        "head_only",
        "head_sent",
        "keep_alive",
        "request",
    )

    def __init__(self, connection: _Connection, request: Request, request_keep_alive: bool) -> None:
        self._connection = connection
        self._request_keep_alive = request_keep_alive
        self.request = request
        self.head_only = request.method == "HEAD"
        #: Whether the connection serves another request after this response (set by the head).
        self.keep_alive = False
        self.chunked = False
        self.head_sent = False

    @property
    def stream(self) -> SocketStream:
        """The connection's stream (for disconnect detection)."""
        return self._connection.stream

    @property
    def server(self) -> HttpServer:
        """The server this response belongs to (``server.closing`` tells of a shutdown)."""
        return self._connection.server

    async def write_head(self, status_code: int, headers: Headers) -> None:
        """Send the status line and headers; the framing rule (``protocol/framing.py``) decides.

        HTTP/1.1 gets ``Transfer-Encoding: chunked`` unless ``headers`` give a ``Content-Length``;
        HTTP/1.0 gets the raw body and the connection closes after it.
        """
        request = self.request
        server = self._connection.server
        framing = frame_response(
            status_code,
            headers,
            body_length=None,
            method=request.method,
            http_version=request.http_version,
            request_keep_alive=self._request_keep_alive,
            server_keep_alive=server._may_keep_alive(request, streaming=True),
        )
        self.chunked = framing.chunked
        self.keep_alive = framing.keep_alive
        self.head_sent = True
        extra = b"%bDate: %b\r\n%b" % (_SERVER_HEADER, http_date(), framing.header_lines)
        await self._send(encode_response_head(status_code, framing.headers, extra))

    async def write(self, data: bytes) -> None:
        """Send a piece of the body (framed as a chunk when chunked; nothing for HEAD)."""
        if self.head_only or not data:
            return
        await self._send(encode_chunk(data) if self.chunked else data)

    async def end(self) -> None:
        """Finish the body (the last chunk when chunked)."""
        if self.chunked and not self.head_only:
            await self._send(b"0\r\n\r\n")

    async def _send(self, data: bytes) -> None:
        await self._connection.stream.send_all(data, timeout=self._connection.server.write_timeout)


class HttpServer:
    """An HTTP/1.1 server on the flowno event loop, with the API of ``flowno.io.HttpServer``.

    Args:
        host: address to bind (``"127.0.0.1"``, ``"0.0.0.0"``, ``"::"``).
        port: port to bind; ``0`` picks a free one, readable as ``server.port`` after :meth:`bind`.
        routes: optional handler table ``{"/path": handler}`` or ``{("GET", "/path"): handler}``.
        max_header_bytes: request line + headers limit (→ 431).
        max_headers: header field count limit (→ 431).
        max_body_bytes: request body limit (→ 413, before reading when Content-Length says so).
        header_timeout: seconds from a request's first byte to the end of its headers (→ close).
        body_timeout: seconds of silence allowed while a handler reads the body (→ close).
        keepalive_timeout: seconds an idle keep-alive connection waits for its next request.
        write_timeout: seconds a client may go without reading a response (→ close).
        max_connections: open connections at most; beyond it the server stops accepting until
            one closes (default: 10,000 or the fd limit minus 64, whichever is lower).
        backlog: the listen backlog.
        reuse_port: set ``SO_REUSEPORT`` (several processes serving one port).
        shutdown_grace: seconds :meth:`close` (and SIGTERM) gives in-flight requests to finish.

    A server with no routes answers every request as ``flowno.io.HttpServer`` does (200,
    ``Hello, world!`` and the request line), so code written for the seed keeps working.

    Example:
        >>> from flowno_io import EventLoop, HttpClient, HttpServer, Response
        >>> from flowno_io.flowno import spawn
        >>> server = HttpServer("127.0.0.1", 0)
        >>> @server.route("/users/{id:int}", methods=["GET"])
        ... async def get_user(request):
        ...     return Response.json({"id": request.path_params["id"]})
        >>> async def main():
        ...     await spawn(server.serve())
        ...     response = await HttpClient().get(f"http://127.0.0.1:{server.port}/users/7")
        ...     await server.close()
        ...     return response.decode_json()
        >>> EventLoop().run_until_complete(main(), join=True)
        {'id': 7}
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        routes: Mapping[str | tuple[str, str], Handler] | None = None,
        max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
        max_headers: int = DEFAULT_MAX_HEADERS,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        body_timeout: float = DEFAULT_BODY_TIMEOUT,
        keepalive_timeout: float = DEFAULT_KEEPALIVE_TIMEOUT,
        write_timeout: float = DEFAULT_WRITE_TIMEOUT,
        max_connections: int | None = None,
        backlog: int = 1024,
        reuse_port: bool = False,
        shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE,
    ) -> None:
        if not isinstance(host, str):
            raise TypeError(f"HttpServer host must be a str such as '127.0.0.1', not {host!r}")
        _check_port(port)
        for name, value in (("max_header_bytes", max_header_bytes), ("max_headers", max_headers)):
            _check_count(name, value, 1)
        _check_count("max_body_bytes", max_body_bytes, 0)
        _check_count("backlog", backlog, 0)
        if max_connections is not None:
            _check_count("max_connections", max_connections, 1)
        for name, seconds in (
            ("header_timeout", header_timeout),
            ("body_timeout", body_timeout),
            ("keepalive_timeout", keepalive_timeout),
            ("write_timeout", write_timeout),
            ("shutdown_grace", shutdown_grace),
        ):
            _check_seconds(name, seconds)
        self.host = host
        self.port = port
        self.max_header_bytes = max_header_bytes
        self.max_headers = max_headers
        self.max_body_bytes = max_body_bytes
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.keepalive_timeout = keepalive_timeout
        self.write_timeout = write_timeout
        self.max_connections = max_connections or _default_max_connections()
        self.backlog = backlog
        self.reuse_port = reuse_port
        self.shutdown_grace = shutdown_grace
        self.router: Router[Handler] = Router()
        self._has_routes = False
        self._listener: _socket.socket | None = None
        self._idle_workers: list[_Worker] = []
        self._connections: set[_Connection] = set()
        self._parked: dict[int, _Connection] = {}
        self._poller: Poller | None = None
        self._accepting = False
        self._closing = False
        self._grace = shutdown_grace
        #: Plain callbacks run when :meth:`close` begins (streaming responses end event streams).
        self._close_callbacks: set[Callable[[], object]] = set()
        self._closed: Event | None = None
        #: Counters for health endpoints and tests.
        self.stats = {"connections_accepted": 0, "requests_served": 0, "workers": 0}
        for key, handler in (routes or {}).items():
            if isinstance(key, tuple):
                self.add_route(key[1], handler, methods=[key[0]])
            else:
                self.add_route(key, handler)

    # -- routes -----------------------------------------------------------------------------

    def add_route(self, path: str, handler: Handler, methods: Iterable[str] | None = None) -> None:
        """Route ``path`` (a pattern such as ``/users/{id:int}``) to ``handler`` for ``methods``.

        ``methods=None`` answers every method. A handler takes the :class:`Request` and returns a
        :class:`Response`, a streaming response, ``str``/``bytes`` (200), a ``dict``/``list``
        (JSON), or ``None`` (204). It may be ``async`` or plain.
        """
        self.router.add(path, handler, methods)
        self._has_routes = True

    def route(self, path: str, methods: Iterable[str] | None = None) -> Callable[[Handler], Handler]:
        """Decorator form of :meth:`add_route`."""

        def decorate(handler: Handler) -> Handler:
            self.add_route(path, handler, methods)
            return handler

        return decorate

    # -- lifecycle --------------------------------------------------------------------------

    def bind(self) -> _socket.socket:
        """Create, bind and listen on the socket now (``serve()`` does it when needed).

        After it, ``server.port`` is the bound port (useful with ``port=0``).
        """
        if self._listener is not None:
            return self._listener
        _check_port(self.port)  # the attribute may have been set after __init__
        infos = _socket.getaddrinfo(self.host, self.port, type=_socket.SOCK_STREAM, flags=_socket.AI_PASSIVE)
        family, type_, proto, _, address = infos[0]
        sock = _socket.socket(family, type_, proto)
        try:
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
            if self.reuse_port:
                sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEPORT, 1)
            sock.bind(address)
            if hasattr(_socket, "TCP_DEFER_ACCEPT") and family in (_socket.AF_INET, _socket.AF_INET6):
                # Hand a connection over only once its first bytes arrived (Linux): one wake-up
                # instead of two for a short-lived connection.
                sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_DEFER_ACCEPT, 1)
            sock.listen(self.backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._listener = sock
        self.port = sock.getsockname()[1]
        return sock

    def use_socket(self, sock: _socket.socket) -> None:
        """Serve on an already bound and listening socket (e.g. inherited from a parent process)."""
        sock.setblocking(False)
        self._listener = sock
        self.port = sock.getsockname()[1]

    @property
    def closing(self) -> bool:
        """True once :meth:`close` has begun."""
        return self._closing

    @property
    def open_connections(self) -> int:
        """Connections open right now."""
        return len(self._connections)

    async def serve(self) -> None:
        """Accept and serve connections until :meth:`close` is called."""
        listener = self.bind()
        self._closed = Event()
        poller = self._poller = Poller(wakeable=True)
        poller.register(listener.fileno(), READABLE)
        self._accepting = True
        listener_fd = listener.fileno()
        wake_fd = poller.wake_fd
        parked = self._parked
        signals = await ShutdownSignals.install(self)  # SIGINT/SIGTERM → close(), on the main thread
        logger.info("serving on http://%s:%s", self.host, self.port)
        try:
            while not self._closing:
                events = poller.ready(256)
                if events:
                    # Ready work: yield to the loop's other tasks without a selector round trip.
                    # (Registering the poller with the loop's selector costs O(its connections):
                    # the kernel checks nested epolls for loops, ~2 ms with 10,000 connections.)
                    await sleep(0)
                else:
                    await poller.wait()
                    events = poller.ready(256)
                for fd, _ in events:
                    if fd == listener_fd:
                        await self._accept_ready(listener)
                    elif fd == wake_fd:
                        poller.consume_pokes()
                    else:
                        connection = parked.get(fd)
                        if connection is not None:
                            await self._on_readable(connection)
        finally:
            await self._shut_down(listener)
            if signals is not None:
                signals.uninstall()
            poller.close()
            self._poller = None
            await self._closed.set()

    async def close(self, grace: float | None = None) -> None:
        """Stop accepting, close idle connections, let in-flight requests finish, then return.

        Args:
            grace: seconds in-flight requests get before their connections are shut down
                (default: the server's ``shutdown_grace``).
        """
        self._grace = self.shutdown_grace if grace is None else grace
        if not self._closing:
            self._closing = True
            self._wake_driver()
            for callback in list(self._close_callbacks):
                callback()
        if self._closed is not None:
            await self._closed.wait()

    def _wake_driver(self) -> None:
        if self._poller is not None:
            self._poller.poke()

    async def _shut_down(self, listener: _socket.socket) -> None:
        listener.close()
        self._listener = None
        for connection in list(self._parked.values()):
            self._drop(connection)  # idle (or half-sent request): nothing in flight
        deadline = monotonic() + self._grace
        while self._connections and monotonic() < deadline:
            await sleep(0.02)
        for connection in list(self._connections):
            connection.stream.shutdown()  # wakes the worker that owns it, which then closes it
        deadline = monotonic() + FORCE_CLOSE_WAIT
        while self._connections and monotonic() < deadline:
            await sleep(0.01)
        for connection in list(self._connections):
            # A handler parked on something other than its socket (a sleep, an event) cannot be
            # woken: close its socket and stop waiting for it.
            logger.warning("closing a connection whose handler did not finish after the grace period")
            self._drop(connection)
        for worker in self._idle_workers:
            worker.wakeup.set()
        self._idle_workers.clear()

    # -- the driver -------------------------------------------------------------------------

    async def _accept_ready(self, listener: _socket.socket) -> None:
        for _ in range(128):
            if len(self._connections) >= self.max_connections:
                self._pause_accepting()
                return
            try:
                sock, client = listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                await self._accept_failed(exc)
                return
            connection = _Connection(self, sock, client)
            self._connections.add(connection)
            self.stats["connections_accepted"] += 1
            # The request often arrives with the handshake: serve it now if it is there.
            await self._on_readable(connection)

    async def _accept_failed(self, exc: OSError) -> None:
        if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
            logger.error("accept failed (%s): pausing accepts for 100 ms", exc)
            self._pause_accepting()
            timer = get_clock().timer(self._resume_accepting)
            await timer.arm(0.1)
        elif exc.errno not in (errno.ECONNABORTED, errno.EPROTO, errno.EINTR, errno.EAGAIN):
            logger.error("accept failed: %s", exc)

    def _pause_accepting(self) -> None:
        if self._accepting and self._poller is not None and self._listener is not None:
            self._poller.unregister(self._listener.fileno())
            self._accepting = False

    def _resume_accepting(self) -> None:
        if (
            not self._accepting
            and self._poller is not None
            and self._listener is not None
            and len(self._connections) < self.max_connections
        ):
            self._poller.register(self._listener.fileno(), READABLE)
            self._accepting = True

    async def _park(self, connection: _Connection) -> None:
        """Give a connection (between requests) to the driver, with its idle deadline."""
        if not self._park_nowait(connection):
            await get_clock()._start()

    def _park_nowait(self, connection: _Connection) -> bool:
        """:meth:`_park` without awaiting; False when the clock task must still be started."""
        if self._closing or self._poller is None:
            self._drop(connection)
            return True
        if connection.parser.in_head:
            if connection.head_deadline is None:
                connection.head_deadline = monotonic() + self.header_timeout
            deadline = connection.head_deadline
        else:
            connection.head_deadline = None
            idle = self.keepalive_timeout if connection.requests_served else self.header_timeout
            deadline = monotonic() + idle
        timer = connection.timer
        if timer is None:
            timer = connection.timer = get_clock().timer(connection.expire)
        running = timer.set_deadline(deadline)
        if not connection.parked:
            self._poller.register(connection.fd, READABLE)
            self._parked[connection.fd] = connection
            connection.parked = True
        return running

    def _unpark(self, connection: _Connection) -> None:
        if connection.parked:
            connection.parked = False
            del self._parked[connection.fd]
            if self._poller is not None:
                self._poller.unregister(connection.fd)
        if connection.timer is not None:
            connection.timer.disarm()

    def _drop(self, connection: _Connection) -> None:
        """Close a connection for good."""
        self._unpark(connection)
        connection.stream.close()
        self._connections.discard(connection)
        if not self._accepting and not self._closing:
            self._resume_accepting()

    async def _on_readable(self, connection: _Connection) -> None:
        try:
            data = connection.stream.sock.recv(65536)
        except BlockingIOError:
            if not connection.parked and not self._park_nowait(connection):
                await get_clock()._start()
            return
        except OSError:
            self._drop(connection)
            return
        if not data:
            self._drop(connection)
            return
        exchange = self._exchange(connection, data)
        try:
            command = exchange.send(None)
        except StopIteration as stop:
            if stop.value and not self._closing:
                if not self._park_nowait(connection):
                    await get_clock()._start()
            else:
                self._drop(connection)
            return
        except Exception:
            logger.exception("unexpected error on a connection")
            self._drop(connection)
            return
        # The exchange has to wait for something: a worker task takes it over.
        self._unpark(connection)
        job = (connection, exchange, command)
        if self._idle_workers:
            worker = self._idle_workers.pop()
            worker.job = job
            worker.wakeup.set()
        else:
            self.stats["workers"] += 1
            await spawn(self._worker(job))

    async def _exchange(self, connection: _Connection, data: bytes) -> bool:
        """Answer every request in ``data``, in order; True to keep the connection.

        Pipelined input is parsed ``FEED_SLICE`` bytes at a time, only as the requests before it
        are answered: a client that pipelines and stops reading holds the raw bytes it sent and
        a few parsed requests, not thousands. The requests parsed before a protocol error are
        answered, then the error.
        """
        parser = connection.parser
        if len(data) <= FEED_SLICE:
            try:
                parser.feed(data)
            except ProtocolError:
                pass  # kept in parser.error, answered after the requests before it
        else:
            connection.unfed = memoryview(data)
            connection.feed_unfed()
        while True:
            event = parser.next_event()
            if event is None:
                if connection.unfed and connection.feed_unfed():
                    continue
                break
            if type(event) is RequestHead:
                if parser.error is not None and not parser.body_complete():
                    break  # this request's own bytes are bad: answer it with the error
                if not await self._handle(connection, event):
                    return False
        error = parser.error
        if error is not None:
            # The error answers the request being parsed when it failed: no body for a HEAD.
            head_only = parser.message_method == "HEAD"
            await self._send_error(connection, error.status_hint, str(error), head_only=head_only)
            return False
        return True

    async def _worker(self, job: tuple[_Connection, _Exchange, Any] | None) -> None:
        worker = _Worker()
        while job is not None:
            connection, exchange, command = job
            try:
                keep = await _resume(exchange, command)
            except Exception:
                logger.exception("unexpected error on a connection")
                keep = False
            if keep and not self._closing:
                await self._park(connection)
            else:
                self._drop(connection)
            if self._closing:
                return
            worker.job = None
            self._idle_workers.append(worker)
            await worker.wakeup.wait()
            job = worker.job

    async def handle_client(self, client_sock: SocketHandle | _socket.socket) -> None:
        """Serve one accepted connection until it closes (the seed's API)."""
        sock = client_sock.socket if isinstance(client_sock, SocketHandle) else client_sock
        try:
            client = sock.getpeername()
        except OSError:
            client = ("", 0)
        connection = _Connection(self, sock, client)
        self._connections.add(connection)
        self.stats["connections_accepted"] += 1
        await self._serve_connection(connection)

    # -- one connection ---------------------------------------------------------------------

    async def _serve_connection(self, connection: _Connection) -> None:
        """Serve one connection in the calling task until it closes (``handle_client``)."""
        try:
            while not self._closing or connection.parser.has_events():
                head = await self._next_head(connection)
                if head is None:
                    return
                if not await self._handle(connection, head):
                    return
        except Exception:  # never let one connection take the worker down
            logger.exception("unexpected error on a connection")
        finally:
            self._drop(connection)

    async def _next_head(self, connection: _Connection) -> RequestHead | None:
        """The next request head, or None when the connection should close quietly."""
        parser = connection.parser
        stream = connection.stream
        head_deadline: float | None = None
        while True:
            event = parser.next_event()
            if event is not None:
                if isinstance(event, RequestHead):
                    return event
                continue  # leftovers of a body already answered (drained by _finish_body)
            if parser.in_head and head_deadline is None:
                head_deadline = monotonic() + self.header_timeout
            if head_deadline is not None:
                deadline = head_deadline
            elif connection.requests_served:
                deadline = monotonic() + self.keepalive_timeout
            else:
                deadline = monotonic() + self.header_timeout
            try:
                data = await stream.receive_some(deadline=deadline)
            except (NetworkError, TimeoutError):
                return None
            if not data:
                return None
            try:
                parser.feed(data)
            except ProtocolError as exc:
                await self._send_error(connection, exc.status_hint, str(exc))
                return None

    async def _handle(self, connection: _Connection, head: RequestHead) -> bool:
        """Answer one request; True when the connection may serve another."""
        request = Request(head, connection)
        head_only = head.method == "HEAD"
        try:
            result = await self._call_handler(request)
        except ProtocolError as exc:  # bad body framing, body too large, invalid JSON
            await self._send_error(connection, exc.status_hint, str(exc), head_only=head_only)
            return False
        except (NetworkError, TimeoutError):
            return False
        except Exception:
            logger.exception("handler for %s %s raised", request.method, request.path)
            await self._send_error(connection, 500, "internal server error", head_only=head_only)
            return False
        connection.requests_served += 1
        self.stats["requests_served"] += 1
        try:
            if isinstance(result, Response):
                keep_alive = await self._send_response(connection, request, result, head.keep_alive)
            else:
                writer = ResponseWriter(connection, request, head.keep_alive)
                try:
                    await result.send(writer)
                except (NetworkError, TimeoutError):
                    return False
                except Exception:
                    logger.exception("streaming response for %s %s failed", request.method, request.path)
                    if not writer.head_sent:
                        await self._send_error(connection, 500, "internal server error", head_only=head_only)
                    return False
                keep_alive = writer.keep_alive
        except (NetworkError, TimeoutError):
            return False
        if not keep_alive:
            return False
        if request.body_consumed:
            return True
        return await self._finish_body(connection, request)

    def _may_keep_alive(self, request: Request, *, streaming: bool = False) -> bool:
        """The server's side of keep-alive, asked when a response's head is framed.

        No when the server is closing, the request asked to upgrade, or the rest of its body
        cannot be drained cheaply (unknown length, more than ``MAX_DRAIN_BYTES``, or a client
        still waiting for ``100 Continue``, which may never send it). A plain response first drops
        the body bytes already read; a streaming one may still read the body, so it does not.
        """
        if self._closing or request._upgrade:
            return False
        if request._reading_done:
            return True
        if not request._continue_sent:  # the client may never send the body it announced
            return False
        if streaming:
            if request._connection.parser.body_complete():
                return True  # the rest of the body is in memory: draining it later cannot wait
        else:
            try:
                if request._drain_parsed():
                    return True
            except ProtocolError:
                return False
        length = request._content_length
        return length is not None and length <= MAX_DRAIN_BYTES

    async def _call_handler(self, request: Request) -> Any:
        if not self._has_routes:
            return _seed_response(request)
        try:
            handler, params = self.router.match(request.method, request.path)
        except NotFound:
            return Response.json({"error": "not found", "status": 404, "path": request.path}, 404)
        except MethodNotAllowed as exc:
            allow = ", ".join(exc.allowed)
            body = {"error": f"method {request.method} not allowed", "status": 405, "allow": exc.allowed}
            return Response.json(body, 405, {"Allow": allow})
        request.path_params = params
        result = handler(request)
        if inspect.isawaitable(result):
            result = await result
        if type(result) is Response:
            return result
        return _to_response(result, handler)

    async def _send_response(
        self, connection: _Connection, request: Request, response: Response, request_keep_alive: bool
    ) -> bool:
        """Send a plain response; True when the connection may serve another request."""
        body = response.body
        framing = frame_response(
            response.status_code,
            response.headers,
            body_length=len(body),
            method=request.method,
            http_version=request.http_version,
            request_keep_alive=request_keep_alive,
            server_keep_alive=self._may_keep_alive(request),
        )
        head = encode_response_head(
            response.status_code,
            framing.headers,
            b"%bDate: %b\r\n%b" % (_SERVER_HEADER, http_date(), framing.header_lines),
        )
        stream = connection.stream
        if not framing.send_body or not body:
            await stream.send_all(head, timeout=self.write_timeout)
        elif len(body) <= COPY_BODY_BYTES:
            await stream.send_all(head + body, timeout=self.write_timeout)
        else:  # no copy of a large body: the head goes first, on its own
            await stream.send_all(head, timeout=self.write_timeout)
            await stream.send_all(body, timeout=self.write_timeout)
        return framing.keep_alive

    async def _finish_body(self, connection: _Connection, request: Request) -> bool:
        """Read and drop what the handler left of the request body; False to close instead."""
        if request.body_consumed:
            return True
        dropped = 0
        try:
            async for chunk in request.iter_body():
                dropped += len(chunk)
                if dropped > MAX_DRAIN_BYTES:
                    return False
        except (HttpError, OSError):
            return False
        return True

    async def _send_error(
        self, connection: _Connection, status: int, message: str, *, head_only: bool = False
    ) -> None:
        """Answer ``status`` with a JSON error body (none for HEAD), then close with lingering."""
        body = orjson.dumps({"error": message, "status": status})
        framing = frame_response(
            status,
            _ERROR_HEADERS,
            body_length=len(body),
            method="HEAD" if head_only else "GET",
            server_keep_alive=False,
        )
        head = encode_response_head(
            status, framing.headers, b"%bDate: %b\r\n%b" % (_SERVER_HEADER, http_date(), framing.header_lines)
        )
        try:
            await connection.stream.send_all(
                head + body if framing.send_body else head, timeout=self.write_timeout
            )
        except (NetworkError, TimeoutError):
            return
        await self._linger(connection)

    async def _linger(self, connection: _Connection) -> None:
        """Lingering close: stop sending, then read and drop what the client still sends.

        A client that writes its whole request (a large body we refused with 413, say) before
        reading would otherwise get a reset, which destroys our answer in flight.
        """
        stream = connection.stream
        try:
            stream.sock.shutdown(_socket.SHUT_WR)
        except OSError:
            return
        deadline = monotonic() + LINGERING_TIME
        discarded = 0
        while discarded < LINGERING_MAX_BYTES and not self._closing:
            timeout = min(LINGERING_TIMEOUT, deadline - monotonic())
            if timeout <= 0:
                return
            try:
                data = await stream.receive_some(timeout=timeout)
            except (NetworkError, TimeoutError):
                return
            if not data:
                return
            discarded += len(data)


_ERROR_HEADERS = Headers({"Content-Type": "application/json"})


def _check_port(port: object) -> None:
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"HttpServer port must be an int within 0-65535, not {port!r}")
    if not 0 <= port <= 65535:
        raise ValueError(f"HttpServer port must be within 0-65535 (0: any free port), not {port}")


def _check_count(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"HttpServer {name} must be an int, not {value!r}")
    if value < low:
        raise ValueError(f"HttpServer {name} must be at least {low}, not {value}")


def _check_seconds(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"HttpServer {name} must be a number of seconds, not {value!r}")
    if not value >= 0:  # also NaN
        raise ValueError(f"HttpServer {name} must be >= 0 seconds, not {value}")


def _to_response(result: Any, handler: object = None) -> Any:
    if isinstance(result, Response):
        return result
    if inspect.iscoroutine(result):
        result.close()  # never awaited: close it so Python does not warn a second time
        name = getattr(handler, "__qualname__", None) or repr(handler)
        raise TypeError(
            f"handler {name} returned a coroutine ({result.__qualname__}) that was never awaited, "
            "not a response: add the missing 'await' (return await ...)"
        )
    if result is None:
        return Response(b"", 204)
    if isinstance(result, (bytes, str)):
        return Response(result)
    if isinstance(result, (dict, list)):
        return Response.json(result)
    if hasattr(result, "send"):
        return result  # a streaming response
    raise TypeError(f"a handler returned {type(result).__name__}, not a response")


def _seed_response(request: Request) -> Response:
    target = request.raw_path.decode("latin-1")
    if request.query_string:
        target += "?" + request.query_string
    line = f"{request.method} {target} HTTP/{request.http_version}"
    return Response(f"Hello, world!\nRequest: {line}", content_type="text/plain")
