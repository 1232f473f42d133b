"""Helpers for testing code built on flowno-io.

Flowno 0.1.19 keeps one selector for the whole process, so only one flowno ``EventLoop`` may run
in a process at a time. :class:`ServerThread` runs a server on that one loop in a background
thread, for tests that talk to it with blocking clients (raw sockets, ``httpx``, ``http.client``);
tests that use :class:`~flowno_io.HttpClient` run the server on the client's own loop instead.

:func:`memory_stream_pair` gives two connected in-memory streams with the interface of the socket
stream (``receive_some``, ``send_all``, ``aclose``, timeouts), for testing code written against the
seam without sockets.

Example:
    >>> from flowno_io.testing import ServerThread
    >>> import urllib.request
    >>> from flowno_io import HttpServer
    >>> server = HttpServer("127.0.0.1", 0, routes={"/": lambda request: "hi"})
    >>> with ServerThread(server) as url:
    ...     urllib.request.urlopen(url + "/").read()
    b'hi'
"""

from __future__ import annotations

import inspect
import socket
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, TypeVar

import orjson

from .io.flowno_compat import EventLoop
from .io.memory_stream import MemoryStream, memory_stream_pair
from .io.socket_stream import SocketStream
from .protocol.headers import Headers
from .protocol.http11_server import END_OF_MESSAGE, RequestHead, RequestParser, encode_response_head
from .protocol.models import Response
from .server.server import HttpServer

__all__ = ["MemoryStream", "MockRequest", "MockTransport", "ServerThread", "memory_stream_pair", "run"]

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` on a new flowno ``EventLoop`` and return its result."""
    result: T = EventLoop().run_until_complete(coroutine, join=True)
    return result


class ServerThread:
    """Serve ``server`` on a flowno loop in a daemon thread; the context value is its base URL."""

    def __init__(self, server: HttpServer, *, stop_timeout: float = 10.0) -> None:
        self.server = server
        self.stop_timeout = stop_timeout
        self.loop = EventLoop()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="flowno-io-server", daemon=True)

    @property
    def url(self) -> str:
        """``http://host:port`` of the running server."""
        return f"http://{self.server.host}:{self.server.port}"

    def _run(self) -> None:
        try:
            self.loop.run_until_complete(self.server.serve(), join=True)
        except BaseException as exc:  # reported by stop()
            self.error = exc

    def start(self) -> str:
        """Bind, start serving in the background, and return the base URL."""
        self.server.bind()
        self._thread.start()
        return self.url

    def stop(self) -> None:
        """Close the server (in-flight requests finish) and wait for the thread to end.

        Raises:
            RuntimeError: the loop did not stop in time, or ``serve()`` raised.
        """
        if self._thread.is_alive():
            closing = None
            if not self.server.closing:  # (a test may have closed it already)
                closing = self.server.close()
                self.loop.create_task(closing)
            self._thread.join(self.stop_timeout)
            if self._thread.is_alive():
                raise RuntimeError("server thread did not stop in time")
            if closing is not None and inspect.getcoroutinestate(closing) == inspect.CORO_CREATED:
                # The loop ended just before it could run the close: nothing left to close, and
                # closing the coroutine keeps "was never awaited" out of the output.
                closing.close()
        if self.error is not None:
            raise RuntimeError(f"serve() failed: {self.error!r}") from self.error

    def __enter__(self) -> str:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class MockRequest:
    """A request as :class:`MockTransport`'s handler sees it.

    Attributes:
        method: ``"GET"``, ``"POST"``...
        url: the absolute URL (``http://`` + ``Host`` + target; https requests too).
        headers: the request headers (names lower-case).
        body: the whole body, de-chunked.
    """

    __slots__ = ("body", "headers", "method", "url")

    def __init__(self, method: str, url: str, headers: Headers, body: bytes) -> None:
        self.method = method
        self.url = url
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        """The body parsed as JSON."""
        return orjson.loads(self.body)

    def __repr__(self) -> str:
        return f"<MockRequest {self.method} {self.url}>"


class MockTransport:
    """Answer an ``HttpClient``'s requests with ``handler`` instead of the network.

    Each connection the client opens is one end of a socket pair; a thread parses the requests
    arriving on the other end (the library's own request parser) and writes back what
    ``handler(request)`` returns, so the client code under test runs unchanged: pooling, timeouts,
    redirects, cookies, streaming. The handler runs on that thread and returns a
    :class:`~flowno_io.Response` (a 500 with the exception's text when it raises).

    Attributes:
        requests: every :class:`MockRequest` handled, in order.

    Example:
        >>> from flowno_io import HttpClient, Response
        >>> from flowno_io.testing import MockTransport, run
        >>> def handler(request):
        ...     return Response.json({"you sent": request.json()}, status=201)
        >>> async def main():
        ...     async with HttpClient(transport=MockTransport(handler)) as client:
        ...         response = await client.post("https://api.example/items", json={"n": 1})
        ...     return response.status_code, response.decode_json()
        >>> run(main())
        (201, {'you sent': {'n': 1}})
    """

    def __init__(self, handler: Callable[[MockRequest], Response]) -> None:
        self.handler = handler
        self.requests: list[MockRequest] = []

    async def open_stream(self, origin: tuple[str, str, int]) -> SocketStream:
        """A stream whose peer is served by ``handler`` (called by the client's pool)."""
        client_end, server_end = socket.socketpair()
        threading.Thread(target=self._serve, args=(server_end,), name="flowno-io-mock", daemon=True).start()
        return SocketStream(client_end)

    def _serve(self, sock: socket.socket) -> None:
        parser = RequestParser()
        head: RequestHead | None = None
        body: list[bytes] = []
        with sock:
            while data := _receive(sock):
                parser.feed(data)
                while (event := parser.next_event()) is not None:
                    if isinstance(event, RequestHead):
                        head, body = event, []
                    elif event is END_OF_MESSAGE and head is not None:
                        if not self._answer(sock, head, b"".join(body)):
                            return
                    elif isinstance(event, bytes):
                        body.append(event)
                if parser.error is not None:
                    return

    def _answer(self, sock: socket.socket, head: RequestHead, body: bytes) -> bool:
        url = f"http://{head.headers.get('host', 'localhost')}{head.target.decode('latin-1')}"
        request = MockRequest(head.method, url, head.headers, body)
        self.requests.append(request)
        try:
            response = self.handler(request)
        except Exception as exc:  # the test's own bug: shown to the client as a 500
            response = Response(f"MockTransport handler raised {exc!r}", 500)
        headers = response.headers.copy()
        headers.set("Content-Length", str(len(response.body)))
        payload = encode_response_head(response.status_code, headers)
        if head.method != "HEAD":
            payload += response.body
        try:
            sock.sendall(payload)
        except OSError:
            return False
        return head.keep_alive


def _receive(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""
