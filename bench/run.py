"""Benchmark flowno-io against its peers on this machine; write JSON, markdown and a chart.

Usage::

    python bench/run.py                      # everything, ~16 minutes; also updates results/latest.*
    python bench/run.py --quick              # a smoke test of every scenario (~2 minutes)
    python bench/run.py --only sse,client_1  # some scenarios (groups: hello, sse, client)
    python bench/run.py --rounds 5 --duration 10

Servers run pinned to CPU 0 and every load generator and client to CPU 1 (``taskset``); systems
are measured in interleaved rounds and the medians compared, with each process's CPU time per
request next to the rates. Results go to ``bench/results/<date>.{json,md,svg}`` (``-quick`` or
``-partial`` is added to the name of a quick or partial run, which leaves ``latest.*`` alone).
Everything listens and connects on 127.0.0.1 only; every process started is killed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

from _http2 import HYPERCORN, h2_hello, https_hello
from _loadgen import LOCUST, loadgen_closed
from _procs import LOAD_CPU, ProcessRegistry, raise_fd_limit
from _report import DASH, TIMES, render_chart, render_markdown
from _resources import idle_connections, memory_churn
from _scenarios import (
    AIOHTTP_UVLOOP,
    BENCH_DIR,
    OURS,
    Context,
    Settings,
    client_1,
    client_50,
    echo,
    hello_close,
    hello_keepalive,
    observability_overhead,
    sse_1,
    sse_100,
)
from _wrk import ensure_wrk_present

SCENARIOS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "hello_keepalive": hello_keepalive,
    "hello_close": hello_close,
    "observability": observability_overhead,
    "echo": echo,
    "sse_1": sse_1,
    "sse_100": sse_100,
    "client_1": client_1,
    "client_50": client_50,
    "https_hello": https_hello,
    "h2_hello": h2_hello,
    "loadgen": loadgen_closed,
    "idle": idle_connections,
    "memory": memory_churn,
}
GROUPS = {
    "hello": ["hello_keepalive", "hello_close"],
    "sse": ["sse_1", "sse_100"],
    "client": ["client_1", "client_50"],
    "http2": ["https_hello", "h2_hello"],
}


def select_scenarios(only: str | None) -> list[str]:
    """Scenario keys from a comma-separated ``--only`` value (keys or group names).

    >>> select_scenarios("sse,idle")
    ['sse_1', 'sse_100', 'idle']
    """
    if not only:
        return list(SCENARIOS)
    chosen: list[str] = []
    for word in (part.strip() for part in only.split(",") if part.strip()):
        keys = GROUPS.get(word, [word])
        for key in keys:
            if key not in SCENARIOS:
                raise SystemExit(f"unknown scenario {word!r}; choose from {', '.join([*SCENARIOS, *GROUPS])}")
            if key not in chosen:
                chosen.append(key)
    return chosen


def settings_from(args: argparse.Namespace) -> Settings:
    """The :class:`Settings` for the command line (``--quick`` shrinks everything)."""
    if args.quick:
        settings = Settings(
            rounds=1,
            duration=1.0,
            warmup=1.0,
            quick=True,
            idle_connections=1_000,
            memory_connections=20_000,
            memory_peer_connections=5_000,
            memory_warmup_connections=4_000,
            memory_time_limit=20.0,
            memory_peer_time_limit=10.0,
            run_budget=5 * 60.0,
        )
    else:
        settings = Settings()
    if args.rounds is not None:
        settings.rounds = args.rounds
    if args.duration is not None:
        settings.duration = args.duration
    if args.idle_connections is not None:
        settings.idle_connections = args.idle_connections
    if args.memory_connections is not None:
        settings.memory_connections = args.memory_connections
    return settings


# -- targets ------------------------------------------------------------------------------------


def compute_targets(scenarios: dict[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets, each as a same-run ratio (by rate, and by CPU per request)."""
    rows: list[dict[str, Any]] = []

    def ratio(key: str, peer: str, threshold: float, label: str) -> None:
        record = scenarios.get(key)
        if record is None or OURS not in record["systems"] or peer not in record["systems"]:
            return
        ours, other = record["systems"][OURS], record["systems"][peer]
        rate_ratio = ours["median_rate"] / other["median_rate"] if other["median_rate"] else None
        cpu_ratio = other["median_cpu_us"] / ours["median_cpu_us"] if ours["median_cpu_us"] else None
        rows.append(
            {
                "target": label,
                "threshold": threshold,
                "ratio": rate_ratio,
                "cpu_ratio": cpu_ratio,
                "measured": DASH if rate_ratio is None else f"{rate_ratio:.2f}{TIMES}",
                "by_cpu": DASH if cpu_ratio is None else f"{cpu_ratio:.2f}{TIMES}",
                "met": None if rate_ratio is None else rate_ratio >= threshold,
            }
        )

    ratio("hello_keepalive", "aiohttp", 2.0, f"hello keep-alive ≥ 2.0{TIMES} aiohttp")
    ratio("hello_keepalive", AIOHTTP_UVLOOP, 1.3, f"hello keep-alive ≥ 1.3{TIMES} aiohttp on uvloop")
    ratio("hello_close", "aiohttp", 2.5, f"hello `Connection: close` ≥ 2.5{TIMES} aiohttp")
    ratio("echo", "aiohttp", 2.5, f"POST /echo 1 KiB JSON ≥ 2.5{TIMES} aiohttp")
    for key, clients in (("sse_1", "1 client"), ("sse_100", "100 clients")):
        ratio(key, "aiohttp", 2.0, f"SSE events/s, {clients} ≥ 2.0{TIMES} aiohttp")
        ratio(key, "uvicorn+sse-starlette", 3.0, f"SSE events/s, {clients} ≥ 3.0{TIMES} sse-starlette")
    ratio("client_1", "httpx", 5.0, f"client req/s, 1 task ≥ 5{TIMES} httpx AsyncClient")
    ratio("client_1", "aiohttp", 1.5, f"client req/s, 1 task ≥ 1.5{TIMES} aiohttp ClientSession")
    ratio("client_50", "aiohttp", 1.5, f"client req/s, 50 tasks ≥ 1.5{TIMES} aiohttp ClientSession")
    ratio("loadgen", LOCUST, 3.0, f"load generator, 50 users, one core ≥ 3.0{TIMES} Locust FastHttpUser")
    ratio("https_hello", HYPERCORN, 1.5, f"HTTPS hello (HTTP/1.1 keep-alive) ≥ 1.5{TIMES} hypercorn")
    ratio("h2_hello", HYPERCORN, 1.5, f"HTTP/2 hello (h2load -c 10 -m 10) ≥ 1.5{TIMES} hypercorn")
    observed = scenarios.get("observability")
    if observed is not None:
        overhead = observed["cpu_overhead"]
        everything = observed.get("cpu_overhead_all")
        rows.append(
            {
                "target": "metrics+tracing on: ≤ 10% more CPU per hello request",
                "threshold": 0.10,
                "ratio": overhead,
                "measured": f"{overhead * 100:+.1f}% CPU µs/request "
                f"(per-round median {observed['cpu_overhead_per_round_median'] * 100:+.1f}%)"
                + ("" if everything is None else f"; with Server-Timing too {everything * 100:+.1f}%"),
                "met": overhead <= 0.10,
            }
        )
    idle = scenarios.get("idle", {}).get("systems", {}).get(OURS)
    if idle is not None:
        count = f"{idle['idle_connections']:,}"
        rows.append(
            {
                "target": "≤ 3 KiB per idle connection",
                "threshold": 3.0,
                "ratio": idle["kib_per_connection"],
                "measured": f"{idle['kib_per_connection']:.2f} KiB",
                "met": idle["kib_per_connection"] <= 3.0,
            }
        )
        retained, by_cpu = idle["retained"], idle["retained_by_cpu"]
        rows.append(
            {
                "target": f"throughput with {count} idle ≥ 90% of without",
                "threshold": 0.9,
                "ratio": retained,
                "cpu_ratio": by_cpu,
                "measured": DASH if retained is None else f"{retained * 100:.1f}%",
                "by_cpu": DASH if by_cpu is None else f"{by_cpu * 100:.1f}%",
                "met": None if retained is None else retained >= 0.9,
            }
        )
    memory = scenarios.get("memory", {}).get("systems", {}).get(OURS)
    if memory is not None and memory.get("growth_percent") is not None:
        rows.append(
            {
                "target": "RSS growth < 5% over 1,000,000 short connections after warm-up",
                "threshold": 5.0,
                "ratio": memory["growth_percent"],
                "measured": f"{memory['growth_percent']:+.2f}% over {memory['connections']:,} "
                f"({memory['bytes_per_connection'] or 0:.1f} B/connection)",
                "met": memory["growth_percent"] < 5.0 and memory["reached_target"],
            }
        )
    return rows


