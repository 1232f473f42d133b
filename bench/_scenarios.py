"""The benchmark scenarios: what runs, against what, and how each number is measured.

Every throughput scenario starts one process per system (servers pinned to CPU 0), warms each
up, then runs ``rounds`` rounds; a round measures every system once, one after the other
(A B C, then B C A, ...: interleaved, so drift of the shared machine hits all of them alike). Next
to each rate it records the CPU time the measured process spent per request or event
(``utime + stime`` from ``/proc/<pid>/stat``), which the machine's noise barely moves.
"""

from __future__ import annotations

import json
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from _procs import (
    LOAD_CPU,
    SERVER_CPU,
    Managed,
    ProcessRegistry,
    cpu_busy_seconds,
    cpu_seconds,
    free_port,
    pinned,
    wait_for_port,
    wait_until_quiet,
)
from _wrk import run_wrk

BENCH_DIR = Path(__file__).resolve().parent
APPS_DIR = BENCH_DIR / "apps"
sys.path.insert(0, str(APPS_DIR))

from _payloads import ECHO_BODY  # noqa: E402  (the apps folder is put on sys.path just above)

OURS = "flowno-io"

#: Server label → app script in ``bench/apps/``.
SERVER_APPS = {
    OURS: "flowno_io_app.py",
    "aiohttp": "aiohttp_app.py",
    "uvicorn+starlette": "starlette_app.py",
    "flowno.io 0.1.19 (seed)": "seed_app.py",
}
SEED = "flowno.io 0.1.19 (seed)"
STARLETTE = "uvicorn+starlette"
AIOHTTP_UVLOOP = "aiohttp (uvloop)"
STARLETTE_UVLOOP = "uvicorn+starlette (uvloop)"
#: The hello ceiling: a bare asyncio ``Protocol`` with canned bytes (``apps/protocol_ceiling_app.py``).
CEILING = "asyncio Protocol (ceiling)"
CEILING_UVLOOP = "asyncio Protocol on uvloop (ceiling)"
SERVER_APPS |= {
    AIOHTTP_UVLOOP: "aiohttp_app.py",
    STARLETTE_UVLOOP: "starlette_app.py",
    CEILING: "protocol_ceiling_app.py",
    CEILING_UVLOOP: "protocol_ceiling_app.py",
}
#: Extra command-line arguments of a server label's app.
SERVER_ARGS = {
    AIOHTTP_UVLOOP: ["--loop", "uvloop"],
    STARLETTE_UVLOOP: ["--loop", "uvloop"],
    CEILING_UVLOOP: ["--loop", "uvloop"],
}
#: The systems of the hello scenarios, in the order of the report.
HELLO_SYSTEMS = [OURS, "aiohttp", AIOHTTP_UVLOOP, STARLETTE, STARLETTE_UVLOOP, SEED, CEILING, CEILING_UVLOOP]
#: Our app with metrics, tracing and Server-Timing on (as the services run), for the overhead row.
#: Issue 17's target: metrics and tracing on; and the services' set, Server-Timing too.
OBSERVED = "flowno-io, metrics+tracing"
SERVER_APPS[OBSERVED] = SERVER_APPS[OURS]
SERVER_ARGS[OBSERVED] = ["--observe", "--no-server-timing"]
OBSERVED_ALL = "flowno-io, metrics+tracing+Server-Timing"
SERVER_APPS[OBSERVED_ALL] = SERVER_APPS[OURS]
SERVER_ARGS[OBSERVED_ALL] = ["--observe"]

#: Client label → ``client_bench.py --kind``.
CLIENT_KINDS = {OURS: "flowno-io", "aiohttp": "aiohttp", "httpx": "httpx", SEED: "seed"}


@dataclass
class Settings:
    """How long and how often to measure."""

    rounds: int = 3
    duration: float = 5.0
    warmup: float = 1.0
    quick: bool = False
    idle_connections: int = 10_000
    memory_connections: int = 1_000_000
    memory_peer_connections: int = 100_000
    memory_warmup_connections: int = 100_000
    memory_time_limit: float = 180.0
    memory_peer_time_limit: float = 25.0
    #: Seconds the whole run may take: the memory scenario (last) shortens itself to fit.
    run_budget: float = 16.5 * 60.0
    started: float = field(default_factory=time.monotonic)

    def seconds_left(self) -> float:
        """Seconds left of :attr:`run_budget`."""
        return self.started + self.run_budget - time.monotonic()


