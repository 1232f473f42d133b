"""What one small ``send()`` per subscriber costs in a tick's fan-out, and why (issue 20).

One process holds N accepted loopback TCP connections; a reader process (``--reader``) holds the
other ends and reads them from one ``epoll``, as the ceiling bench's generators do. Every
``--every`` seconds the holder sends a ~50-byte tick to each socket in one loop and prints the
loop's wall and CPU time per send (``time.thread_time``), after the connections have been idle
(the ticks of the ceiling app come every 5 s, so the receivers' TCP is back in quick-ack mode).

Variants (``--variant``):

* ``plain``: ``sock.send(data)`` on non-blocking sockets (what the fan-out does);
* ``nodelay``: the same with ``TCP_NODELAY`` on the holder's sockets (the server sets it);
* ``noquickack``: the reader turns ``TCP_QUICKACK`` off after each read (fewer immediate ACKs);
* ``flag``: ``MSG_DONTWAIT`` on blocking sockets, to compare the flag with a non-blocking socket;
* ``batch``: the reader runs under ``SCHED_BATCH`` (its wake-ups do not preempt the sender);
* ``coalesce``: the reader polls its epoll without blocking and sleeps 2 ms when nothing is ready
  (as a NIC coalesces interrupts: no wake-up per packet);
* ``threads``: half the sends from a second thread (``send`` releases the GIL). CPU is the
  process's (both threads) in every variant; the reader coalesces as in ``coalesce``.

Run: ``.venv/bin/python bench/experiments/fanout_cost.py --streams 5000 --rounds 3`` (about
``rounds * every`` seconds). Pin with ``taskset`` to compare one core against two.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import select
import socket
import subprocess
import sys
import threading
import time

TICK = b'id: 1\ndata: {"t": 1700000000.123456}\n\n'


def reader(port: int, streams: int, variant: str) -> None:
    """Connect ``streams`` sockets, then read everything forever (until stdin closes)."""
    noquickack = variant == "noquickack"
    if variant == "batch":
        os.sched_setscheduler(0, os.SCHED_BATCH, os.sched_param(0))
    timeout = 0.0 if variant in ("coalesce", "threads") else -1
    socks = []
    for _ in range(streams):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setblocking(False)
        socks.append(sock)
    poller = select.epoll()
    by_fd = {}
    for sock in socks:
        poller.register(sock.fileno(), select.EPOLLIN)
        by_fd[sock.fileno()] = sock
    poller.register(sys.stdin.fileno(), select.EPOLLIN)
    print("ready", flush=True)
    quickack = socket.TCP_QUICKACK
    while True:
        ready = poller.poll(timeout)
        if not ready and timeout == 0.0:
            time.sleep(0.002)  # like a NIC's interrupt coalescing: no wake-up per packet
        for fd, _ in ready:
            if fd == sys.stdin.fileno():
                return
            sock = by_fd[fd]
            try:
                sock.recv(65536)
            except BlockingIOError:
                continue
            if noquickack:
                sock.setsockopt(socket.IPPROTO_TCP, quickack, 0)


def send_all(socks: list[socket.socket], data: bytes) -> None:
    for sock in socks:
        sock.send(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--streams", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--every", type=float, default=2.0)
    parser.add_argument(
        "--variant",
        default="plain",
        choices=("plain", "nodelay", "noquickack", "flag", "batch", "coalesce", "threads"),
    )
    parser.add_argument("--reader", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if args.reader:
        reader(args.port, args.streams, args.variant)
        return
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    child = subprocess.Popen(
        [
            sys.executable,
            __file__,
            "--reader",
            "--port",
            str(port),
            "--streams",
            str(args.streams),
            "--variant",
            args.variant,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    socks = []
    while len(socks) < args.streams:
        sock, _ = listener.accept()
        if args.variant == "nodelay":
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if args.variant != "flag":
            sock.setblocking(False)
        socks.append(sock)
    assert child.stdout is not None
    child.stdout.readline()
    results = []
    flags = socket.MSG_DONTWAIT if args.variant == "flag" else 0
    for _ in range(args.rounds):
        time.sleep(args.every)
        switches = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw
        wall, cpu = time.perf_counter(), time.process_time()
        if args.variant == "threads":
            half = len(socks) // 2
            helper = threading.Thread(target=send_all, args=(socks[half:], TICK))
            helper.start()
            send_all(socks[:half], TICK)
            helper.join()
        else:
            for sock in socks:
                sock.send(TICK, flags)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        switches = resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw - switches
        results.append(
            {
                "wall_us": round(wall * 1e6 / len(socks), 2),
                "cpu_us": round(cpu * 1e6 / len(socks), 2),
                "preempted": switches,
            }
        )
    assert child.stdin is not None
    child.stdin.close()
    child.wait(10)
    print(
        json.dumps(
            {"variant": args.variant, "streams": args.streams, "load": os.getloadavg()[0], "sends": results}
        )
    )


if __name__ == "__main__":
    main()
