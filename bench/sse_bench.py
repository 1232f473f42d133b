"""Server-Sent Events benchmark for flowno-io: events/s to 1 and 100 clients, RSS at 1,000 streams.

Run: ``.venv/bin/python bench/sse_bench.py`` (about 20 s; 127.0.0.1 only; it stops by itself).

The server runs in a subprocess pinned to CPU 0 (``--serve``); this process is the client, pinned to
CPU 1, reading raw sockets through one ``epoll`` (far cheaper per byte than the server, so the
server is what is measured). Scenarios:

1. ``stream, 1 client``: one ``EventSourceResponse`` whose producer yields N events of a 100-byte
   payload back to back (each event: its own producer step, SSE encoding, chunk, ``send``).
2. ``stream, 100 clients``: the same, 100 concurrent connections, each with its own producer.
3. ``topic, 100 clients``: one publisher, ``Topic`` fan-out to 100 subscribers (encoded once,
   ``drop_oldest``, 256 buffered); the publisher yields to the loop after each event.
4. ``RSS``: server resident memory before and with 1,000 open idle event streams (each parked
   on a ``Topic`` subscription, heartbeat armed).
"""

from __future__ import annotations

import argparse
import os
import selectors
import socket
import subprocess
import sys
import time
from typing import Any

PAYLOAD = "x" * 100
SERVER_CPU = 0
CLIENT_CPU = 1


# -- the server (subprocess) ----------------------------------------------------------------------


def serve() -> None:
    from flowno import EventLoop, sleep

    from flowno_io import EventSourceResponse, HttpServer, Request, ServerSentEvent, Topic

    event = ServerSentEvent(PAYLOAD, event="tick").encode()
    broadcast: Topic[bytes] = Topic(max_buffer=256)
    idle: Topic[bytes] = Topic()

    def stream(request: Request) -> EventSourceResponse:
        count = int(request.query_params["n"])

        async def events() -> Any:
            for _ in range(count):
                yield event

        return EventSourceResponse(events(), ping_interval=None)

    def subscribe(request: Request) -> EventSourceResponse:
        return EventSourceResponse(broadcast.subscribe(), ping_interval=None)

    def park(request: Request) -> EventSourceResponse:
        async def events() -> Any:
            yield event  # tells the client the stream is open
            async for item in idle.subscribe():
                yield item

        return EventSourceResponse(events())  # heartbeat armed (default 15 s)

    async def publish(request: Request) -> dict[str, int]:
        count = int(request.query_params["n"])
        for _ in range(count):
            broadcast.publish(event)
            await sleep(0)  # the woken subscribers write before the next publish
        broadcast.close()
        return {"published": count}

    server = HttpServer(
        "127.0.0.1",
        0,
        routes={"/stream": stream, "/subscribe": subscribe, "/park": park, "/publish": publish},
        max_connections=5000,
    )
    server.bind()
    print(server.port, flush=True)
    EventLoop().run_until_complete(server.serve(), join=True, wait_for_spawned_tasks=False)


