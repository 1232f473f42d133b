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
import logging
import resource
import socket as _socket
import ssl
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from sys import platform as _sys_platform
from time import monotonic
from typing import Any, TypeAlias

from flowno import Event, SocketHandle, spawn

from ..io.clock import get_clock
from ..io.coroutines import resume as _resume
from ..io.flowno_compat import sleep
from ..io.poller import READABLE, Poller
from ..io.socket_stream import accept_connection
from ..io.tls_stream import DEFAULT_HANDSHAKE_TIMEOUT, ServerTlsStream
from ..protocol.http11_server import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_MAX_HEADER_BYTES,
    DEFAULT_MAX_HEADERS,
)
from .connection import Connection, Exchange, ResponseWriter, Worker
from .exchange import Exchanges, _to_response
from .http2 import PREFACE, Http2Limits, detect_preface, serve_http2
from .middleware import (
    ErrorHook,
    Middleware,
    build_chain,
    error_hooks_of,
)
from .observer import ExchangeObserver, split_observers
from .request import Request
from .routing import Router
from .signals import ShutdownSignals
from .streaming import StreamDetached
from .tls import serve_tls

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

#: Seconds ``close()`` (and SIGTERM) gives in-flight requests before shutting their sockets down.
DEFAULT_SHUTDOWN_GRACE = 10.0
#: Seconds ``close()`` waits, after the grace period, for shut-down connections to be released.
FORCE_CLOSE_WAIT = 1.0


#: The HTTP/2 preface's first byte (``P``): a first read starting otherwise is HTTP/1.
_PREFACE_FIRST_BYTE = PREFACE[0]


def _default_max_connections() -> int:
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 10_000
    return max(16, min(10_000, soft - 64))


