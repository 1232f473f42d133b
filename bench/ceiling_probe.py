"""A lean probe of the ceiling app: server RSS per live stream and tick latency, without the orchestrator.

``make ceiling`` drives the streams with the project's own load generator (``ceiling_client.py``),
whose per-event work (an HTTP client, an SSE decoder, stats) shares the 2 cores with the server.
This probe holds the same ``GET /ticks`` streams on raw non-blocking sockets read with one
``epoll``, so what it measures is the server's side: RSS growth per stream and how late each tick
arrives (``time.time()`` in the tick → at the probe's read), split into the server's own fan-out
time (``/health``'s ``publish_ms``) and the rest. Used to find where the per-stream memory and the
tick latency come from::

    python bench/ceiling_probe.py --streams 19000 --ticks 3          # starts the flowno_io app
    python bench/ceiling_probe.py --streams 5000 --system aiohttp

Prints one JSON object. Loopback only; each probe process holds at most ~19,000 sockets
(``--sources`` spreads them over 127.0.0.x source addresses).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import select
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR), str(BENCH_DIR / "apps")]

from _ceiling_payloads import TICK_INTERVAL, raise_fd_limit, tick_id  # noqa: E402
from _procs import cpu_seconds, free_port, rss_kib  # noqa: E402

APPS = {
    "flowno_io": BENCH_DIR / "apps" / "flowno_io_ceiling_app.py",
    "aiohttp": BENCH_DIR / "apps" / "aiohttp_ceiling_app.py",
}
#: Connections started before waiting for their response heads (under the listen backlog).
WAVE = 500
#: Linux's socket option (no name in Python 3.11): the source address's port is chosen at connect.
IP_BIND_ADDRESS_NO_PORT = 24
#: Seconds between polls when nothing is ready (``ceiling_client.POLL_EVERY``).
POLL_EVERY = 0.002
_TICK = re.compile(rb'id: (\d+)\ndata: \{"t": ([0-9.]+)\}')



def _recv_now(sock: socket.socket) -> bytes | None:
    """What ``sock`` has now (``b""``: closed or reset), ``None`` when nothing is there."""
    try:
        return sock.recv(65536)
    except BlockingIOError:
        return None
    except OSError:
        return b""

def _health(port: int) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=10) as response:
        return json.loads(response.read())  # type: ignore[no-any-return]


def open_streams(
    port: int, count: int, sources: list[str], path: str = "/ticks"
) -> tuple[list[socket.socket], int]:
    """Open ``count`` ``path`` streams a wave at a time; returns (sockets past their head, failures)."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: text/event-stream\r\n\r\n".encode()
    streams: list[socket.socket] = []
    failed = 0
    poller = select.epoll()
    while len(streams) + failed < count:
        wave: dict[int, socket.socket] = {}
        for _ in range(min(WAVE, count - len(streams) - failed)):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)  # port chosen at connect
                sock.bind((sources[(len(streams) + len(wave)) % len(sources)], 0))
                sock.connect(("127.0.0.1", port))
                sock.sendall(request)
            except OSError:
                sock.close()
                failed += 1
                continue
            sock.setblocking(False)
            wave[sock.fileno()] = sock
            poller.register(sock.fileno(), select.EPOLLIN)
        heads: dict[int, bytes] = {}
        deadline = time.monotonic() + 60
        while len(heads) < len(wave) and time.monotonic() < deadline:
            for fd, _ in poller.poll(1.0):
                data = _recv_now(wave[fd])
                if data is None:
                    continue
                heads[fd] = heads.get(fd, b"") + data
                if b"\r\n\r\n" in heads[fd] or not data:
                    poller.unregister(fd)
                    if not data:
                        heads[fd] = b"closed"
        for fd, sock in wave.items():
            if heads.get(fd, b"").startswith(b"HTTP/1.1 200"):
                streams.append(sock)
            else:
                if fd not in heads:
                    poller.unregister(fd)
                sock.close()
                failed += 1
    poller.close()
    return streams, failed


