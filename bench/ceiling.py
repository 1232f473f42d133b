"""The concurrency ceiling: live event streams ramped to 100,000 (``make ceiling``, issue 20).

Each step starts a fresh server (flowno_io, then aiohttp) with a tick every 5 s and a heartbeat
after 15 s of silence, opens N streams with the load-test orchestrator (``ceiling_client.py``,
one generator process per 16,000 streams, each bound to its own ``SOURCES_PER_GENERATOR`` source
addresses 127.0.k.x, taken in turn; the ticks are read by one epoll task per generator, or with
``--reader sse`` by each user's SSE decoder, which makes the generators the bottleneck), and once
every stream is open measures over ``--ticks`` ticks:

* server and generator RSS growth per stream (after / before the streams);
* CPU per tick delivered, server side and generator side (``/proc/<pid>/stat``);
* delivery latency (``time.time()`` at the server's publish -> at the client's parse) p50/p99/max;
* ticks lost: for every tick id sent in the window, streams open - streams that received it;
* each server process's fan-out time (wall and CPU) per tick, asked from every worker's
  ``/health`` (flowno_io only: aiohttp's streams write their ticks in their own tasks).

Server processes tick on their own phase of the 5 s interval (``--phase staggered``, the
default: worker ``i`` of ``n`` sends tick ``k`` at ``5k + 5i/n``, as independent processes do);
``--phase aligned`` makes every worker tick at the same instant, the worst case (the 100,000-stream
runs before round five). Tick ids stay comparable: tick ``k`` of every process is tick ``k``.

Up to 19,000 streams one server process serves them (the hard open-files limit is 20,000); above
that ``--workers`` processes share one ``SO_REUSEPORT`` port. Steps that would pass the time limit
are skipped (and say so). Results: ``bench/results/ceiling-<date>.{json,md,svg}``.
"""

from __future__ import annotations

import argparse
import json
import math
import select
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH_DIR), str(BENCH_DIR / "apps")]

from _ceiling_payloads import PHASES, TICK_INTERVAL, largest_offset, tick_id, tick_time  # noqa: E402
from _procs import Managed, ProcessRegistry, cpu_seconds, free_port, rss_kib  # noqa: E402

from loadtest.histogram import LogLinearHistogram  # noqa: E402

SYSTEMS = {
    "flowno_io": BENCH_DIR / "apps" / "flowno_io_ceiling_app.py",
    "aiohttp": BENCH_DIR / "apps" / "aiohttp_ceiling_app.py",
}
DEFAULT_STEPS = (5_000, 10_000, 19_000, 50_000, 100_000)
#: Streams one server process holds at most (the hard open-files limit here is 20,000).
PER_SERVER = 19_000
#: Streams per server worker when several share the port (SO_REUSEPORT spreads them unevenly).
PER_WORKER = 17_500
#: Streams per generator process, by reader (under the 20,000 open-files limit): with each user's
#: SSE decoder a generator holding ~17,000 streams fell behind at 50,000 in a trial (10,000 kept
#: up); the shared reader costs a few µs per tick, so memory (the base of each process) decides.
PER_GENERATOR = {"sse": 10_000, "shared": 16_000}
#: Source addresses per generator, taken in turn: connect() looks for a free port among those its
#: address already uses toward the one destination, 25 % of a generator's CPU while opening 15,000
#: streams from one address; with 4, a generator opens them with ~35 % less CPU.
SOURCES_PER_GENERATOR = 4
#: Streams opened per second, all generators together: opening a stream costs ~1 ms of CPU (server
#: and generator together) on this 2-core machine; faster, the accept queues overflow and SYN
#: retries push connects past their timeout.
OPEN_RATE = 700.0
#: Seconds after a tick's last send time (the latest worker phase) its deliveries are still
#: waited for; a delivery later than that counts as lost.
DELIVERY_GRACE = 2.5
#: Seconds before the first measured tick at which the CPU window opens: the harness waits for
#: it, so the ticks of the interval before are not in the window (with staggered phases, some
#: workers send them after any instant chosen in that interval).
WINDOW_LEAD = 0.1
#: ``/health`` requests per server worker at most when asking every worker for its fan-outs
#: (each new connection goes to one worker chosen by ``SO_REUSEPORT``'s hash: ~2.5 per worker
#: are needed on average for 6 workers).
HEALTH_TRIES_PER_WORKER = 12
#: The targets of issue 20.
TARGETS = {
    "one_process_kib_per_stream": 4.0,
    "one_process_p99_ms": 250.0,
    "all_p99_ms": 1000.0,
    "all_rss_gib": 2.0,
}


