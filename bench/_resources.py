"""Scenarios about what connections cost: 10,000 idle keep-alive connections, and memory over
many short connections.

* **Idle**: per round, the server's hello throughput is measured without idle connections, then
  ``idle_client.py`` (CPU 1) opens 10,000 keep-alive connections that each served one request,
  RSS is read again, and the throughput is measured with them parked (A B A B). KiB per idle
  connection = RSS growth / connections, from the first round (a fresh server).
* **Memory**: wrk with ``Connection: close`` in segments until the target number of connections
  is reached, RSS sampled after each segment; growth is counted from the end of the warm-up.
"""

from __future__ import annotations

import json
import select
import statistics
import subprocess
import time
from typing import Any

from _procs import LOAD_CPU, Managed, pinned, rss_kib
from _scenarios import (
    BENCH_DIR,
    OURS,
    STARLETTE,
    Context,
    Sample,
    Server,
    start_server,
    wrk_sample,
)
from _wrk import run_wrk


def _hold_idle(ctx: Context, server: Server, count: int) -> tuple[Managed, int]:
    """Start the idle-connection holder; returns (process, connections it opened)."""
    argv = pinned(
        LOAD_CPU,
        [ctx.python, str(BENCH_DIR / "idle_client.py"), "--port", str(server.port), "--count", str(count)],
    )
    holder = ctx.registry.start(
        f"idle-holder-{server.port}", argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    line = _read_line(holder, timeout=180.0)
    if not line.startswith("ready "):
        ctx.registry.stop(holder)
        raise RuntimeError(f"the idle holder failed: {line!r}\n{holder.log_tail()}")
    return holder, int(line.split()[1])


def _read_line(process: Managed, timeout: float) -> str:
    """The next line the process prints, or ``""`` after ``timeout`` seconds or at its end."""
    stdout = process.popen.stdout
    if stdout is None:
        return ""
    ready, _, _ = select.select([stdout], [], [], timeout)
    return stdout.readline().decode().strip() if ready else ""


def _release_idle(ctx: Context, holder: Managed) -> dict[str, Any]:
    """Close the holder's stdin; it reports how many connections were still open, then exits."""
    result: dict[str, Any] = {}
    stdin, stdout = holder.popen.stdin, holder.popen.stdout
    try:
        if stdin is not None and stdout is not None:
            stdin.close()
            line = _read_line(holder, timeout=60.0)
            result = json.loads(line) if line else {}
    finally:
        ctx.registry.stop(holder)
    return result


def idle_connections(ctx: Context) -> dict[str, Any]:
    """KiB per idle keep-alive connection, and hello throughput retained with them parked."""
    settings = ctx.settings
    count = settings.idle_connections
    systems: dict[str, Any] = {}
    for name in (OURS, "aiohttp", STARLETTE):
        ctx.log(f"idle: {name}")
        server = start_server(ctx, name)
        try:
            wrk_sample(server, "/", settings.warmup)
            without: list[Sample] = []
            with_idle: list[Sample] = []
            kib_per_connection: list[float] = []
            still_open: list[int] = []
            for round_index in range(settings.rounds):
                without.append(wrk_sample(server, "/", settings.duration))
                before = rss_kib(server.process.pid)
                holder, opened = _hold_idle(ctx, server, count)
                try:
                    time.sleep(0.5)
                    after = rss_kib(server.process.pid)
                    kib_per_connection.append((after - before) / max(opened, 1))
                    with_idle.append(wrk_sample(server, "/", settings.duration))
                finally:
                    report = _release_idle(ctx, holder)
                still_open.append(int(report.get("still_open", -1)))
                ctx.log(
                    f"  round {round_index + 1}: {without[-1].rate:,.0f} → {with_idle[-1].rate:,.0f} req/s, "
                    f"{kib_per_connection[-1]:.2f} KiB/conn, {still_open[-1]}/{opened} still open"
                )
                time.sleep(1.0)  # let the server see the closes before the next baseline
            rate_without = statistics.median(s.rate for s in without)
            rate_with = statistics.median(s.rate for s in with_idle)
            cpu_without = statistics.median(s.cpu_us for s in without)
            cpu_with = statistics.median(s.cpu_us for s in with_idle)
            systems[name] = {
                "idle_connections": count,
                "kib_per_connection": kib_per_connection[0],
                "kib_per_connection_all_rounds": kib_per_connection,
                "rate_without": rate_without,
                "rate_with": rate_with,
                "retained": rate_with / rate_without if rate_without else None,
                "cpu_us_without": cpu_without,
                "cpu_us_with": cpu_with,
                "retained_by_cpu": cpu_without / cpu_with if cpu_with else None,
                "still_open_at_end": still_open,
                "samples_without": [s.__dict__ for s in without],
                "samples_with": [s.__dict__ for s in with_idle],
            }
        finally:
            ctx.registry.stop(server.process)
    return {
        "kind": "idle",
        "title": f"{count:,} idle keep-alive connections",
        "note": "KiB/conn from the first round (fresh server). Retained = hello req/s with the idle "
        "connections parked ÷ without (medians); by CPU = CPU-µs/req without ÷ with.",
        "systems": systems,
    }


def _churn(ctx: Context, name: str, target: int, warmup: int, time_limit: float) -> dict[str, Any]:
    """Short connections against one fresh server until ``target``; RSS after each segment."""
    server = start_server(ctx, name)
    url = server.url("/")
    try:
        total = 0
        series: list[tuple[int, int]] = [(0, rss_kib(server.process.pid))]
        warm_point: tuple[int, int] | None = None
        started = time.monotonic()
        rate = 5_000.0
        while total < target and (left := time_limit - (time.monotonic() - started)) >= 1.0:
            goal = warmup if warm_point is None else target
            seconds = min(10.0, left, max(1.0, (goal - total) / rate))
            result = run_wrk(url, connections=50, duration=seconds, headers={"Connection": "close"})
            total += result.requests
            rate = max(result.rate, 100.0)
            series.append((total, rss_kib(server.process.pid)))
            if warm_point is None and total >= warmup:
                warm_point = series[-1]
        if warm_point is None:
            warm_point = series[-1]
        end = series[-1]
        after_warm = [point for point in series if point[0] >= warm_point[0]]
        middle = min(after_warm, key=lambda point: abs(point[0] - (warm_point[0] + end[0]) / 2))
        grown_kib = end[1] - warm_point[1]
        after_warmup = end[0] - warm_point[0]
        return {
            "connections": total,
            "target": target,
            "reached_target": total >= target,
            "seconds": round(time.monotonic() - started, 1),
            "rss_kib_start": series[0][1],
            "rss_kib_after_warmup": warm_point[1],
            "warmup_connections": warm_point[0],
            "rss_kib_end": end[1],
            "growth_percent": 100.0 * grown_kib / warm_point[1] if warm_point[1] else None,
            "bytes_per_connection": grown_kib * 1024 / after_warmup if after_warmup else None,
            # A leak keeps growing in the second half; memory held for a fixed time does not.
            "rss_kib_middle": middle[1],
            "growth_second_half_percent": 100.0 * (end[1] - middle[1]) / middle[1] if middle[1] else None,
            "series": series,
        }
    finally:
        ctx.registry.stop(server.process)


def memory_churn(ctx: Context) -> dict[str, Any]:
    """RSS growth over many short connections (``Connection: close``), after a warm-up."""
    settings = ctx.settings
    systems: dict[str, Any] = {}
    # Keep the whole run within its budget: the peer gets at most 15% of what is left.
    left = settings.seconds_left()
    peer_limit = min(settings.memory_peer_time_limit, max(5.0, 0.15 * left))
    our_limit = min(settings.memory_time_limit, max(10.0, left - peer_limit - 20.0))
    plan = [
        (OURS, settings.memory_connections, our_limit),
        ("aiohttp", settings.memory_peer_connections, peer_limit),
    ]
    for name, target, limit in plan:
        warmup = min(settings.memory_warmup_connections, target // 5)
        ctx.log(f"memory: {name}, {target:,} connections (warm-up {warmup:,}, at most {limit:.0f} s)")
        systems[name] = _churn(ctx, name, target, warmup, limit)
        record = systems[name]
        ctx.log(
            f"  {record['connections']:,} connections, RSS {record['rss_kib_after_warmup']:,} → "
            f"{record['rss_kib_end']:,} KiB ({record['growth_percent']:+.2f}%)"
        )
    return {
        "kind": "memory",
        "title": "RSS over many short connections (Connection: close)",
        "note": "Growth is from the end of the warm-up to the end; the second-half growth (from half "
        "the connections to the end) tells a leak from memory that is only held for a while. The "
        "peer gets fewer connections to keep the run short (bytes per connection compare). The seed "
        "server cannot be driven by wrk (it leaves every connection open).",
        "systems": systems,
    }
