"""What N idle event streams cost a flowno-io server process per second, between events.

Starts ``bench/apps/flowno_io_ceiling_app.py`` (one process, a tick to every stream each
``--tick-interval`` s, 5 by default, at multiples of it on the wall clock), opens ``--streams``
``GET /ticks`` streams from a child process, spread over ``--open-over`` seconds (as a ramp
does), which reads their heads and then holds them without reading. It waits ``--settle`` seconds
(every stream past its first heartbeat due time: the monitor's heap then has entries due at
spread-out times, re-scheduled lazily since the ticks keep the streams from ever needing one),
then reads the server's CPU time (``/proc/<pid>/task/*/schedstat``) in windows between ticks
(from 0.7 s after a tick to 0.3 s before the next), ``--windows`` of them. What that counts is
the stream monitor's timer wake-ups and what each costs; ``--strace`` counts the server's
syscalls over the whole run (``epoll_ctl`` per wake; the ticks' sends too).
``--tick-interval 3600``: no ticks, so every stream sends a heartbeat each 15 s (at spread-out
times, the streams having opened over 15 s), and the windows are consecutive 4 s periods; that
counts the heartbeats' sends too.

``--src`` lists library trees (``packages/flowno-io/src`` of worktrees or exports) to compare in
one session, interleaved: each round measures every tree once, in order::

    .venv/bin/python bench/experiments/monitor_idle.py --streams 10000 --rounds 3 \\
        --src /tmp/base/packages/flowno-io/src packages/flowno-io/src
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(BENCH)]

from _procs import SERVER_CPU, free_port, raise_fd_limit  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """CPU seconds of every thread of ``pid``, to the nanosecond (``schedstat``: the tick-sampled
    ``/proc/<pid>/stat`` is too coarse for a few ms per second)."""
    return (
        sum(int(stat.read_text().split()[0]) for stat in Path(f"/proc/{pid}/task").glob("*/schedstat")) / 1e9
    )


HOLDER = r"""
import socket, sys, time
port, count = int(sys.argv[1]), int(sys.argv[2])
request = f"GET /ticks HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
socks = []
spread = float(sys.argv[3])
begin = time.monotonic()
for start in range(0, count, 100):
    time.sleep(max(0.0, begin + spread * start / count - time.monotonic()))
    batch = []
    for _ in range(min(100, count - start)):
        sock = socket.create_connection(("127.0.0.1", port))
        sock.sendall(request)
        batch.append(sock)
    for sock in batch:
        sock.settimeout(30)
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            if not chunk:
                raise SystemExit("closed")
            head += chunk
    socks.extend(batch)
print("ready", len(socks), flush=True)
sys.stdin.read()
"""


def measure(
    src: str,
    streams: int,
    open_over: float,
    settle: float,
    windows: int,
    strace: bool,
    tick_interval: float,
) -> tuple[float, str]:
    """Server CPU ms per second between ticks with ``streams`` streams, and the strace summary (or "")."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=f"{Path(src).resolve()}:{BENCH / 'apps'}")
    server = subprocess.Popen(
        [
            "taskset",
            "-c",
            str(SERVER_CPU),
            sys.executable,
            str(BENCH / "apps" / "flowno_io_ceiling_app.py"),
            "--port",
            str(port),
            "--tick-interval",
            str(tick_interval),
        ],
        env=env,
    )
    holder = None
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        holder = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(port), str(streams), str(open_over)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert holder.stdout is not None
        line = holder.stdout.readline()
        if not line.startswith("ready"):
            raise RuntimeError(f"holder: {line!r}")
        time.sleep(settle)
        tracer = None
        if strace:
            tracer = subprocess.Popen(
                ["strace", "-c", "-f", "-p", str(server.pid)], stderr=subprocess.PIPE, text=True
            )
        used = seconds = 0.0
        for _ in range(windows):
            if tick_interval > 60:  # no tick during the run: consecutive 4 s windows
                start = time.time()
                stop = start + 4.0
            else:
                next_tick = (time.time() // tick_interval + 1) * tick_interval
                start, stop = next_tick + 0.7, next_tick + tick_interval - 0.3
            time.sleep(max(0.0, start - time.time()))
            before = cpu_seconds(server.pid)
            time.sleep(stop - time.time())
            used += cpu_seconds(server.pid) - before
            seconds += stop - start
        summary = ""
        if tracer is not None:
            tracer.send_signal(2)
            summary = tracer.communicate()[1]
        return used / seconds * 1000, summary
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--open-over", type=float, default=15.0)
    parser.add_argument("--settle", type=float, default=16.0)
    parser.add_argument("--tick-interval", type=float, default=5.0)
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--strace", action="store_true")
    parser.add_argument("--src", nargs="+", default=[str(BENCH.parent / "packages" / "flowno-io" / "src")])
    args = parser.parse_args()
    raise_fd_limit(2 * args.streams + 1024)
    results: dict[str, list[float]] = {src: [] for src in args.src}
    for round_number in range(args.rounds):
        for src in args.src:
            ms, summary = measure(
                src, args.streams, args.open_over, args.settle, args.windows, args.strace, args.tick_interval
            )
            results[src].append(ms)
            print(f"round {round_number + 1} {src}: {ms:.1f} ms CPU per s", flush=True)
            for row in summary.splitlines():
                if row.strip() and not row.startswith(("strace:", "-")):
                    print("   ", row.strip(), flush=True)
    for src, values in results.items():
        print(f"{src}: median {statistics.median(values):.1f} ms/s over {values}")


if __name__ == "__main__":
    main()
