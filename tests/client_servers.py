"""Servers the HttpClient tests talk to: code we did not write (stdlib ``http.server``) in a thread,
and scripted raw-socket servers for byte-exact misbehaviour. All bind 127.0.0.1 port 0."""

from __future__ import annotations

import gzip
import json
import socket
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

Route = Callable[["Handler"], None]


class Handler(BaseHTTPRequestHandler):
    """Dispatches every method to ``server.routes[path]``; helpers write common response shapes."""

    protocol_version = "HTTP/1.1"
    timeout = 10
    server: StdlibServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    # -- dispatch ---------------------------------------------------------------------------

    def _dispatch(self) -> None:
        self.server.requests += 1
        path = urlsplit(self.path).path
        route = self.server.routes.get(path)
        if route is None:
            for prefix, candidate in self.server.prefix_routes.items():
                if path.startswith(prefix):
                    route = candidate
                    break
        if route is None:
            self.send_body(b"not found", status=404, content_type="text/plain")
            return
        try:
            route(self)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = do_QUERY = _dispatch

    # -- request ----------------------------------------------------------------------------

    @property
    def query(self) -> dict[str, str]:
        return {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}

    def read_body(self) -> bytes:
        """The request body, Content-Length or chunked."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length)

    # -- responses --------------------------------------------------------------------------

    def send_body(
        self,
        body: bytes,
        *,
        status: int = 200,
        content_type: str = "application/octet-stream",
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def send_json(self, value: Any, *, status: int = 200, headers: Iterable[tuple[str, str]] = ()) -> None:
        self.send_body(
            json.dumps(value).encode(), status=status, content_type="application/json", headers=headers
        )

    def start_chunked(
        self, content_type: str, *, status: int = 200, headers: Iterable[tuple[str, str]] = ()
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.flush()

    def send_chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()

    def end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def send_chunked(
        self,
        pieces: Iterable[bytes],
        content_type: str,
        *,
        delay: float = 0.0,
        headers: Iterable[tuple[str, str]] = (),
    ) -> None:
        self.start_chunked(content_type, headers=headers)
        for piece in pieces:
            self.send_chunk(piece)
            if delay:
                time.sleep(delay)
        self.end_chunked()


def _echo(handler: Handler) -> None:
    body = handler.read_body()
    handler.send_json(
        {
            "method": handler.command,
            "path": handler.path,
            "headers": {name.lower(): value for name, value in handler.headers.items()},
            "body": body.decode("latin-1"),
        }
    )


def _status(handler: Handler) -> None:
    code = int(handler.path.rsplit("/", 1)[1].split("?")[0])
    handler.read_body()
    handler.send_json({"status": code}, status=code)


def _gzip(handler: Handler) -> None:
    body = gzip.compress(json.dumps({"compressed": "gzip"}).encode())
    handler.send_body(body, content_type="application/json", headers=[("Content-Encoding", "gzip")])


def _deflate(handler: Handler) -> None:
    body = zlib.compress(json.dumps({"compressed": "deflate"}).encode())
    handler.send_body(body, content_type="application/json", headers=[("Content-Encoding", "deflate")])


def _stream_json(handler: Handler) -> None:
    # httpbin's /stream/N: chunked application/json, one object per line.
    count = int(handler.path.rsplit("/", 1)[1])
    url = f"http://{handler.headers['Host']}{handler.path}"
    pieces = [json.dumps({"id": i, "url": url}).encode() + b"\n" for i in range(count)]
    handler.send_chunked(pieces, "application/json")


class StdlibServer(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` on 127.0.0.1:0 that counts connections and takes per-test routes."""

    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.connections = 0
        self.requests = 0
        self.routes: dict[str, Route] = {
            "/echo": _echo,
            "/gzip": _gzip,
            "/deflate": _deflate,
        }
        self.prefix_routes: dict[str, Route] = {"/status/": _status, "/stream/": _stream_json}
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._thread = threading.Thread(
            target=self.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def route(self, path: str) -> Callable[[Route], Route]:
        def register(function: Route) -> Route:
            self.routes[path] = function
            return function

        return register

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, address = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        with self._lock:
            self.connections += 1
            self._sockets.add(sock)
        return sock, address

    def shutdown_request(self, request: Any) -> None:
        with self._lock:
            self._sockets.discard(request)
        super().shutdown_request(request)

    def start(self) -> StdlibServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self.server_close()
        self._thread.join(5)


class RawServer:
    """Accepts on 127.0.0.1:0 and runs ``script(conn, index)`` per connection in a thread.

    ``index`` counts connections from 0. The connection is closed when the script returns.
    """

    def __init__(self, script: Callable[[socket.socket, int], None], *, backlog: int = 16) -> None:
        self.script = script
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(backlog)
        self.listener.settimeout(0.05)
        self.connections = 0
        #: Connections whose script returned and that the server then closed.
        self.finished = 0
        self.errors: list[BaseException] = []
        #: Set when the test ends: scripts that hold a connection open wait on it.
        self.stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accepted: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> RawServer:
        self._thread.start()
        return self

    def _accept_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except (TimeoutError, OSError):
                continue
            conn.settimeout(10)
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            index = self.connections
            self.connections += 1
            self._accepted.append(conn)
            thread = threading.Thread(target=self._run, args=(conn, index), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _run(self, conn: socket.socket, index: int) -> None:
        try:
            self.script(conn, index)
        except (OSError, TimeoutError):
            pass
        except BaseException as exc:  # reported by the test through .errors
            self.errors.append(exc)
        finally:
            conn.close()
            self.finished += 1

    def stop(self) -> None:
        self.stopping.set()
        self._thread.join(5)
        for conn in self._accepted:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join(5)
        self.listener.close()


def read_request(conn: socket.socket) -> bytes:
    """One request (head + Content-Length body) from ``conn``; ``b""`` if the client closed first."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return b""
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head + b"\r\n\r\n" + body


def wait_for_close(conn: socket.socket) -> None:
    """Read and drop until the client closes (or the server stops and shuts the socket down)."""
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass


def response_bytes(body: bytes = b"ok", *, status: str = "200 OK", headers: Iterable[str] = ()) -> bytes:
    """A Content-Length-framed response."""
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def sse_chunked_pieces(payload: bytes, cuts: Iterable[int]) -> Iterator[bytes]:
    """``payload`` cut at the given offsets (sorted, deduplicated, within bounds)."""
    start = 0
    for cut in sorted({c for c in cuts if 0 < c < len(payload)}):
        yield payload[start:cut]
        start = cut
    yield payload[start:]