def read_ticks(streams: list[socket.socket], ticks: int) -> dict[str, Any]:
    """Read every stream for ``ticks`` ticks; each tick's latency (ms) by id, and receipts by id."""
    poller = select.epoll()
    for sock in streams:
        poller.register(sock.fileno(), select.EPOLLIN)
    by_fd = {sock.fileno(): sock for sock in streams}
    first = tick_id(time.time()) + 1
    wanted = set(range(first, first + ticks))
    stop_at = (first + ticks - 1) * TICK_INTERVAL + 3.0
    latency: dict[int, list[float]] = {seq: [] for seq in wanted}
    closed = 0
    while time.time() < stop_at:
        events = poller.poll(0)
        if not events:  # as the generators' shared reader: no wake-up per tick delivered
            time.sleep(POLL_EVERY)
        for fd, _ in events:
            data = _recv_now(by_fd[fd])
            if data is None:
                continue
            now = time.time()
            if not data:
                poller.unregister(fd)
                closed += 1
                continue
            for match in _TICK.finditer(data):
                seq = int(match.group(1))
                if seq in latency:
                    latency[seq].append((now - float(match.group(2))) * 1000)
    poller.close()
    every = sorted(value for values in latency.values() for value in values)

    def at(fraction: float) -> float | None:
        return round(every[min(len(every) - 1, int(fraction * len(every)))], 1) if every else None

    return {
        "ticks": sorted(wanted),
        "lost": sum(len(streams) - len(values) for values in latency.values()),
        "closed": closed,
        "p50_ms": at(0.50),
        "p99_ms": at(0.99),
        "max_ms": round(every[-1], 1) if every else None,
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=5000)
    parser.add_argument("--ticks", type=int, default=2)
    parser.add_argument("--system", choices=sorted(APPS), default="flowno_io")
    parser.add_argument(
        "--sources", default="127.0.0.21,127.0.0.22", help="source addresses, comma-separated"
    )
    parser.add_argument("--port", type=int, default=0, help="probe a server already running on this port")
    parser.add_argument(
        "--server-pid", type=int, default=0, help="with --port: that server's pid (for its RSS and CPU)"
    )
    parser.add_argument(
        "--path",
        default="/ticks",
        help="the stream's path (e.g. /ticker of the stream service, with --ticks 0: memory only)",
    )
    args = parser.parse_args()
    raise_fd_limit(args.streams + 64)
    server = None
    port = args.port
    if not port:
        port = free_port()
        server = subprocess.Popen([sys.executable, str(APPS[args.system]), "--port", str(port)])
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                _health(port)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        time.sleep(0.5)
        pid = server.pid if server is not None else (args.server_pid or None)
        base = rss_kib(pid) if pid else 0
        open_cpu = cpu_seconds(pid) if pid else 0.0
        started = time.monotonic()
        streams, failed = open_streams(port, args.streams, args.sources.split(","), args.path)
        opened_in = time.monotonic() - started
        open_cpu = (cpu_seconds(pid) - open_cpu) if pid else 0.0
        time.sleep(1.0)
        after = rss_kib(pid) if pid else 0
        result: dict[str, Any] = {
            "system": args.system,
            "streams": len(streams),
            "failed": failed,
            "open_s": round(opened_in, 1),
            "server_cpu_us_per_open": round(open_cpu * 1e6 / max(len(streams), 1), 1) if pid else None,
            "server_rss_mib": round(after / 1024, 1),
            "server_kib_per_stream": round((after - base) / max(len(streams), 1), 2) if pid else None,
            "probe_rss_mib": round(rss_kib(os.getpid()) / 1024, 1),
        }
        cpu = cpu_seconds(pid) if pid else 0.0
        window = time.monotonic()
        result.update(read_ticks(streams, args.ticks))
        if pid:  # the server's CPU while it holds the streams and fans the ticks out
            result["server_cpu_s_per_s"] = round((cpu_seconds(pid) - cpu) / (time.monotonic() - window), 3)
        try:
            health = _health(port)
            result["publish_ms"] = health.get("publish_ms")
            result["publish_cpu_ms"] = health.get("publish_cpu_ms")
        except OSError:
            pass
        print(json.dumps(result), flush=True)
        for sock in streams:
            sock.close()
    finally:
        if server is not None:
            server.terminate()
            server.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