# -- metadata -----------------------------------------------------------------------------------


def _command(*argv: str) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return ""


def machine_description() -> str:
    """CPU model, cores, memory and kernel."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
        memory_kib = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        memory_kib = 0
    return f"{model}, {os.cpu_count()} cores, {memory_kib / 1024 / 1024:.0f} GiB, Linux {platform.release()}"


def versions() -> dict[str, str]:
    """Versions of Python, the libraries compared, and wrk."""
    found = {"python": platform.python_version()}
    for package in (
        "flowno",
        "aiohttp",
        "uvloop",
        "locust",
        "uvicorn",
        "starlette",
        "sse-starlette",
        "httpx",
        "httptools",
        "orjson",
        "h2",
        "hypercorn",
    ):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = "missing"
    wrk = _command("wrk", "--version") or _command("sh", "-c", "wrk --version 2>&1")
    found["wrk"] = wrk.split()[1] if len(wrk.split()) > 1 else "unknown"
    return found


def commit_description() -> str:
    """The short commit, with ``+uncommitted library changes`` when the library tree is dirty."""
    root = BENCH_DIR.parent
    commit = _command("git", "-C", str(root), "rev-parse", "--short", "HEAD") or "unknown"
    dirty = _command("git", "-C", str(root), "status", "--porcelain", "--", "packages")
    return f"{commit}{' + uncommitted library changes' if dirty else ''}"


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


# -- main ---------------------------------------------------------------------------------------


def write_results(document: dict[str, Any], out_dir: Path, name: str, update_latest: bool) -> list[Path]:
    """Write ``<name>.json``, ``.svg`` and ``.md`` (and ``latest.*`` when asked); returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    targets = [name, "latest"] if update_latest else [name]
    for stem in targets:
        json_path = out_dir / f"{stem}.json"
        json_path.write_text(json.dumps(document, indent=2) + "\n")
        chart_path = out_dir / f"{stem}.svg"
        chart = chart_path.name if render_chart(document, chart_path) else None
        markdown_path = out_dir / f"{stem}.md"
        markdown_path.write_text(render_markdown(document, chart))
        written += [json_path, markdown_path] + ([chart_path] if chart else [])
    return written