@dataclass
class Sample:
    """One measurement of one system: its rate and its CPU cost per unit."""

    rate: float
    cpu_us: float
    details: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    """What every scenario needs."""

    registry: ProcessRegistry
    settings: Settings
    python: str = sys.executable

    def log(self, message: str) -> None:
        """Progress on stderr."""
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- servers and measurements -----------------------------------------------------------------


@dataclass
class Server:
    """A running bench server."""

    name: str
    process: Managed
    port: int

    def url(self, path: str = "/") -> str:
        """The URL of ``path`` on this server."""
        return f"http://127.0.0.1:{self.port}{path}"


def start_server(ctx: Context, name: str) -> Server:
    """Start the app of ``name`` pinned to the server CPU and wait until it listens."""
    port = free_port()
    script = APPS_DIR / SERVER_APPS[name]
    label = name.replace(" ", "_").replace("(", "").replace(")", "").replace("+", "_")
    argv = [ctx.python, str(script), "--port", str(port), *SERVER_ARGS.get(name, [])]
    process = ctx.registry.start(f"server-{label}-{port}", pinned(SERVER_CPU, argv))
    wait_for_port(process, port)
    return Server(name, process, port)


def probe_closes(server: Server, timeout: float = 2.0) -> str | None:
    """Why wrk cannot measure ``server``, or None when it can.

    Sends one ``GET /`` with ``Connection: close`` and expects the response and then the server's
    close within ``timeout`` seconds. The seed server (flowno 0.1.19) fails this: its
    ``handle_client`` calls ``SocketHandle.close()``, which does not exist, so every connection is
    left open after one response and a load generator waits on it forever.
    """
    request = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\nConnection: close\r\n\r\n".encode()
    received = b""
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
            sock.sendall(request)
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    return None if received.startswith(b"HTTP/1.1 200") else "no 200 response before close"
                received += chunk
    except TimeoutError:
        pass
    except OSError as exc:
        return f"probe failed: {exc}"
    if received.startswith(b"HTTP/1.1 200"):
        return (
            "answers one request, then leaves the connection open without closing it "
            "(flowno 0.1.19's handle_client calls SocketHandle.close(), which does not exist), "
            "so wrk stalls on every connection after one response: not measurable"
        )
    return "no response within the probe's timeout"