class HttpServer(Exchanges):
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
        middleware: async callables ``(request, call_next) -> response`` wrapping every exchange,
            outermost first (see :mod:`flowno_io.server.middleware`); more with
            :meth:`add_middleware`.
        ssl_context: serve HTTPS with this server context (see :meth:`use_tls`).
        tls_handshake_timeout: seconds a new connection has to finish its TLS handshake (→ close).
        http2: also serve HTTP/2: by ALPN over TLS, and by prior knowledge on cleartext (a
            connection opening with the HTTP/2 preface); see ``server/http2.py``.
        http2_limits: HTTP/2 limits (concurrent streams, HPACK table, rapid-reset allowance...).

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
        middleware: Iterable[Middleware] = (),
        ssl_context: ssl.SSLContext | None = None,
        tls_handshake_timeout: float = DEFAULT_HANDSHAKE_TIMEOUT,
        http2: bool = True,
        http2_limits: Http2Limits | None = None,
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
        #: The listener has ``TCP_NODELAY``, which accepted sockets inherit (Linux): not set again.
        self._listener_nodelay = False
        self._idle_workers: list[Worker] = []
        self._connections: set[Connection] = set()
        self._parked: dict[int, Connection] = {}
        self._poller: Poller | None = None
        self._accepting = False
        self._closing = False
        self._grace = shutdown_grace
        #: Plain callbacks run when :meth:`close` begins (streaming responses end event streams).
        self._close_callbacks: set[Callable[[], object]] = set()
        self._closed: Event | None = None
        #: Counters for health endpoints and tests.
        self.stats = {"connections_accepted": 0, "requests_served": 0, "workers": 0}
        self._middleware: list[Middleware] = []
        #: The composed middleware chain; None without middleware (the handler is called directly).
        self._chain: Callable[[Request], Awaitable[Any]] | None = None
        #: The observability middleware merged into one observer called by the exchange, or None.
        self._observer: ExchangeObserver | None = None
        #: The observer traces: each request's ``trace`` is made when read and current in its handler.
        self._tracing = False
        self._extra_error_hooks: list[ErrorHook] = []
        #: ``on_error`` hooks of the middleware, then those given to :meth:`add_error_hook`.
        self._error_hooks: list[ErrorHook] = []
        for layer in middleware:
            self.add_middleware(layer)
        self.http2 = http2
        self.http2_limits = http2_limits if http2_limits is not None else Http2Limits()
        self.ssl_context: ssl.SSLContext | None = None
        self.tls_handshake_timeout = tls_handshake_timeout
        #: TLS connections parked with bytes in their TLS object: the driver serves them next.
        self._tls_ready: list[Connection] = []
        if ssl_context is not None:
            self.use_tls(ssl_context)
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

    # -- middleware -------------------------------------------------------------------------

    def add_middleware(self, middleware: Middleware) -> None:
        """Wrap every exchange in ``middleware`` (inside those added before); see ``server/middleware.py``."""
        self._middleware.append(middleware)
        # Metrics, tracing and Server-Timing are observed by the exchange (server/observer.py).
        self._observer, layers = split_observers(self._middleware)
        self._tracing = self._observer is not None and self._observer.tracing
        self._chain = build_chain(layers, self._call_handler, _to_response) if layers else None
        self._error_hooks = error_hooks_of(self._middleware) + self._extra_error_hooks

    def add_error_hook(self, hook: ErrorHook) -> None:
        """Call ``hook(answer)`` for each error the server answers itself (400/413/431/505/500)."""
        self._extra_error_hooks.append(hook)
        self._error_hooks = error_hooks_of(self._middleware) + self._extra_error_hooks

    def enable_metrics(self, path: str = "/metrics", **options: Any) -> Any:
        """Prometheus metrics and ``GET path`` (needs ``flowno-io[metrics]``); see ``server/metrics.py``."""
        from .metrics import enable_metrics

        return enable_metrics(self, path, **options)

    @property
    def middleware(self) -> tuple[Middleware, ...]:
        """The middleware, outermost first."""
        return tuple(self._middleware)

    def use_tls(self, context: ssl.SSLContext) -> None:
        """Serve HTTPS with ``context`` (ALPN ``h2``, ``http/1.1``; ``http/1.1`` alone without
        ``http2``); see ``server/tls.py``."""
        context.set_alpn_protocols(["h2", "http/1.1"] if self.http2 else ["http/1.1"])
        self.ssl_context = context

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
        self._listener_nodelay = _set_nodelay(sock)
        self.port = sock.getsockname()[1]
        return sock

    def use_socket(self, sock: _socket.socket) -> None:
        """Serve on an already bound and listening socket (e.g. inherited from a parent process)."""
        sock.setblocking(False)
        self._listener = sock
        self._listener_nodelay = _set_nodelay(sock)
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
                if events or self._tls_ready:
                    # Ready work: yield to the loop's other tasks without a selector round trip.
                    # (On flowno's own loop a wait also registers the poller with the selector,
                    # which costs O(its connections) in the kernel's nested-epoll check; our
                    # EventLoop keeps that registration, see io/poller.py.)
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
                            pending = self._serve_readable(connection)
                            if pending is not None:
                                await pending
                if self._tls_ready:
                    ready, self._tls_ready = self._tls_ready, []
                    for connection in ready:
                        if connection.parked:
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
                sock, client = accept_connection(listener)
            except BlockingIOError:
                return
            except OSError as exc:
                await self._accept_failed(exc)
                return
            connection = Connection(self, sock, client, nodelay=not self._listener_nodelay)
            self._connections.add(connection)
            self.stats["connections_accepted"] += 1
            if self.ssl_context is not None:
                await self._start(connection, serve_tls(self, connection))
                continue
            if self.http2:
                connection.preface = b""  # its first bytes may be the HTTP/2 preface
            # The request often arrives with the handshake (TCP_DEFER_ACCEPT): serve it now.
            pending = self._serve_readable(connection)
            if pending is not None:
                await pending

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

    async def _park(self, connection: Connection) -> None:
        """Give a connection (between requests) to the driver, with its idle deadline."""
        if not self._park_nowait(connection):
            await get_clock()._start()

    def _park_nowait(self, connection: Connection) -> bool:
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
        connection.deadline = deadline
        timer = connection.timer
        if timer is None:
            timer = connection.timer = get_clock().timer(connection.expire)
        armed = timer.deadline
        # An armed timer fires first at ``armed``, then re-arms (``Connection.expire``); its clock runs.
        running = timer.set_deadline(deadline) if armed is None or deadline < armed else True
        if not connection.parked:
            self._poller.register(connection.fd, READABLE)
            self._parked[connection.fd] = connection
            connection.parked = True
        stream = connection.stream
        if type(stream) is ServerTlsStream and stream.buffered():
            self._tls_ready.append(connection)  # the socket will not say so: serve it next turn
            self._poller.poke()
        return running

    def _unpark(self, connection: Connection) -> None:
        if connection.parked:
            connection.parked = False
            del self._parked[connection.fd]
            if self._poller is not None:
                self._poller.unregister(connection.fd)
        if connection.timer is not None:
            connection.timer.disarm()

    def _drop(self, connection: Connection) -> None:
        """Close a connection for good."""
        if connection.parked or connection.timer is not None:
            self._unpark(connection)
        connection.stream.close()
        # llhttp holds the parser's bound methods (a reference cycle): without it, the parser
        # is freed now rather than by the garbage collector (10 objects per connection).
        connection.parser.release()
        self._connections.discard(connection)
        if not self._accepting and not self._closing:
            self._resume_accepting()

    async def _on_readable(self, connection: Connection) -> None:
        pending = self._serve_readable(connection)
        if pending is not None:
            await pending

    def _serve_readable(self, connection: Connection) -> Coroutine[Any, Any, None] | None:
        """Read what a connection sent and answer it inline as far as nothing has to wait.

        Returns None when done (the connection parked again, or closed), or a coroutine to await
        that goes on from where something had to wait (a worker takes it over if it waits more).
        """
        try:
            data = connection.stream.sock.recv(65536)
        except BlockingIOError:
            if not connection.parked and not self._park_nowait(connection):
                return get_clock()._start()
            return None
        except OSError:
            self._drop(connection)
            return None
        if not data:
            self._drop(connection)
            return None
        preface = connection.preface
        if preface is not None and not preface and data[0] != _PREFACE_FIRST_BYTE:
            connection.preface = preface = None  # not HTTP/2 (no call for the usual first read)
        if preface is not None:
            data = preface + data
            http2 = detect_preface(data)
            if http2 is None:  # part of the preface: wait for the rest (the deadline stays)
                connection.preface = data
                if not connection.parked and not self._park_nowait(connection):
                    return get_clock()._start()
                return None
            connection.preface = None
            if http2:
                return self._start(connection, serve_http2(self, connection, data))
        self._feed(connection, data)
        try:
            step = self._serve_events(connection)
        except Exception:
            logger.exception("unexpected error on a connection")
            self._drop(connection)
            return None
        if type(step) is bool:
            if step and not self._closing:
                if not self._park_nowait(connection):
                    return get_clock()._start()
            else:
                self._drop(connection)
            return None
        return self._start(connection, self._serve_rest(connection, step))

    async def _dispatch(self, job: tuple[Connection, Exchange, Any]) -> None:
        """Hand a suspended exchange to an idle worker, or to a new one."""
        self._unpark(job[0])
        if self._idle_workers:
            worker = self._idle_workers.pop()
            worker.job = job
            worker.wakeup.set()
        else:
            self.stats["workers"] += 1
            await spawn(self._worker(job))

    async def _start(self, connection: Connection, exchange: Exchange) -> None:
        """Run ``exchange`` inline until it first waits, then hand it to a worker.

        Most exchanges finish inline (the whole request was read, the response fit the socket
        buffer); one that finishes keeps its connection, parked, when it says so. One that has to
        wait for something is taken over by a worker task.
        """
        try:
            command = exchange.send(None)
        except StopIteration as stop:
            if stop.value and not self._closing:
                if not self._park_nowait(connection):
                    await get_clock()._start()
            else:
                self._drop(connection)
            return
        except StreamDetached:
            return  # the stream's monitor owns the connection now
        except Exception:
            logger.exception("unexpected error on a connection")
            self._drop(connection)
            return
        await self._dispatch((connection, exchange, command))

    async def _worker(self, job: tuple[Connection, Exchange, Any] | None) -> None:
        worker = Worker()
        while job is not None:
            connection, exchange, command = job
            try:
                keep = await _resume(exchange, command)
            except StreamDetached:
                keep = None  # the stream's monitor owns the connection now
            except Exception:
                logger.exception("unexpected error on a connection")
                keep = False
            if keep is None:
                pass
            elif keep and not self._closing:
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
        connection = Connection(self, sock, client)
        self._connections.add(connection)
        self.stats["connections_accepted"] += 1
        await self._serve_connection(connection)

    # -- one connection ---------------------------------------------------------------------


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


def _set_nodelay(listener: _socket.socket) -> bool:
    """Set ``TCP_NODELAY`` on a listener, for the sockets it accepts to inherit (Linux; checked on
    the listener itself); True when they will have it."""
    if _sys_platform != "linux":
        return False
    try:
        listener.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
        return bool(listener.getsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY))
    except OSError:
        return False  # not TCP (a Unix socket)