def main(argv: list[str] | None = None) -> int:
    """Run the chosen scenarios and write the results; 0 when every scenario ran."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="short runs, few connections: a smoke test")
    parser.add_argument(
        "--only", help=f"comma-separated scenarios or groups: {', '.join([*SCENARIOS, *GROUPS])}"
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds per scenario (default 3; quick 1)")
    parser.add_argument("--duration", type=float, help="seconds per measurement (default 5; quick 1)")
    parser.add_argument("--idle-connections", type=int, help="idle connections (default 10,000)")
    parser.add_argument(
        "--memory-connections", type=int, help="short connections for ours (default 1,000,000)"
    )
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results", help="results folder")
    parser.add_argument("--list", action="store_true", help="list the scenarios and exit")
    args = parser.parse_args(argv)
    if args.list:
        for key, function in SCENARIOS.items():
            print(f"{key:16} {(function.__doc__ or '').strip()}")
        return 0
    chosen = select_scenarios(args.only)
    settings = settings_from(args)
    if (os.cpu_count() or 1) < 2:
        print("warning: fewer than 2 CPUs; server and load will share a core", file=sys.stderr)
    ensure_wrk_present()
    raise_fd_limit()
    os.sched_setaffinity(0, {LOAD_CPU})  # the harness itself stays off the server's core

    partial = bool(args.only) and set(chosen) != set(SCENARIOS)
    stamp = time.strftime("%Y-%m-%d-%H%M%S")
    name = stamp + ("-quick" if settings.quick else "") + ("-partial" if partial else "")
    document: dict[str, Any] = {
        "meta": {
            "date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": machine_description(),
            "commit": commit_description(),
            "versions": versions(),
            "rounds": settings.rounds,
            "duration": settings.duration,
            "quick": settings.quick,
            "scenarios": chosen,
            "loadavg_start": _loadavg(),
        },
        "scenarios": {},
        "errors": {},
    }
    started = time.monotonic()
    log_dir = Path(os.environ.get("BENCH_LOG_DIR", "/tmp/flowno-bench-logs")) / stamp
    with ProcessRegistry(log_dir) as registry:
        context = Context(registry, settings)
        context.log(f"scenarios: {', '.join(chosen)}; logs in {log_dir}")
        for key in chosen:
            context.log(f"scenario {key}")
            try:
                document["scenarios"][key] = SCENARIOS[key](context)
            except Exception as exc:  # one broken scenario must not lose the others' results
                context.log(f"scenario {key} failed: {exc}")
                document["errors"][key] = f"{type(exc).__name__}: {exc}"
                traceback.print_exc()
    document["meta"]["seconds"] = round(time.monotonic() - started, 1)
    document["meta"]["loadavg_end"] = _loadavg()
    document["targets"] = compute_targets(document["scenarios"])
    written = write_results(document, args.out, name, update_latest=not settings.quick and not partial)
    print(render_markdown(document, None))
    print(f"wrote {', '.join(str(p) for p in written)} in {document['meta']['seconds']} s", file=sys.stderr)
    return 1 if document["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
