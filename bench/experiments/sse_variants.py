"""What an SSE event costs the flowno-io server, piece by piece, with the public API only.

Serves three variants of the bench's ``/sse`` route and measures the server's CPU µs per event
with the bench SSE client (100 streams), interleaved, 3 rounds:

* ``/sse``: the bench route (the producer yields ``str``; each becomes a ``ServerSentEvent``).
* ``/sse_bytes``: the producer yields each event already encoded (no ``ServerSentEvent``).
* ``/sse_batch10``: the producer yields ten encoded events at a time (one write per ten events):
  what coalescing the events a producer makes without waiting would save.

Run: ``.venv/bin/python bench/experiments/sse_variants.py`` (about 40 s).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(BENCH), str(BENCH / "apps")]

from _payloads import event_data  # noqa: E402
from _procs import LOAD_CPU, SERVER_CPU, ProcessRegistry, cpu_seconds, free_port, pinned, wait_for_port  # noqa: E402

PATHS = ["/sse", "/sse_bytes", "/sse_batch10"]


def serve(port: int) -> None:
    """The bench app plus the two variants."""
    from flowno import EventLoop
    from flowno_io_app import build_server

    from flowno_io import EventSourceResponse, Request

    server = build_server("127.0.0.1", port)

    def encoded(index: int) -> bytes:
        return b"data: " + event_data(index).encode() + b"\n\n"

    @server.route("/sse_bytes", methods=["GET"])
    def sse_bytes(request: Request) -> EventSourceResponse:
        count = int(request.query_params.get("n", 1000))

        async def events() -> AsyncIterator[bytes]:
            for index in range(count):
                yield encoded(index)

        return EventSourceResponse(events())

    @server.route("/sse_batch10", methods=["GET"])
    def sse_batch(request: Request) -> EventSourceResponse:
        count = int(request.query_params.get("n", 1000))

        async def events() -> AsyncIterator[bytes]:
            for first in range(0, count, 10):
                yield b"".join(encoded(index) for index in range(first, min(count, first + 10)))

        return EventSourceResponse(events())

    EventLoop().run_until_complete(server.serve(), join=True)


def measure(clients: int, seconds: float) -> None:
    """Run the variants interleaved and print the medians."""
    results: dict[str, list[tuple[float, float]]] = {path: [] for path in PATHS}
    with ProcessRegistry(Path("/tmp/flowno-bench-logs/experiments")) as registry:
        port = free_port()
        server = registry.start(
            "sse-variants", pinned(SERVER_CPU, [sys.executable, __file__, "--serve", str(port)])
        )
        wait_for_port(server, port)
        for _ in range(3):
            for path in PATHS:
                before = cpu_seconds(server.pid)
                argv = [sys.executable, str(BENCH / "sse_client.py"), "--port", str(port), "--path", path]
                argv += ["--clients", str(clients), "--duration", str(seconds)]
                done = subprocess.run(pinned(LOAD_CPU, argv), capture_output=True, text=True, check=True)
                result = json.loads(done.stdout)
                cpu_us = (cpu_seconds(server.pid) - before) * 1e6 / result["events"]
                results[path].append((cpu_us, result["events"] / result["seconds"]))
    for path, samples in results.items():
        cpu = statistics.median(sample[0] for sample in samples)
        rate = statistics.median(sample[1] for sample in samples)
        print(f"{path:14} {cpu:6.2f} CPU µs/event   {rate:10,.0f} events/s")


def main() -> None:
    """``--serve PORT`` runs the server; otherwise measure."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--serve", type=int)
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
    else:
        measure(args.clients, args.seconds)


if __name__ == "__main__":
    main()
