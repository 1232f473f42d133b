"""Candidate fixes for HttpServer, tried by monkeypatching private internals (experiment only).

* ``--patch timer-compaction`` (the library does this itself since commit 942858c):
  ``Timer.disarm`` rebuilds the clock's heap once stale entries outnumber live ones (by 2x +
  1,024). Before, a disarmed timer stayed in the heap until its old deadline (10 s for a new
  connection's header timer) and kept its connection alive through its callback, so memory grew
  with connections/s x 10 s.
* ``--patch driver-poll-first`` (the library does this itself since commit e39d4f4): the driver
  checks its private epoll with ``poll(0)`` before parking on the loop and, when something is
  ready, only yields (``sleep(0)``) instead of having flowno register the epoll descriptor again
  (which costs O(descriptors in it) in the kernel: see ``kernel_costs.py``).
* ``--patch defer-accept``: ``TCP_DEFER_ACCEPT`` on the listener, so a connection is accepted
  with its request already readable (``Connection: close`` load: fewer syscalls per connection).
* ``--patch keep-registered``: flowno's selector keeps an epoll descriptor registered between
  waits (its mask set to 0 and back, O(1)), as a fix of flowno's limit #3 would.

Modes: ``memory`` (short connections: RSS and server CPU µs per connection for each 4 s wrk
segment) and ``idle`` (server CPU µs per keep-alive request without and with 10,000 idle
connections). Compare with ``--patch none``::

    .venv/bin/python bench/experiments/server_patches.py memory --patch none
    .venv/bin/python bench/experiments/server_patches.py memory --patch timer-compaction
    .venv/bin/python bench/experiments/server_patches.py idle --patch none
    .venv/bin/python bench/experiments/server_patches.py idle --patch keep-registered
    .venv/bin/python bench/experiments/server_patches.py memory --patch defer-accept

Written against the library as of this commit: the patches name private attributes and break
when those change. They are evidence for the suggestions in the benchmark notes, not fixes.
"""

from __future__ import annotations

import argparse
import heapq
import select
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(BENCH), str(BENCH / "apps")]

from _procs import (  # noqa: E402
    LOAD_CPU,
    SERVER_CPU,
    ProcessRegistry,
    cpu_seconds,
    free_port,
    pinned,
    raise_fd_limit,
    rss_kib,
    wait_for_port,
)
from _wrk import run_wrk  # noqa: E402


def apply_patch(name: str) -> None:
    """Monkeypatch the library in this (server) process."""
    from flowno import sleep

    from flowno_io.io import clock as _clock
    from flowno_io.server import server as _server

    if name == "timer-compaction":
        original_disarm = _clock.Timer.disarm

        def disarm(self: Any) -> None:
            original_disarm(self)
            clock = self._clock
            heap = clock._heap
            if len(heap) > 2 * clock._armed + 1024:
                live = [
                    entry
                    for entry in heap
                    if entry[2].deadline is not None and entry[1] == entry[2]._entry_seq
                ]
                kept = {id(entry[2]) for entry in live}
                for entry in heap:
                    if id(entry[2]) not in kept:
                        entry[2]._entry_time = None
                heapq.heapify(live)
                clock._heap = live

        _clock.Timer.disarm = disarm  # type: ignore[method-assign]
    elif name == "driver-poll-first":
        original_wait = _server.wait_readable  # type: ignore[attr-defined]

        async def wait_readable(handle: Any) -> None:
            inner = handle.socket
            if isinstance(inner, select.epoll) and inner.poll(0, 1):
                await sleep(0)  # something is ready: let other tasks run, no re-registration
                return
            await original_wait(handle)

        _server.wait_readable = wait_readable  # type: ignore[attr-defined,assignment]
    elif name == "defer-accept":
        original_bind = _server.HttpServer.bind

        def bind(self: Any) -> Any:
            listener = original_bind(self)
            # The kernel completes accept() only once the request's first bytes are in: no park,
            # timer or epoll registration for a connection whose request is not there yet.
            listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 1)
            return listener

        _server.HttpServer.bind = bind  # type: ignore[method-assign]
    elif name == "keep-registered":
        import flowno.core.event_loop.event_loop as flowno_loop

        flowno_loop.sel = _KeepEpollRegistered(flowno_loop.sel)
    elif name != "none":
        raise SystemExit(f"unknown patch {name!r}")