# -- the client -----------------------------------------------------------------------------------


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as file:
        for line in file:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as file:
        fields = file.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def _open(port: int, path: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    sock.setblocking(False)
    return sock


def _read_streams(socks: list[socket.socket], until: bytes, timeout: float = 120.0) -> list[int]:
    """Read every socket until its data ends with ``until``; the byte counts."""
    selector = selectors.DefaultSelector()
    counts = {sock.fileno(): 0 for sock in socks}
    tails = {sock.fileno(): b"" for sock in socks}
    for sock in socks:
        selector.register(sock, selectors.EVENT_READ, sock)
    pending = len(socks)
    deadline = time.monotonic() + timeout
    while pending:
        if time.monotonic() > deadline:
            raise TimeoutError("streams did not finish in time")
        for key, _ in selector.select(1.0):
            sock = key.data
            try:
                data = sock.recv(1 << 20)
            except BlockingIOError:
                continue
            fd = sock.fileno()
            counts[fd] += len(data)
            tail = data[-len(until) :] if len(data) >= len(until) else (tails[fd] + data)[-len(until) :]
            tails[fd] = tail
            if not data or tail == until:
                selector.unregister(sock)
                pending -= 1
    selector.close()
    return [counts[sock.fileno()] for sock in socks]


def _wire_size() -> int:
    from flowno_io import ServerSentEvent

    event = ServerSentEvent(PAYLOAD, event="tick").encode()
    return len(b"%x\r\n" % len(event)) + len(event) + 2


def bench_streams(port: int, pid: int, clients: int, events: int) -> tuple[float, float]:
    """Events/s in total, and server CPU microseconds per event."""
    cpu = _cpu_seconds(pid)
    socks = [_open(port, f"/stream?n={events}") for _ in range(clients)]
    began = time.perf_counter()
    counts = _read_streams(socks, b"0\r\n\r\n")
    elapsed = time.perf_counter() - began
    cpu = _cpu_seconds(pid) - cpu
    for sock in socks:
        sock.close()
    minimum = events * _wire_size()
    assert all(count >= minimum for count in counts), "a stream ended early"
    return clients * events / elapsed, cpu * 1e6 / (clients * events)


def bench_topic(port: int, pid: int, clients: int, events: int) -> tuple[float, float, float]:
    """Delivered events/s, the share of published events delivered, server CPU us per delivery."""
    socks = [_open(port, "/subscribe") for _ in range(clients)]
    time.sleep(0.5)  # every subscription exists before publishing starts
    cpu = _cpu_seconds(pid)
    publisher = _open(port, f"/publish?n={events}")
    began = time.perf_counter()
    counts = _read_streams(socks, b"0\r\n\r\n")
    elapsed = time.perf_counter() - began
    publisher.close()
    for sock in socks:
        sock.close()
    cpu = _cpu_seconds(pid) - cpu
    delivered = sum((count - 150) // _wire_size() for count in counts)  # ~150 bytes of head
    return delivered / elapsed, delivered / (clients * events), cpu * 1e6 / delivered


def bench_rss(port: int, pid: int, connections: int) -> tuple[int, int]:
    time.sleep(0.3)
    before = _rss_kib(pid)
    socks = []
    for _ in range(connections):
        socks.append(_open(port, "/park"))
    selector = selectors.DefaultSelector()
    for sock in socks:
        selector.register(sock, selectors.EVENT_READ, sock)
    opened = 0
    deadline = time.monotonic() + 30
    while opened < connections and time.monotonic() < deadline:
        for key, _ in selector.select(1.0):
            sock = key.data
            if b"data: " in sock.recv(65536):
                selector.unregister(sock)
                opened += 1
    selector.close()
    time.sleep(0.5)
    during = _rss_kib(pid)
    for sock in socks:
        sock.close()
    if opened < connections:
        raise RuntimeError(f"only {opened} of {connections} streams opened")
    return before, during


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--events", type=int, default=200_000, help="events for the 1-client stream")
    parser.add_argument("--events-each", type=int, default=2_000, help="events per client with 100 clients")
    parser.add_argument("--connections", type=int, default=1_000, help="open streams for the RSS scenario")
    args = parser.parse_args()
    if args.serve:
        serve()
        return
    cpus = os.cpu_count() or 1
    server_cmd = [sys.executable, __file__, "--serve"]
    if cpus > 1:
        os.sched_setaffinity(0, {CLIENT_CPU})
    server = subprocess.Popen(
        server_cmd,
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, {SERVER_CPU})) if cpus > 1 else None,
    )
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        bench_streams(port, server.pid, 1, 2_000)  # warm-up
        one, one_cpu = bench_streams(port, server.pid, 1, args.events)
        hundred, hundred_cpu = bench_streams(port, server.pid, 100, args.events_each)
        fan_out, delivered, fan_out_cpu = bench_topic(port, server.pid, 100, args.events_each)
        before, during = bench_rss(port, server.pid, args.connections)
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
    print(f"flowno-io SSE benchmark (server on CPU {SERVER_CPU}, client on CPU {CLIENT_CPU}, 127.0.0.1)")
    rows = [
        ("stream, 1 client", one, one_cpu, ""),
        ("stream, 100 clients", hundred, hundred_cpu, f"{hundred / 100:,.0f} events/s per client"),
        ("topic fan-out, 100 clients", fan_out, fan_out_cpu, f"{delivered:.1%} of published delivered"),
    ]
    for name, rate, cpu, note in rows:
        print(f"  {name:<27}{rate:>10,.0f} events/s  server CPU {cpu:5.1f} us/event  {note}")
    per_stream = (during - before) / args.connections
    print(
        f"  {'RSS':<27}{before / 1024:>6.1f} MiB idle, {during / 1024:.1f} MiB with "
        f"{args.connections:,} open streams ({per_stream:.1f} KiB per stream)"
    )


if __name__ == "__main__":
    main()