@dataclass
class Step:
    """One system at one N: its processes and what was measured."""

    system: str
    streams: int
    workers: int
    generators: int
    record: dict[str, Any] = field(default_factory=dict)


def family(pid: int) -> list[int]:
    """``pid`` and its descendants (a supervisor and its forked workers)."""
    pids = [pid]
    index = 0
    while index < len(pids):
        try:
            for task in Path(f"/proc/{pids[index]}/task").iterdir():
                children = (task / "children").read_text().split()
                pids.extend(int(child) for child in children)
        except OSError:
            pass
        index += 1
    return pids


def total_rss(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += rss_kib(pid)
        except OSError:
            pass
    return total


def total_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except OSError:
            pass
    return total


def wait_health(port: int, workers: int, timeout: float = 30.0) -> None:
    """Wait until the server answers (every worker listens once the supervisor answers)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                response.read()
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the server on :{port} did not answer within {timeout:.0f} s")


def measurement_window(
    now: float, ticks: int, workers: int, phase: str, interval: float = TICK_INTERVAL
) -> tuple[list[int], float, float]:
    """The tick ids measured, when the CPU window opens, and when the generators stop.

    The ids are those of the ``ticks`` intervals starting at least 0.5 s after ``now``; the
    window opens ``WINDOW_LEAD`` s before the first, and the generators stop ``DELIVERY_GRACE`` s
    after the last worker (the largest phase offset) sent the last id.

    >>> measurement_window(101.0, 2, 4, "staggered")
    ([21, 22], 104.9, 116.25)
    >>> measurement_window(101.0, 2, 4, "aligned")
    ([21, 22], 104.9, 112.5)
    """
    first = tick_id(now + 0.5, 0.0, interval) + 1
    wanted = list(range(first, first + ticks))
    stop_at = tick_time(wanted[-1], 0.0, interval) + largest_offset(workers, phase, interval) + DELIVERY_GRACE
    return wanted, tick_time(first, 0.0, interval) - WINDOW_LEAD, stop_at


def worker_health(port: int, workers: int) -> dict[int, dict[str, Any]]:
    """Every server process's ``/health``, by slot number: asked over new connections (each goes
    to the worker ``SO_REUSEPORT`` hashes it to) until every slot answered, or
    ``HEALTH_TRIES_PER_WORKER`` tries per worker (30 s at most)."""
    answers: dict[int, dict[str, Any]] = {}
    deadline = time.monotonic() + 30.0  # the servers may still be closing the generators' streams
    for _ in range(HEALTH_TRIES_PER_WORKER * workers):
        if time.monotonic() > deadline:
            break
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                health = json.loads(response.read())
        except (OSError, ValueError):
            continue
        slot = health.get("slot", [0, 1])[0] if isinstance(health, dict) else None
        if isinstance(slot, int):
            answers[slot] = health
        if len(answers) >= workers:
            break
    return answers


def fanouts(answers: dict[int, dict[str, Any]], wanted: list[int]) -> list[dict[str, Any]]:
    """Each server process's fan-outs of the ``wanted`` ids (wall and CPU ms), from its ``/health``.

    >>> fanouts({1: {"offset": 2.5, "published": [3, 4, 5], "publish_ms": [9.0, 8.0, 7.0],
    ...              "publish_cpu_ms": [4.0, 3.0, 2.0]}}, [4, 5])
    [{'slot': 1, 'offset': 2.5, 'ids': [4, 5], 'wall_ms': [8.0, 7.0], 'cpu_ms': [3.0, 2.0]}]
    """
    found = []
    for slot, health in sorted(answers.items()):
        published = health.get("published")
        if not isinstance(published, list):
            continue
        keep = [n for n, seq in enumerate(published) if seq in wanted]
        found.append(
            {
                "slot": slot,
                "offset": health.get("offset"),
                "ids": [published[n] for n in keep],
                "wall_ms": [health["publish_ms"][n] for n in keep],
                "cpu_ms": [health["publish_cpu_ms"][n] for n in keep],
            }
        )
    return found


def read_message(process: Managed, deadline: float) -> dict[str, Any] | None:
    """The next JSON line of a generator, ``None`` at ``deadline`` or its end."""
    stdout = process.popen.stdout
    assert stdout is not None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        ready, _, _ = select.select([stdout], [], [], remaining)
        if not ready:
            return None
        line = stdout.readline()
        if not line:
            return None
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if isinstance(message, dict):
            return message


def run_step(
    registry: ProcessRegistry,
    python: str,
    step: Step,
    ticks: int,
    open_timeout: float,
    open_rate: float,
    reader: str = "shared",
    phase: str = "staggered",
    interval: float = TICK_INTERVAL,
) -> None:
    """Start the server and generators of ``step``, measure, stop them all."""
    record = step.record
    port = free_port()
    server = registry.start(
        f"{step.system}-{step.streams}",
        [
            python,
            str(SYSTEMS[step.system]),
            "--port",
            str(port),
            "--workers",
            str(step.workers),
            "--phase",
            phase,
            "--tick-interval",
            str(interval),
        ],
    )
    generators: list[Managed] = []
    try:
        wait_health(port, step.workers)
        time.sleep(0.5 if step.workers == 1 else 2.0)  # every worker up and settled
        server_pids = family(server.pid)
        server_base = total_rss(server_pids)
        shares = [
            step.streams // step.generators + (1 if n < step.streams % step.generators else 0)
            for n in range(step.generators)
        ]
        started = time.monotonic()
        for number, share in enumerate(shares):
            generators.append(
                registry.start(
                    f"{step.system}-{step.streams}-gen{number}",
                    [
                        python,
                        str(BENCH_DIR / "ceiling_client.py"),
                        "--url",
                        f"http://127.0.0.1:{port}/ticks",
                        "--streams",
                        str(share),
                        "--source",
                        ",".join(f"127.0.{k}.{11 + number}" for k in range(SOURCES_PER_GENERATOR)),
                        "--open-timeout",
                        str(open_timeout),
                        "--open-rate",
                        str(open_rate / step.generators),
                        "--reader",
                        reader,
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                )
            )
        opened = failed = 0
        generator_base = 0
        deadline = time.monotonic() + open_timeout + 30
        for generator in generators:
            message = read_message(generator, deadline)
            if message is None or "open" not in message:
                raise RuntimeError(f"a generator did not report its streams open:\n{generator.log_tail()}")
            opened += message["open"]
            failed += message["failed"]
            generator_base += message["base_rss_kib"]
        record["open_seconds"] = round(time.monotonic() - started, 1)
        time.sleep(1.0)
        server_pids = family(server.pid)
        generator_pids = [generator.pid for generator in generators]
        server_rss = total_rss(server_pids)
        generator_rss = total_rss(generator_pids)
        wanted, window_start, stop_at = measurement_window(time.time(), ticks, step.workers, phase, interval)
        time.sleep(max(0.0, window_start - time.time()))
        server_cpu0 = total_cpu(server_pids)
        generator_cpu0 = total_cpu(generator_pids)
        for generator in generators:
            assert generator.popen.stdin is not None
            generator.popen.stdin.write(f"stop {stop_at}\n".encode())
            generator.popen.stdin.flush()
        results = []
        result_deadline = time.monotonic() + (stop_at - window_start) + 30
        server_cpu1 = generator_cpu1 = None
        for generator in generators:
            message = read_message(generator, result_deadline)
            if server_cpu1 is None:
                server_cpu1 = total_cpu(server_pids)
                generator_cpu1 = total_cpu(generator_pids)
            if message is None or "result" not in message:
                raise RuntimeError(f"a generator did not report its result:\n{generator.log_tail()}")
            results.append(message["result"])
        assert server_cpu1 is not None and generator_cpu1 is not None
        answers = worker_health(port, step.workers)
        record["fanouts"] = fanouts(answers, wanted)
        record["health_slots"] = sorted(answers)
        latency = LogLinearHistogram()
        delivered = 0
        # Deliveries of every tick sent in the CPU window: the wanted ids, and with staggered
        # phases the next id of the workers that sent it before the generators stopped.
        in_window = 0
        send_times: dict[int, set[float]] = {seq: set() for seq in wanted}
        errors: dict[str, int] = {}
        error_samples: dict[str, list[str]] = {}
        for result in results:
            for kind, texts in result.get("error_samples", {}).items():
                error_samples.setdefault(kind, []).extend(texts[: 3 - len(error_samples.get(kind, []))])
            in_window += sum(count for seq, count in result["received"].items() if int(seq) >= wanted[0])
            for seq in wanted:
                send_times[seq].update(result.get("sent", {}).get(str(seq), ()))
                delivered += result["received"].get(str(seq), 0)
                if str(seq) in result["latency"]:
                    latency.merge(LogLinearHistogram.from_dict(result["latency"][str(seq)]))
            for kind, count in result["errors"].items():
                errors[kind] = errors.get(kind, 0) + count
        expected = opened * len(wanted)
        record.update(
            {
                "opened": opened,
                "failed": failed,
                "errors": errors,
                "error_samples": error_samples,
                "phase": phase,
                "ticks": len(wanted),
                "delivered": delivered,
                "delivered_in_window": in_window,
                # each id's send times seen, one per server process that had streams
                "send_offsets_s": {
                    str(seq): [round(t - tick_time(seq, 0.0, interval), 3) for t in sorted(times)]
                    for seq, times in send_times.items()
                },
                "lost": expected - delivered,
                "server_rss_mib": round(server_rss / 1024, 1),
                "generator_rss_mib": round(generator_rss / 1024, 1),
                "server_kib_per_stream": round((server_rss - server_base) / max(opened, 1), 2),
                "generator_kib_per_stream": round((generator_rss - generator_base) / max(opened, 1), 2),
                "server_cpu_us_per_tick": round((server_cpu1 - server_cpu0) / max(in_window, 1) * 1e6, 2),
                "generator_cpu_us_per_tick": round(
                    (generator_cpu1 - generator_cpu0) / max(in_window, 1) * 1e6, 2
                ),
                "latency_ms": {
                    "p50": latency.value_at_percentile(50) / 1000,
                    "p99": latency.value_at_percentile(99) / 1000,
                    "max": latency.max / 1000 if latency.total else None,
                },
                "generator_lag_p99_ms": max(result["generator_lag_p99_ms"] for result in results),
            }
        )
    finally:
        for generator in generators:
            registry.stop(generator, grace=1.0)
        registry.stop(server, grace=3.0)


def plan(
    systems: list[str], steps: list[int], reader: str = "shared", workers: int | None = None
) -> list[Step]:
    """Every system at every N: the one-process steps of both systems first, then the multi-process
    ones (flowno_io first), so that the time limit cuts the largest aiohttp steps first."""
    planned = []
    small = [n for n in steps if n <= PER_SERVER]
    large = [n for n in steps if n > PER_SERVER]
    order = [(system, n) for n in small for system in systems] + [(s, n) for s in systems for n in large]
    for system, streams in order:
        servers = workers or (1 if streams <= PER_SERVER else math.ceil(streams / PER_WORKER))
        generators = math.ceil(streams / PER_GENERATOR[reader])
        planned.append(Step(system, streams, servers, generators))
    return planned


def estimate_seconds(step: Step, ticks: int, interval: float = TICK_INTERVAL) -> float:
    """A rough bound of one step's time (opening at ~1,000 streams/s on a loaded machine; up to
    one interval waiting for the window, the ticks, the latest phase and the grace)."""
    return 10 + step.streams / OPEN_RATE * 1.3 + (ticks + 2) * interval + DELIVERY_GRACE


def summarize(steps: list[Step]) -> dict[str, Any]:
    """The targets of issue 20, checked on the flowno_io steps."""
    checks = []
    for step in steps:
        record = step.record
        if step.system != "flowno_io" or "lost" not in record:
            continue
        if step.streams == PER_SERVER:
            checks.append(
                (
                    "19,000 streams, one process: KiB per stream",
                    record["server_kib_per_stream"],
                    TARGETS["one_process_kib_per_stream"],
                )
            )
            checks.append(
                ("19,000 streams: tick p99 ms", record["latency_ms"]["p99"], TARGETS["one_process_p99_ms"])
            )
            checks.append(("19,000 streams: ticks lost", record["lost"], 0))
        if step.streams == max(s.streams for s in steps):
            total = (record["server_rss_mib"] + record["generator_rss_mib"]) / 1024
            checks.append((f"{step.streams:,} streams: ticks lost", record["lost"], 0))
            checks.append(
                (f"{step.streams:,} streams: tick p99 ms", record["latency_ms"]["p99"], TARGETS["all_p99_ms"])
            )
            checks.append(
                (f"{step.streams:,} streams: total RSS GiB", round(total, 2), TARGETS["all_rss_gib"])
            )
    return {
        "targets": [
            {"name": name, "value": value, "limit": limit, "met": value <= limit}
            for name, value, limit in checks
        ]
    }


def render_markdown(document: dict[str, Any], chart: str | None) -> str:
    lines = [f"# Concurrency ceiling, {document['meta']['date']}", "", document["meta"]["description"], ""]
    lines += [
        "| system | N | server procs | gen procs | open (s) | opened | lost | server KiB/stream | gen KiB/stream | server µs CPU/tick | gen µs CPU/tick | p50 ms | p99 ms | max ms | server RSS MiB | gen RSS MiB |",
        "|" + "---|" * 16,
    ]
    for step in document["steps"]:
        r = step
        if "lost" not in r:
            lines.append(
                f"| {r['system']} | {r['streams']:,} | {r['workers']} | {r['generators']} | {r.get('skipped') or r.get('error', '')} |"
                + " |" * 11
            )
            continue
        lat = r["latency_ms"]
        lines.append(
            f"| {r['system']} | {r['streams']:,} | {r['workers']} | {r['generators']} | {r['open_seconds']} | {r['opened']:,} | {r['lost']:,} | "
            f"{r['server_kib_per_stream']:.2f} | {r['generator_kib_per_stream']:.2f} | {r['server_cpu_us_per_tick']:.1f} | "
            f"{r['generator_cpu_us_per_tick']:.1f} | {lat['p50']:.1f} | {lat['p99']:.1f} | {lat['max'] or 0:.1f} | {r['server_rss_mib']:,.0f} | {r['generator_rss_mib']:,.0f} |"
        )
    lines += ["", "## Targets (issue 20)", "", "| check | value | limit | met |", "|---|---|---|---|"]
    for target in document["summary"]["targets"]:
        lines.append(
            f"| {target['name']} | {target['value']} | {target['limit']} | {'yes' if target['met'] else 'NO'} |"
        )
    lines += render_fanouts(document)
    if chart:
        lines += ["", f"![per-stream memory and tick latency]({chart})"]
    return "\n".join(lines) + "\n"


def _join(values: list[float]) -> str:
    return ", ".join(f"{value:.1f}" if isinstance(value, float) else str(value) for value in values)


def render_fanouts(document: dict[str, Any]) -> list[str]:
    """The fan-out section: each server process's phase offset and its fan-out time per tick."""
    phase = document["meta"].get("phase", "aligned")
    lines = [
        "",
        f"## Fan-out per server process (phase: {phase})",
        "",
        (
            "Worker i of n sends tick k at 5k + 5i/n s (staggered: each process on its own phase)."
            if phase == "staggered"
            else "Every worker sends tick k at 5k s (aligned: all processes fan out at once, the worst case)."
        )
        + " Wall and CPU ms of each fan-out (the last subscriber's wait), from each process's "
        "/health (asked until every worker answered; aiohttp reports none: its streams write "
        "their ticks in their own tasks).",
        "",
        "| system | N | worker | offset s | ticks | fan-out wall ms | fan-out CPU ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for step in document["steps"]:
        if "lost" not in step:
            continue
        found = step.get("fanouts") or []
        missing = sorted(set(range(step["workers"])) - {f["slot"] for f in found})
        for fanout in found:
            lines.append(
                f"| {step['system']} | {step['streams']:,} | {fanout['slot']} | {fanout['offset']:.2f} | "
                f"{_join(fanout['ids'])} | {_join(fanout['wall_ms'])} | {_join(fanout['cpu_ms'])} |"
            )
        if missing:
            why = "not reported" if step["system"] != "flowno_io" else "did not answer /health"
            lines.append(
                f"| {step['system']} | {step['streams']:,} | {', '.join(map(str, missing))} | | | {why} | |"
            )
    lines += [
        "",
        "Send times seen by the generators (s after 5k, one per server process that had streams):",
        "",
    ]
    for step in document["steps"]:
        if "send_offsets_s" in step:
            seen = "; ".join(f"{seq}: {offsets}" for seq, offsets in step["send_offsets_s"].items())
            lines.append(f"- {step['system']} {step['streams']:,}: {seen}")
    return lines


def render_chart(document: dict[str, Any], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, (memory, latency) = plt.subplots(1, 2, figsize=(12, 4.2))
    for system in SYSTEMS:
        points = [s for s in document["steps"] if s["system"] == system and "lost" in s]
        if not points:
            continue
        xs = [s["streams"] / 1000 for s in points]
        memory.plot(xs, [s["server_kib_per_stream"] for s in points], marker="o", label=f"{system} server")
        memory.plot(
            xs,
            [s["generator_kib_per_stream"] for s in points],
            marker=".",
            linestyle="--",
            label=f"{system} generator",
        )
        latency.plot(xs, [s["latency_ms"]["p99"] for s in points], marker="o", label=f"{system} p99")
        latency.plot(
            xs, [s["latency_ms"]["p50"] for s in points], marker=".", linestyle="--", label=f"{system} p50"
        )
    memory.set_title("RSS per live stream", fontsize=10)
    memory.set_xlabel("thousand live streams")
    memory.set_ylabel("KiB per stream")
    latency.set_title("tick delivery latency (publish -> client parse)", fontsize=10)
    latency.set_xlabel("thousand live streams")
    latency.set_ylabel("ms")
    latency.set_yscale("log")
    for axes in (memory, latency):
        axes.legend(fontsize=7)
        axes.grid(alpha=0.3)
    figure.suptitle(
        f"Concurrency ceiling, {document['meta']['date']} (2 shared cores, loopback)", fontsize=11
    )
    figure.tight_layout()
    figure.savefig(path, format="svg")
    plt.close(figure)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", default=",".join(str(n) for n in DEFAULT_STEPS), help="stream counts")
    parser.add_argument("--systems", default="flowno_io,aiohttp")
    parser.add_argument("--ticks", type=int, default=3, help="ticks measured per step (every 5 s)")
    parser.add_argument("--time-limit", type=float, default=660.0, help="seconds for the whole ramp")
    parser.add_argument(
        "--open-timeout",
        type=float,
        default=120.0,
        help="seconds past the paced opening for every stream to open",
    )
    parser.add_argument(
        "--open-rate",
        type=float,
        default=OPEN_RATE,
        help="streams opened per second, all generators together",
    )
    parser.add_argument(
        "--reader",
        choices=("shared", "sse"),
        default="shared",
        help="how generators read ticks: one epoll per process (shared) or each user's SSE decoder (sse)",
    )
    parser.add_argument(
        "--phase",
        choices=PHASES,
        default="staggered",
        help="server workers tick on their own phase (staggered) or all at once (aligned: the worst case)",
    )
    parser.add_argument(
        "--tick-interval",
        type=float,
        default=TICK_INTERVAL,
        help="seconds between ticks (5; shorter for the tests' small runs)",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="server processes at every step (default: by N)"
    )
    parser.add_argument("--out", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--stem", default=None, help="file stem (default ceiling-<date>)")
    args = parser.parse_args(argv)
    systems = [name for name in args.systems.split(",") if name]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        parser.error(f"unknown systems: {', '.join(sorted(unknown))}")
    steps = plan(systems, [int(n) for n in args.steps.split(",") if n], args.reader, args.workers)
    date = datetime.now(UTC).strftime("%Y-%m-%d")
    stem = args.stem or f"ceiling-{date}"
    args.out.mkdir(parents=True, exist_ok=True)
    began = time.monotonic()
    with ProcessRegistry(args.out / f"{stem}-logs") as registry:
        for step in steps:
            record = step.record
            record.update(
                {
                    "system": step.system,
                    "streams": step.streams,
                    "workers": step.workers,
                    "generators": step.generators,
                }
            )
            remaining = args.time_limit - (time.monotonic() - began)
            if estimate_seconds(step, args.ticks, args.tick_interval) > remaining:
                record["skipped"] = f"skipped: {remaining:.0f} s left of the time limit"
                print(f"{step.system} {step.streams:,}: {record['skipped']}", file=sys.stderr, flush=True)
                continue
            print(
                f"{step.system} {step.streams:,} streams ({step.workers} server, {step.generators} generator processes)...",
                file=sys.stderr,
                flush=True,
            )
            try:
                open_timeout = args.open_timeout + step.streams / args.open_rate
                run_step(
                    registry,
                    sys.executable,
                    step,
                    args.ticks,
                    min(open_timeout, remaining),
                    args.open_rate,
                    args.reader,
                    args.phase,
                    args.tick_interval,
                )
            except (RuntimeError, OSError) as exc:
                record["error"] = str(exc).splitlines()[0][:200]
                print(f"  failed: {exc}", file=sys.stderr, flush=True)
                continue
            lat = record["latency_ms"]
            print(
                f"  opened {record['opened']:,} in {record['open_seconds']} s, lost {record['lost']:,}, "
                f"server {record['server_kib_per_stream']:.2f} KiB/stream, generator {record['generator_kib_per_stream']:.2f} KiB/stream, "
                f"p50/p99/max {lat['p50']:.1f}/{lat['p99']:.1f}/{lat['max'] or 0:.1f} ms",
                file=sys.stderr,
                flush=True,
            )
    document = {
        "meta": {
            "date": date,
            "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": round(time.monotonic() - began, 1),
            "ticks_per_step": args.ticks,
            "reader": args.reader,
            "phase": args.phase,
            "tick_interval": args.tick_interval,
            "description": (
                "Live event streams (tick every 5 s carrying its send time, heartbeat after 15 s of silence) "
                "opened and held by the load-test orchestrator's SSE users; one generator process per "
                f"{PER_GENERATOR[args.reader]:,} streams, each on its own source addresses 127.0.k.x; loopback, 2 cores "
                "shared with other work. Ticks read "
                + (
                    "by one epoll task per generator process, polling every 2 ms while ticks arrive "
                    "(--reader shared: the latency is the server's fan-out and the kernel's, not the "
                    "generators' event decoding). "
                    if args.reader == "shared"
                    else "by each user's SSE decoder (--reader sse: the generators' CPU per event adds to the latency). "
                )
                + (
                    "Server workers tick on their own phase "
                    "(--phase staggered: worker i of n sends tick k at 5k + 5i/n s). "
                    if args.phase == "staggered"
                    else "Server workers all tick at the same instant (--phase aligned: the worst case). "
                )
                + "KiB per stream = RSS growth / streams open; CPU per tick = CPU seconds over the window / "
                "ticks delivered in it."
            ),
        },
        "steps": [step.record for step in steps],
    }
    document["summary"] = summarize(steps)
    json_path = args.out / f"{stem}.json"
    json_path.write_text(json.dumps(document, indent=2) + "\n")
    chart = args.out / f"{stem}.svg"
    has_chart = render_chart(document, chart)
    (args.out / f"{stem}.md").write_text(render_markdown(document, chart.name if has_chart else None))
    print(json_path, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
