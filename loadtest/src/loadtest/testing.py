"""A scripted HTTP server on 127.0.0.1 for testing the load generator (standard library only).

Each connection reads one request head and answers with whatever the script returns for it, then
closes: exact bytes, so a test can send an event stream that skips an id, repeats one, or ends
early, which a well-behaved service never does. It runs in threads of the test process, so the
load generator (one flowno loop per process) can run in the same process or in a subprocess.

Example:
    >>> import urllib.request
    >>> def script(number, head):
    ...     return sse_response([(1, "a"), (2, "b")])
    >>> with ScriptedServer(script) as url:
    ...     print(urllib.request.urlopen(url + "/events").read().decode())
    id: 1
    data: a
    <BLANKLINE>
    id: 2
    data: b
    <BLANKLINE>
    <BLANKLINE>
"""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Callable, Iterable, Sequence
from types import TracebackType

__all__ = ["ScriptedServer", "header_value", "sse_events", "sse_response"]

#: Most bytes of a request head the server reads.
MAX_HEAD_BYTES = 64 * 1024
#: Seconds a connection may take to send its request head.
HEAD_TIMEOUT = 10.0

_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\n"
    b"Connection: close\r\n\r\n"
)

#: ``script(connection number, request head) -> bytes to send (or chunks)``; numbers start at 0.
Script = Callable[[int, bytes], "bytes | Iterable[bytes]"]


def sse_events(events: Sequence[tuple[int | str | None, str]]) -> bytes:
    """``id: ...`` / ``data: ...`` blocks for ``(id, data)`` pairs (``None``: no id line)."""
    parts = []
    for event_id, data in events:
        head = f"id: {event_id}\n" if event_id is not None else ""
        parts.append(f"{head}data: {data}\n\n")
    return "".join(parts).encode()


def sse_response(events: Sequence[tuple[int | str | None, str]] = (), body: bytes = b"") -> bytes:
    """A complete ``text/event-stream`` response, delimited by closing the connection."""
    return _SSE_HEAD + sse_events(events) + body


def header_value(head: bytes, name: str) -> str | None:
    """The value of header ``name`` in a raw request head (case-insensitive), or ``None``."""
    wanted = name.lower().encode()
    for line in head.split(b"\r\n")[1:]:
        key, sep, value = line.partition(b":")
        if sep and key.strip().lower() == wanted:
            return value.strip().decode("latin-1")
    return None


class _Handler(socketserver.BaseRequestHandler):
    server: _Server

    def handle(self) -> None:
        connection: socket.socket = self.request
        connection.settimeout(HEAD_TIMEOUT)
        head = b""
        try:
            while b"\r\n\r\n" not in head and len(head) < MAX_HEAD_BYTES:
                data = connection.recv(65536)
                if not data:
                    return
                head += data
            number = self.server.next_number()
            answer = self.server.script(number, head.partition(b"\r\n\r\n")[0])
            chunks = [answer] if isinstance(answer, bytes) else answer
            for chunk in chunks:
                connection.sendall(chunk)
        except OSError:
            return  # the client went away: its side counts that


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, script: Script) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.script = script
        self._lock = threading.Lock()
        self._count = 0

    def next_number(self) -> int:
        with self._lock:
            number = self._count
            self._count += 1
            return number

    @property
    def connections(self) -> int:
        return self._count


class ScriptedServer:
    """Serve ``script`` on 127.0.0.1 (a free port) in a background thread; the context value is the URL.

    Attributes:
        connections: requests answered so far.
    """

    def __init__(self, script: Script) -> None:
        self._server = _Server(script)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="scripted-server", daemon=True
        )

    @property
    def url(self) -> str:
        """``http://127.0.0.1:port``."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def connections(self) -> int:
        """Requests answered so far."""
        return self._server.connections

    def __enter__(self) -> str:
        self._thread.start()
        return self.url

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()