class _KeepEpollRegistered:
    """flowno's selector, except that an epoll descriptor stays registered between waits.

    On unregister its kernel mask becomes 0 (``EPOLL_CTL_MOD``: O(1), no loop check); on the next
    register it becomes ``EPOLLIN`` again. What a flowno fix for its limit #3 would do for every
    descriptor (see docs/flowno-upstream.md).
    """

    def __init__(self, selector: Any) -> None:
        self._selector = selector
        self._dormant: set[Any] = set()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._selector, name)

    def register(self, fileobj: Any, events: int, data: Any = None) -> Any:
        if fileobj in self._dormant:
            self._dormant.discard(fileobj)
            key = self._selector.get_key(fileobj)
            self._selector._selector.modify(key.fd, select.EPOLLIN)
            return self._selector.modify(fileobj, events, data)
        return self._selector.register(fileobj, events, data)

    def unregister(self, fileobj: Any) -> Any:
        if isinstance(fileobj, select.epoll) and not fileobj.closed:
            key = self._selector.get_key(fileobj)
            self._selector._selector.modify(key.fd, 0)
            self._dormant.add(fileobj)
            return key
        return self._selector.unregister(fileobj)


def serve(port: int, patch: str) -> None:
    """The bench app with ``patch`` applied."""
    from flowno import EventLoop
    from flowno_io_app import build_server

    apply_patch(patch)
    EventLoop().run_until_complete(build_server("127.0.0.1", port).serve(), join=True)


def main() -> None:
    """Start the patched server and run the chosen measurement."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=["memory", "idle", "serve"])
    patches = ["none", "timer-compaction", "driver-poll-first", "keep-registered", "defer-accept"]
    parser.add_argument("--patch", default="none", choices=patches)
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.mode == "serve":
        serve(args.port, args.patch)
        return
    raise_fd_limit()
    with ProcessRegistry(Path("/tmp/flowno-bench-logs/experiments")) as registry:
        port = free_port()
        argv = [sys.executable, __file__, "serve", "--patch", args.patch, "--port", str(port)]
        server = registry.start(f"patched-{args.patch}", pinned(SERVER_CPU, argv))
        wait_for_port(server, port)
        url = f"http://127.0.0.1:{port}/"
        if args.mode == "memory":
            total = 0
            for _ in range(8):
                before = cpu_seconds(server.pid)
                result = run_wrk(url, connections=50, duration=4, headers={"Connection": "close"})
                cpu_us = (cpu_seconds(server.pid) - before) * 1e6 / result.requests
                total += result.requests
                print(
                    f"{args.patch}: {total:>9,} connections, RSS {rss_kib(server.pid):>8,} KiB, "
                    f"{cpu_us:.1f} CPU µs/connection",
                    flush=True,
                )
            return
        run_wrk(url, connections=50, duration=1)

        def cpu_per_request() -> float:
            before = cpu_seconds(server.pid)
            result = run_wrk(url, connections=50, duration=3)
            return (cpu_seconds(server.pid) - before) * 1e6 / result.requests

        for _ in range(3):
            without = cpu_per_request()
            holder_argv = [
                sys.executable,
                str(BENCH / "idle_client.py"),
                "--port",
                str(port),
                "--count",
                "10000",
            ]
            holder = registry.start(
                "holder", pinned(LOAD_CPU, holder_argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE
            )
            if holder.popen.stdout is not None:
                holder.popen.stdout.readline()
            time.sleep(0.5)
            with_idle = cpu_per_request()
            registry.stop(holder)
            time.sleep(1.0)
            print(
                f"{args.patch}: {without:.1f} µs/request without, {with_idle:.1f} with 10,000 idle "
                f"(retained by CPU {without / with_idle:.0%})",
                flush=True,
            )


if __name__ == "__main__":
    main()
