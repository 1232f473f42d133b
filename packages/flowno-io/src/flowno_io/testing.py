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

import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

from .io.flowno_compat import EventLoop
from .io.memory_stream import MemoryStream, memory_stream_pair
from .server.server import HttpServer

__all__ = ["MemoryStream", "ServerThread", "memory_stream_pair", "run"]

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
            self.loop.create_task(self.server.close())
            self._thread.join(self.stop_timeout)
            if self._thread.is_alive():
                raise RuntimeError("server thread did not stop in time")
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
