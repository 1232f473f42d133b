"""What 10,000 idle keep-alive connections cost the flowno-io server per hello request.

Starts ``apps/flowno_io_app.py`` on CPU 0 (optionally with the cyclic GC tuned first: ``--gc``),
then alternates wrk runs (50 connections, CPU 1) without and with ``--idle`` parked connections
held by this process, and prints the server's CPU µs per request for each (CPU time from
``/proc``, which the shared machine's noise moves far less than rates)::

    .venv/bin/python bench/experiments/idle_cost.py --gc default --rounds 3
    .venv/bin/python bench/experiments/idle_cost.py --gc disabled

``--gc``: ``default``; ``disabled`` (``gc.disable()``); ``freeze`` (``gc.freeze()`` each second,
so what survives moves out of the collector's sight).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(BENCH), str(BENCH / "apps")]

from _procs import LOAD_CPU, SERVER_CPU, cpu_seconds, free_port, pinned, raise_fd_limit  # noqa: E402
from _wrk import run_wrk  # noqa: E402
from idle_client import open_idle  # noqa: E402

GC_PRELUDE = {
    "default": "",
    "disabled": "import gc; gc.disable()\n",
    "freeze": (
        "import gc, threading, time\n"
        "def _freeze():\n"
        "    while True:\n"
        "        time.sleep(1.0); gc.freeze()\n"
        "threading.Thread(target=_freeze, daemon=True).start()\n"
    ),
}


def main() -> None:
    """Measure and print."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gc", choices=list(GC_PRELUDE), default="default")
    parser.add_argument("--idle", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=3.0)
    args = parser.parse_args()
    raise_fd_limit()
    port = free_port()
    app = BENCH / "apps" / "flowno_io_app.py"
    code = (
        f"import sys, runpy\nsys.path.insert(0, {str(app.parent)!r})\n{GC_PRELUDE[args.gc]}"
        f"sys.argv = [{str(app)!r}, '--port', '{port}']\nrunpy.run_path({str(app)!r}, run_name='__main__')\n"
    )
    server = subprocess.Popen(pinned(SERVER_CPU, [sys.executable, "-c", code]))
    import os
    import time

    os.sched_setaffinity(0, {LOAD_CPU})
    url = f"http://127.0.0.1:{port}/"
    try:
        for _ in range(200):
            try:
                run_wrk(url, connections=50, duration=1.0)
                break
            except Exception:
                time.sleep(0.1)

        def sample() -> float:
            before = cpu_seconds(server.pid)
            result = run_wrk(url, connections=50, duration=args.duration)
            return (cpu_seconds(server.pid) - before) * 1e6 / max(result.requests, 1)

        without: list[float] = []
        with_idle: list[float] = []
        for _ in range(args.rounds):
            without.append(sample())
            sockets, _failed = open_idle(port, args.idle, 200)
            try:
                with_idle.append(sample())
            finally:
                for sock in sockets:
                    sock.close()
            time.sleep(0.5)
        a, b = statistics.median(without), statistics.median(with_idle)
        print(
            f"gc={args.gc}: {a:.1f} CPU-µs/req without, {b:.1f} with {args.idle:,} idle "
            f"(retained by CPU {a / b * 100:.1f}%); rounds {[round(x, 1) for x in without]} / "
            f"{[round(x, 1) for x in with_idle]}"
        )
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