class NoiseMeter:
    """A server's CPU time over a measurement, and the share of CPU 0 other programs took."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.started = time.monotonic()
        self.own = cpu_seconds(pid)
        self.busy = cpu_busy_seconds(SERVER_CPU)

    def stop(self) -> tuple[float, float]:
        """(server CPU seconds, share of CPU 0's time used by anything else) since the start."""
        own = cpu_seconds(self.pid) - self.own
        busy = cpu_busy_seconds(SERVER_CPU) - self.busy
        elapsed = time.monotonic() - self.started
        return own, round(max(0.0, busy - own) / elapsed, 3) if elapsed else 0.0


def wrk_sample(
    server: Server,
    path: str,
    duration: float,
    *,
    connections: int = 50,
    method: str = "GET",
    body: str | None = None,
    headers: dict[str, str] | None = None,
) -> Sample:
    """Drive ``server`` with wrk; the rate is requests/s, the CPU is the server's µs per request."""
    noise = NoiseMeter(server.process.pid)
    result = run_wrk(
        server.url(path),
        connections=connections,
        duration=duration,
        method=method,
        body=body,
        headers=headers,
    )
    spent, foreign = noise.stop()
    errors = {key: value for key, value in result.errors.items() if value}
    return Sample(
        rate=result.rate,
        cpu_us=spent * 1e6 / max(result.requests, 1),
        details={
            "requests": result.requests,
            "p50_ms": result.p50_ms,
            "p99_ms": result.p99_ms,
            "errors": errors,
            "foreign_cpu0": foreign,
        },
    )


def sse_sample(ctx: Context, server: Server, clients: int, duration: float, events: int = 1000) -> Sample:
    """Run the raw-socket SSE client; the rate is events/s, the CPU the server's µs per event."""
    noise = NoiseMeter(server.process.pid)
    argv = [
        ctx.python,
        str(BENCH_DIR / "sse_client.py"),
        "--port",
        str(server.port),
        "--clients",
        str(clients),
        "--events",
        str(events),
        "--duration",
        str(duration),
    ]
    result = _run_json(pinned(LOAD_CPU, argv), timeout=duration + 60)
    spent, foreign = noise.stop()
    return Sample(
        rate=result["events"] / result["seconds"],
        cpu_us=spent * 1e6 / max(result["events"], 1),
        details={
            "events": result["events"],
            "streams": result["streams"],
            "short_streams": result["short_streams"],
            "load_cpu_share": round(result["cpu_seconds"] / result["seconds"], 3),
            "foreign_cpu0": foreign,
        },
    )


def client_sample(ctx: Context, server: Server, kind: str, tasks: int, duration: float) -> Sample:
    """Run one client against ``server``; the rate is requests/s, the CPU the client's µs/request."""
    noise = NoiseMeter(server.process.pid)
    argv = [
        ctx.python,
        str(APPS_DIR / "client_bench.py"),
        "--kind",
        kind,
        "--url",
        server.url("/"),
        "--tasks",
        str(tasks),
        "--warmup",
        str(min(0.5, duration / 4)),
        "--duration",
        str(duration),
    ]
    result = _run_json(pinned(LOAD_CPU, argv), timeout=duration + 60)
    spent, foreign = noise.stop()
    requests = max(result["requests"], 1)
    return Sample(
        rate=result["requests"] / result["seconds"],
        cpu_us=result["cpu_seconds"] * 1e6 / requests,
        details={
            "requests": result["requests"],
            "errors": result["errors"],
            "server_cpu_us": round(spent * 1e6 / requests, 2),
            "foreign_cpu0": foreign,
        },
    )


def _run_json(argv: Sequence[str], timeout: float) -> dict[str, Any]:
    completed = subprocess.run(
        list(argv), capture_output=True, text=True, timeout=timeout, check=False, start_new_session=True
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{argv[3:5]} failed ({completed.returncode}): {completed.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


# -- interleaved rounds -----------------------------------------------------------------------


def interleaved(
    ctx: Context,
    systems: Sequence[str],
    measure: Callable[[str, float], Sample],
    quiet_pids: Sequence[int] = (),
    *,
    rounds: int | None = None,
    duration: float | None = None,
) -> dict[str, list[Sample]]:
    """Warm every system up, then measure each once per round, rotating the order every round.

    Before each measurement the processes ``quiet_pids`` (the servers) must have gone quiet, so
    that work left over from the previous measurement is not charged to the next system.
    ``rounds`` and ``duration`` override the settings' (more, shorter rounds pair measurements
    closer in time, against the drift of a shared machine).
    """
    settings = ctx.settings
    for name in systems:
        measure(name, settings.warmup)
    samples: dict[str, list[Sample]] = {name: [] for name in systems}
    for round_index in range(settings.rounds if rounds is None else rounds):
        shift = round_index % len(systems)
        for name in [*systems[shift:], *systems[:shift]]:
            waited = wait_until_quiet(quiet_pids) if quiet_pids else 0.0
            sample = measure(name, settings.duration if duration is None else duration)
            sample.details["waited_for_quiet_s"] = round(waited, 2)
            samples[name].append(sample)
            ctx.log(f"  round {round_index + 1} {name}: {sample.rate:,.0f}/s, {sample.cpu_us:.1f} CPU-µs")
    return samples


def summarize(samples: dict[str, list[Sample]], unit: str, title: str, note: str = "") -> dict[str, Any]:
    """The JSON record of a throughput scenario: every sample, medians, ratios against ours."""
    systems: dict[str, Any] = {}
    for name, runs in samples.items():
        systems[name] = {
            "median_rate": statistics.median(s.rate for s in runs),
            "min_rate": min(s.rate for s in runs),
            "max_rate": max(s.rate for s in runs),
            "median_cpu_us": statistics.median(s.cpu_us for s in runs),
            "median_foreign_cpu0": statistics.median(s.details.get("foreign_cpu0", 0.0) for s in runs),
            "samples": [asdict(s) for s in runs],
        }
    ours = systems.get(OURS)
    if ours is not None:
        for record in systems.values():
            record["ours_over_this"] = (
                ours["median_rate"] / record["median_rate"] if record["median_rate"] else None
            )
            record["this_cpu_over_ours"] = (
                record["median_cpu_us"] / ours["median_cpu_us"] if ours["median_cpu_us"] else None
            )
    return {"kind": "throughput", "title": title, "unit": unit, "note": note, "systems": systems}


def _pids(servers: dict[str, Server]) -> list[int]:
    return [server.process.pid for server in servers.values()]


def with_servers(
    ctx: Context, names: Sequence[str], body: Callable[[dict[str, Server]], dict[str, Any]]
) -> dict[str, Any]:
    """Start the servers of ``names``, run ``body``, and stop them whatever happens."""
    servers: dict[str, Server] = {}
    try:
        for name in names:
            servers[name] = start_server(ctx, name)
        return body(servers)
    finally:
        for server in servers.values():
            ctx.registry.stop(server.process)


# -- the scenarios ------------------------------------------------------------------------------


def _measurable(ctx: Context, servers: dict[str, Server]) -> tuple[list[str], dict[str, str]]:
    """The servers wrk can measure, and why the others were skipped."""
    names: list[str] = []
    skipped: dict[str, str] = {}
    for name, server in servers.items():
        reason = probe_closes(server)
        if reason is None:
            names.append(name)
        else:
            skipped[name] = reason
            ctx.log(f"  skipping {name}: {reason}")
    return names, skipped


def _hello(ctx: Context, title: str, headers: dict[str, str] | None) -> dict[str, Any]:
    def body(servers: dict[str, Server]) -> dict[str, Any]:
        names, skipped = _measurable(ctx, servers)
        samples = interleaved(
            ctx,
            names,
            lambda name, seconds: wrk_sample(servers[name], "/", seconds, headers=headers),
            _pids(servers),
        )
        record = summarize(samples, "req/s", title, CEILING_NOTE)
        add_ceiling_fractions(record)
        record["skipped"] = skipped
        return record

    return with_servers(ctx, HELLO_SYSTEMS, body)


CEILING_NOTE = (
    "The ceiling is a bare asyncio `Protocol` writing canned bytes for each head (no parsing, "
    "routing, limits or timeouts); *of ceiling* is each rate over the asyncio loop's ceiling."
)


def add_ceiling_fractions(record: dict[str, Any]) -> None:
    """Give every system of a hello record its rate as a fraction of the asyncio Protocol ceiling."""
    ceiling = record["systems"].get(CEILING)
    if ceiling is None or not ceiling["median_rate"]:
        return
    for system in record["systems"].values():
        system["fraction_of_ceiling"] = system["median_rate"] / ceiling["median_rate"]


def hello_keepalive(ctx: Context) -> dict[str, Any]:
    """``GET /`` over 50 keep-alive connections."""
    return _hello(ctx, "hello, keep-alive, 50 connections", None)


def observability_overhead(ctx: Context) -> dict[str, Any]:
    """``GET /`` keep-alive, our app with metrics + tracing on (issue 17's target), and with
    Server-Timing too (what the services run), vs all off.

    All in the same run, interleaved; each overhead is the observed server's CPU µs per request
    over the plain one's (the ratio of the medians, and the median of the per-round ratios, each
    round measuring all side by side). A difference of a few percent needs many short rounds on a
    shared machine: three times the rounds, each 2.5 times shorter.
    """

    def body(servers: dict[str, Server]) -> dict[str, Any]:
        samples = interleaved(
            ctx,
            [OURS, OBSERVED, OBSERVED_ALL],
            lambda name, seconds: wrk_sample(servers[name], "/", seconds),
            _pids(servers),
            rounds=3 * ctx.settings.rounds,
            duration=max(1.0, ctx.settings.duration / 2.5),
        )
        record = summarize(samples, "req/s", "hello, keep-alive: metrics+tracing (+Server-Timing) on vs off")
        for key, name in (("", OBSERVED), ("_all", OBSERVED_ALL)):
            per_round = sorted(
                on.cpu_us / off.cpu_us for on, off in zip(samples[name], samples[OURS], strict=True)
            )
            record[f"cpu_overhead{key}"] = record["systems"][name]["this_cpu_over_ours"] - 1
            record[f"cpu_overhead{key}_per_round_median"] = statistics.median(per_round) - 1
            ctx.log(
                f"  {name} CPU overhead: {record[f'cpu_overhead{key}'] * 100:+.1f}% (medians), "
                f"{record[f'cpu_overhead{key}_per_round_median'] * 100:+.1f}% (median of per-round ratios)"
            )
        return record

    return with_servers(ctx, [OURS, OBSERVED, OBSERVED_ALL], body)


def hello_close(ctx: Context) -> dict[str, Any]:
    """``GET /`` with ``Connection: close``: one connection per request."""
    return _hello(ctx, "hello, Connection: close, 50 connections", {"Connection": "close"})


def echo(ctx: Context) -> dict[str, Any]:
    """``POST /echo`` with a 1 KiB JSON body, parsed and sent back."""
    names = [OURS, "aiohttp", STARLETTE]
    headers = {"Content-Type": "application/json"}

    def body(servers: dict[str, Server]) -> dict[str, Any]:
        samples = interleaved(
            ctx,
            names,
            lambda name, seconds: wrk_sample(
                servers[name], "/echo", seconds, method="POST", body=ECHO_BODY, headers=headers
            ),
            _pids(servers),
        )
        return summarize(
            samples,
            "req/s",
            "POST /echo, 1 KiB JSON, keep-alive, 50 connections",
            "Each parses and re-encodes the JSON with its own tools (flowno-io: orjson; the others: json).",
        )

    return with_servers(ctx, names, body)


def _sse(ctx: Context, clients: int) -> dict[str, Any]:
    names = [OURS, "aiohttp", STARLETTE]

    def body(servers: dict[str, Server]) -> dict[str, Any]:
        samples = interleaved(
            ctx, names, lambda name, seconds: sse_sample(ctx, servers[name], clients, seconds), _pids(servers)
        )
        renamed = {
            ("uvicorn+sse-starlette" if name == STARLETTE else name): runs for name, runs in samples.items()
        }
        return summarize(
            renamed,
            "events/s",
            f"SSE, 1,000 events per stream, {clients} concurrent client{'s' if clients > 1 else ''}",
            "Raw-socket client on CPU 1 counts event terminators; a stream that ends opens the next.",
        )

    return with_servers(ctx, names, body)


def sse_1(ctx: Context) -> dict[str, Any]:
    """SSE to one client at a time."""
    return _sse(ctx, 1)


def sse_100(ctx: Context) -> dict[str, Any]:
    """SSE to 100 concurrent clients."""
    return _sse(ctx, 100)


def _clients(ctx: Context, tasks: int) -> dict[str, Any]:
    names = [OURS, "aiohttp", "httpx", SEED]

    def body(servers: dict[str, Server]) -> dict[str, Any]:
        server = servers[OURS]
        wrk_sample(server, "/", ctx.settings.warmup)
        samples = interleaved(
            ctx,
            names,
            lambda name, seconds: client_sample(ctx, server, CLIENT_KINDS[name], tasks, seconds),
            [server.process.pid],
        )
        return summarize(
            samples,
            "req/s",
            f"client GET, {tasks} task{'s' if tasks > 1 else ''}, keep-alive, against the flowno-io server",
            "CPU is the client's µs per request. The seed client opens a new connection per request.",
        )

    return with_servers(ctx, [OURS], body)


def client_1(ctx: Context) -> dict[str, Any]:
    """Clients with one task."""
    return _clients(ctx, 1)


def client_50(ctx: Context) -> dict[str, Any]:
    """Clients with 50 tasks sharing one client object."""
    return _clients(ctx, 50)
