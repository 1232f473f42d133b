"""A raw-socket Server-Sent Events load client: counts events (``\\n\\n`` terminators) per second.

Keeps ``--clients`` streams open against ``GET <path>?n=<events>`` (each request says
``Connection: close``, so a stream ends when the server closes it) and opens a new stream each
time one ends, until ``--duration`` seconds have passed; then it prints one JSON line::

    {"events": ..., "seconds": ..., "streams": ..., "short_streams": ..., "cpu_seconds": ...}

``short_streams`` counts streams that ended with fewer than ``n`` events (a server bug, not load).
It counts ``\\n\\n`` in the raw bytes: every bench server sends each event as ``data: ...\\n\\n`` in
its own chunk, and neither the HTTP head (``\\r\\n\\r\\n``) nor chunk framing contains ``\\n\\n``.
The harness runs it pinned to the load CPU; one ``epoll`` loop, no asyncio, so its own cost
stays small (its CPU time is reported to show it was not the bottleneck).
"""

from __future__ import annotations

import argparse
import errno
import json
import resource
import selectors
import socket
import time


class _Stream:
    __slots__ = ("events", "last_newline", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.events = 0
        self.last_newline = False


def count_terminators(data: bytes, last_newline: bool) -> tuple[int, bool]:
    """Event terminators in ``data``, given whether the previous piece ended with ``\\n``.

    Returns:
        (terminators, whether ``data`` ends with ``\\n``).

    >>> count_terminators(b"data: 1\\n\\ndata: 2\\n", False)
    (1, True)
    >>> count_terminators(b"\\n", True)
    (1, True)
    """
    if not data:
        return 0, last_newline
    found = data.count(b"\n\n")
    if last_newline and data[0] == 0x0A:
        found += 1
    return found, data[-1] == 0x0A


def run(port: int, path: str, clients: int, events: int, duration: float) -> dict[str, float]:
    """Keep ``clients`` streams busy for ``duration`` seconds; return the counts."""
    request = (
        f"GET {path}?n={events} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Accept: text/event-stream\r\nConnection: close\r\n\r\n"
    ).encode()
    selector = selectors.DefaultSelector()
    total_events = 0
    streams_done = 0
    short_streams = 0
    open_streams: set[_Stream] = set()

    def open_one() -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.connect(("127.0.0.1", port))  # loopback: immediate
        sock.sendall(request)
        sock.setblocking(False)
        stream = _Stream(sock)
        open_streams.add(stream)
        selector.register(sock, selectors.EVENT_READ, stream)

    def close_one(stream: _Stream) -> None:
        selector.unregister(stream.sock)
        stream.sock.close()
        open_streams.discard(stream)

    cpu_start = resource.getrusage(resource.RUSAGE_SELF)
    start = time.monotonic()
    deadline = start + duration
    for _ in range(clients):
        open_one()
    now = start
    while now < deadline:
        for key, _ in selector.select(timeout=max(0.0, deadline - now)):
            stream = key.data
            try:
                data = stream.sock.recv(262_144)
            except BlockingIOError:
                continue
            except OSError as exc:
                if exc.errno not in (errno.ECONNRESET, errno.EPIPE):
                    raise
                data = b""
            if data:
                found, stream.last_newline = count_terminators(data, stream.last_newline)
                stream.events += found
                total_events += found
                continue
            streams_done += 1
            if stream.events < events:
                short_streams += 1
            close_one(stream)
            if time.monotonic() < deadline:
                open_one()
        now = time.monotonic()
    elapsed = time.monotonic() - start
    cpu_end = resource.getrusage(resource.RUSAGE_SELF)
    for stream in list(open_streams):
        close_one(stream)
    selector.close()
    cpu = (cpu_end.ru_utime + cpu_end.ru_stime) - (cpu_start.ru_utime + cpu_start.ru_stime)
    return {
        "events": total_events,
        "seconds": elapsed,
        "streams": streams_done,
        "short_streams": short_streams,
        "cpu_seconds": cpu,
    }


def main() -> None:
    """Parse the arguments, run, print the JSON result."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--path", default="/sse")
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--events", type=int, default=1000, help="events per stream")
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    print(json.dumps(run(args.port, args.path, args.clients, args.events, args.duration)), flush=True)


if __name__ == "__main__":
    main()
