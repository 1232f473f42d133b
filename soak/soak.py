"""A bounded soak of ``HttpServer``: mixed traffic for ``--duration`` seconds, then leak checks.

The server runs in a subprocess (this file with ``--serve``): ``GET /hello``, ``GET /sse`` (an
event stream of ``events`` events ``interval_ms`` apart; ``events=0`` never ends) and
``GET /health`` (RSS, open fds, connections, worker tasks, finished tasks, loop exceptions).

Traffic comes from one epoll loop in this process, over raw non-blocking sockets:

* keep-alive ``GET /hello`` at ``--rate`` requests/s (open loop: sent on schedule, not when the
  previous answer arrives) over ``--connections`` connections;
* ``--sse`` concurrent event streams (``Connection: close``), each reconnecting as soon as its
  stream ends, so streams and connections churn all the time.

Checks (the exit status is 1 when one fails):

* zero unexpected errors (a wrong status or body, a reset, a stream cut short, a timeout);
* RSS growth under ``--max-rss-growth`` (10%) from the end of warm-up to the end of the run;
* no fd growth: open fds once every client has gone equal those before the traffic;
* no task growth: after warm-up the server spawns no worker task and no task finishes (flowno
  keeps every finished task forever, so growth there is a leak), and no exception reaches the loop;
* the server exits 0 on SIGTERM.

Usage::

    python soak/soak.py                                    # 60 s, 10,000 req/s, 1,000 streams
    python soak/soak.py --duration 5 --rate 2000 --sse 100 --json
    python soak/soak.py --serve --port 8080               # just the server
"""

from __future__ import annotations

import argparse
import collections
import errno
import json
import logging
import os
import re
import resource
import selectors
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from flowno import EventLoop, current_event_loop, sleep

from flowno_io import EventSourceResponse, HttpServer, Request, Response, ServerSentEvent

STARTUP_TIMEOUT = 20.0
#: A request or stream taking this much longer than it should is an error (a hang).
STALL_TIMEOUT = 10.0
_LISTENING = re.compile(rb"listening on http://([\d.]+):(\d+)")
_CONTENT_LENGTH = re.compile(rb"\r\ncontent-length: *(\d+)", re.IGNORECASE)

# -- the server (``--serve``) ---------------------------------------------------------------------


def process_rss_kb(pid: int) -> int:
    """Resident memory of process ``pid`` in KiB (``VmRSS`` of ``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def process_fds(pid: int) -> int:
    """Open file descriptors of process ``pid``."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def build_server(
    port: int, *, max_connections: int | None, keepalive_timeout: float, write_timeout: float
) -> HttpServer:
    """The soak server: /hello, /sse and /health."""
    server = HttpServer(
        "127.0.0.1",
        port,
        max_connections=max_connections,
        keepalive_timeout=keepalive_timeout,
        write_timeout=write_timeout,
    )
    streams = [0]
    server.add_route("/hello", lambda request: "Hello", methods=["GET"])

    async def sse(request: Request) -> Response | EventSourceResponse:
        try:
            count = int(request.query_params.get("events", "5"))
            interval = int(request.query_params.get("interval_ms", "100")) / 1000
            ping = float(request.query_params.get("ping_s", "0")) or None
        except ValueError:
            return Response.json({"error": "events, interval_ms and ping_s must be numbers"}, 400)

        async def events() -> AsyncIterator[ServerSentEvent]:
            streams[0] += 1
            try:
                sent = 0
                while count == 0 or sent < count:
                    if sent:
                        await sleep(interval)
                    sent += 1
                    yield ServerSentEvent({"n": sent}, id=str(sent))
            finally:
                streams[0] -= 1

        return EventSourceResponse(events(), ping_interval=ping)

    def health(request: Request) -> dict[str, Any]:
        loop = current_event_loop()
        assert loop is not None
        pid = os.getpid()
        return {
            "pid": pid,
            "rss_kb": process_rss_kb(pid),
            "fds": process_fds(pid),
            "open_connections": server.open_connections,
            "connections_accepted": server.stats["connections_accepted"],
            "requests_served": server.stats["requests_served"],
            "workers": server.stats["workers"],
            "tasks_finished": len(loop.finished) + len(loop.exceptions),
            "loop_exceptions": len(loop.exceptions),
            # flowno keeps an Event's key in event_waiters, with no waiter left, once it was
            # waited on or set; such stale records grow with every Event used once (a leak)
            "stale_event_records": sum(1 for waiters in loop.event_waiters.values() if not waiters),
            "active_streams": streams[0],
        }

    server.add_route("/sse", sse, methods=["GET"])
    server.add_route("/health", health, methods=["GET"])
    return server


def serve(args: argparse.Namespace) -> int:
    """Run the soak server until SIGTERM/SIGINT; print ``listening on URL`` once it listens."""
    logging.basicConfig(
        level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s"
    )
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft = hard if args.nofile is None else args.nofile
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    server = build_server(
        args.port,
        max_connections=args.max_connections,
        keepalive_timeout=args.keepalive_timeout,
        write_timeout=args.write_timeout,
    )
    server.bind()
    print(f"listening on http://127.0.0.1:{server.port}", flush=True)
    EventLoop().run_until_complete(server.serve(), join=True)
    return 0


class ServerProcess:
    """The soak server in a subprocess (stderr goes to a temporary file, never a full pipe).

    Args:
        options: extra ``--serve`` options (``["--nofile", "64"]``).
    """

    def __init__(self, options: list[str] | None = None) -> None:
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115  (closed by __exit__)
        command = [sys.executable, str(Path(__file__).resolve()), "--serve", "--port", "0", *(options or [])]
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=self.stderr)
        self.pid = self.process.pid
        selector = selectors.DefaultSelector()
        assert self.process.stdout is not None
        selector.register(self.process.stdout, selectors.EVENT_READ)
        line = b""
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while b"\n" not in line and time.monotonic() < deadline:
            if selector.select(0.1):
                chunk = os.read(self.process.stdout.fileno(), 4096)
                if not chunk:
                    break  # the process exited
                line += chunk
            elif self.process.poll() is not None:
                break
        selector.close()
        match = _LISTENING.search(line)
        if match is None:
            self.stop()
            raise RuntimeError(f"the soak server did not start: {line!r} {self.stderr_text()}")
        self.address = (match.group(1).decode(), int(match.group(2)))
        self.url = f"http://{self.address[0]}:{self.address[1]}"

    def health(self) -> dict[str, Any]:
        """``GET /health`` (a fresh connection each time)."""
        with urllib.request.urlopen(self.url + "/health", timeout=10) as response:
            health: dict[str, Any] = json.load(response)
        return health

    def rss_kb(self) -> int:
        """The server's resident memory in KiB, from ``/proc``."""
        return process_rss_kb(self.pid)

    def fds(self) -> int:
        """The server's open file descriptors, from ``/proc``."""
        return process_fds(self.pid)

    def stderr_text(self) -> str:
        """What the server wrote to stderr so far."""
        self.stderr.seek(0)
        return self.stderr.read().decode(errors="replace")

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM (a graceful close), then SIGKILL after ``timeout`` s; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
        self.stderr.close()


# -- the load -----------------------------------------------------------------------------------------


@dataclass
class Counters:
    """What the load generator saw."""

    requests: int = 0
    streams: int = 0
    events: int = 0
    errors: int = 0
    error_samples: list[str] = field(default_factory=list)
    behind: int = 0  # requests dropped from the schedule because no connection was free

    def error(self, message: str) -> None:
        """Count an unexpected error (the first 20 are kept as samples)."""
        self.errors += 1
        if len(self.error_samples) < 20:
            self.error_samples.append(message)


HELLO_REQUEST = b"GET /hello HTTP/1.1\r\nHost: soak\r\n\r\n"


class HelloConnection:
    """A keep-alive connection sending GET /hello, one request at a time."""

    def __init__(self, load: Load) -> None:
        self.load = load
        self.sock = socket.create_connection(load.address)
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""
        self.sent_at = 0.0
        load.selector.register(self.sock, selectors.EVENT_READ, self)
        load.idle.append(self)

    def send(self, now: float) -> None:
        self.sent_at = now
        try:
            self.sock.send(HELLO_REQUEST)
        except OSError as exc:
            self.fail(f"hello: send failed: {exc}")

    def on_event(self, mask: int, now: float) -> None:
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as exc:
            self.fail(f"hello: {exc}")
            return
        if not data:
            self.fail("hello: the server closed a keep-alive connection")
            return
        self.buffer += data
        head_end = self.buffer.find(b"\r\n\r\n")
        if head_end < 0:
            return
        match = _CONTENT_LENGTH.search(self.buffer, 0, head_end + 2)
        length = int(match.group(1)) if match else 0
        end = head_end + 4 + length
        if len(self.buffer) < end:
            return
        response, self.buffer = self.buffer[:end], self.buffer[end:]
        if (
            not response.startswith(b"HTTP/1.1 200 ")
            or not response.endswith(b"\r\n\r\nHello")
            or self.buffer
        ):
            self.fail(f"hello: unexpected response {response[:200]!r}")
            return
        self.load.counters.requests += 1
        self.sent_at = 0.0
        self.load.idle.append(self)

    def check_stalled(self, now: float) -> None:
        if self.sent_at and now - self.sent_at > STALL_TIMEOUT:
            self.fail(f"hello: no response in {STALL_TIMEOUT} s")

    def fail(self, message: str) -> None:
        """Count the error and replace this connection with a new one."""
        self.load.counters.error(message)
        self.close()
        self.load.hellos.remove(self)
        self.load.hellos.append(HelloConnection(self.load))

    def close(self) -> None:
        if self in self.load.idle:
            self.load.idle.remove(self)
        self.load.selector.unregister(self.sock)
        self.sock.close()


class StreamConnection:
    """One event stream: connect, read ``events`` events and the end of the stream, then again."""

    def __init__(self, load: Load) -> None:
        self.load = load
        self.sock: socket.socket | None = None
        self.open(time.monotonic())

    def open(self, now: float) -> None:
        self.sock = sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        error = sock.connect_ex(self.load.address)
        if error not in (0, errno.EINPROGRESS):
            self.load.counters.error(f"sse: connect failed: {os.strerror(error)}")
        self.state = "connecting"
        self.started = now
        self.buffer = b""
        self.events = 0
        self.load.selector.register(sock, selectors.EVENT_WRITE, self)

    def on_event(self, mask: int, now: float) -> None:
        sock = self.sock
        assert sock is not None
        if self.state == "connecting":
            error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if error:
                self.fail(f"sse: connect failed: {os.strerror(error)}", now)
                return
            sock.send(self.load.stream_request)
            self.state = "head"
            self.load.selector.modify(sock, selectors.EVENT_READ, self)
            return
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as exc:
            self.fail(f"sse: {exc}", now)
            return
        if not data:
            if self.state == "closing":
                self.load.counters.streams += 1
                self.restart(now)
            else:
                self.fail(f"sse: closed in state {self.state} after {self.events} events", now)
            return
        self.buffer += data
        self.parse(now)

    def parse(self, now: float) -> None:
        if self.state == "head":
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = self.buffer[:head_end].lower()
            if (
                not head.startswith(b"http/1.1 200 ")
                or b"text/event-stream" not in head
                or b"chunked" not in head
            ):
                self.fail(f"sse: unexpected head {self.buffer[:300]!r}", now)
                return
            self.buffer = self.buffer[head_end + 4 :]
            self.state = "body"
        while self.state == "body":
            line_end = self.buffer.find(b"\r\n")
            if line_end < 0:
                return
            size = int(self.buffer[:line_end], 16)
            end = line_end + 2 + size + 2
            if len(self.buffer) < end:
                return
            chunk, self.buffer = self.buffer[line_end + 2 : end - 2], self.buffer[end:]
            if size == 0:
                if self.events != self.load.stream_events or self.buffer:
                    self.fail(f"sse: {self.events} events, {self.load.stream_events} expected", now)
                    return
                self.state = "closing"  # the server closes (Connection: close)
            else:
                self.events += chunk.count(b"\n\n")
                self.load.counters.events += chunk.count(b"\n\n")

    def check_stalled(self, now: float) -> None:
        if now - self.started > self.load.stream_seconds + STALL_TIMEOUT:
            self.fail(f"sse: stalled in state {self.state} after {self.events} events", now)

    def fail(self, message: str, now: float) -> None:
        self.load.counters.error(message)
        self.restart(now)

    def restart(self, now: float) -> None:
        self.close()
        self.open(now)

    def close(self) -> None:
        if self.sock is not None:
            self.load.selector.unregister(self.sock)
            self.sock.close()
            self.sock = None


class Load:
    """The traffic: keep-alive requests on schedule plus churning event streams."""

    def __init__(
        self,
        address: tuple[str, int],
        *,
        rate: float,
        connections: int,
        streams: int,
        stream_events: int,
        stream_interval_ms: int,
    ) -> None:
        self.address = address
        self.rate = rate
        self.selector = selectors.DefaultSelector()
        self.counters = Counters()
        self.idle: collections.deque[HelloConnection] = collections.deque()
        self.stream_events = stream_events
        self.stream_seconds = stream_events * stream_interval_ms / 1000
        self.stream_request = (
            f"GET /sse?events={stream_events}&interval_ms={stream_interval_ms} HTTP/1.1\r\n"
            "Host: soak\r\nAccept: text/event-stream\r\nConnection: close\r\n\r\n"
        ).encode()
        self.hellos = [HelloConnection(self) for _ in range(connections if rate > 0 else 0)]
        self.streams = [StreamConnection(self) for _ in range(streams)]

    def run(self, duration: float, on_second: Callable[[float], None]) -> None:
        """Drive the traffic for ``duration`` seconds, calling ``on_second(elapsed)`` every second."""
        started = time.monotonic()
        sent = 0
        next_second = 1.0
        next_stall_check = started + 1.0
        while (now := time.monotonic()) - started < duration:
            for key, mask in self.selector.select(0.001):
                key.data.on_event(mask, now)
            now = time.monotonic()
            due = int((now - started) * self.rate) - sent
            while due > 0 and self.idle:
                self.idle.popleft().send(now)
                sent += 1
                due -= 1
            if due > self.rate:  # more than a second behind: forget the backlog, count it
                self.counters.behind += due
                sent += due
            if now >= next_stall_check:
                next_stall_check = now + 1.0
                for connection in self.connections():
                    connection.check_stalled(now)
            if now - started >= next_second:
                on_second(now - started)
                next_second += 1.0

    def connections(self) -> list[HelloConnection | StreamConnection]:
        """Every client connection (a copy: failing ones replace themselves while iterated)."""
        return [*self.hellos, *self.streams]

    def close(self) -> None:
        """Close every client connection."""
        for connection in self.connections():
            connection.close()
        self.selector.close()


# -- the soak -----------------------------------------------------------------------------------------


@dataclass
class Report:
    """The soak's figures and verdict."""

    duration_s: float
    rate_target: float
    requests: int
    rate_achieved: float
    requests_behind_schedule: int
    sse_concurrent: int
    sse_streams_completed: int
    sse_events: int
    errors: int
    error_samples: list[str]
    rss_start_kb: int
    rss_warm_kb: int
    rss_end_kb: int
    rss_growth_after_warmup_pct: float
    fds_start: int
    fds_end: int
    workers_warm: int
    workers_end: int
    tasks_finished_warm: int
    tasks_finished_end: int
    event_records_warm: int
    event_records_end: int
    loop_exceptions: int
    rss_samples_kb: list[int]
    server_exit_status: int | None = None
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.failures


def wait_until_idle(server: ServerProcess, timeout: float = 15.0) -> dict[str, Any]:
    """Wait until the server holds no connection but the /health one asking; that health.

    Then wait until its open fds stay the same for 0.3 s (the /health connection closed too), so
    ``/proc`` counts them at rest.
    """
    deadline = time.monotonic() + timeout
    health = server.health()
    while health["open_connections"] > 1 and time.monotonic() < deadline:
        time.sleep(0.05)
        health = server.health()
    readings = [server.fds()]
    while time.monotonic() < deadline and (len(readings) < 4 or len(set(readings[-4:])) > 1):
        time.sleep(0.1)
        readings.append(server.fds())
    return health


def soak(args: argparse.Namespace) -> Report:
    """Run the soak described by ``args`` and return its report."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    warmup = max(1.0, args.duration * args.warmup_fraction)
    with ServerProcess(["--keepalive-timeout", "60"]) as server:
        # Prime every lazily created resource (the stream monitor's epoll), then measure at rest.
        primer = Load(
            server.address, rate=100, connections=1, streams=1, stream_events=2, stream_interval_ms=10
        )
        primer.run(0.5, lambda elapsed: None)
        primer.close()
        wait_until_idle(server)
        fds_start, rss_start = server.fds(), server.rss_kb()

        load = Load(
            server.address,
            rate=args.rate,
            connections=args.connections,
            streams=args.sse,
            stream_events=args.sse_events,
            stream_interval_ms=args.sse_interval_ms,
        )
        samples: dict[str, Any] = {}

        rss_samples: list[int] = []

        def on_second(elapsed: float) -> None:
            rss_samples.append(server.rss_kb())
            if "warm" not in samples and elapsed >= warmup:
                samples["warm"] = {**server.health(), "rss_kb": server.rss_kb()}
                samples["warm_requests"] = load.counters.requests
                samples["warm_at"] = elapsed

        started = time.monotonic()
        load.run(args.duration, on_second)
        end = {**server.health(), "rss_kb": server.rss_kb()}
        elapsed = time.monotonic() - started
        load.close()
        idle = wait_until_idle(server)
        fds_end = server.fds()
        warm = samples.get("warm", end)
        counters = load.counters
        measured = elapsed - samples.get("warm_at", 0.0)
        report = Report(
            duration_s=round(elapsed, 1),
            rate_target=args.rate,
            requests=counters.requests,
            rate_achieved=round((counters.requests - samples.get("warm_requests", 0)) / max(measured, 1e-9)),
            requests_behind_schedule=counters.behind,
            sse_concurrent=args.sse,
            sse_streams_completed=counters.streams,
            sse_events=counters.events,
            errors=counters.errors,
            error_samples=counters.error_samples,
            rss_start_kb=rss_start,
            rss_warm_kb=warm["rss_kb"],
            rss_end_kb=end["rss_kb"],
            rss_growth_after_warmup_pct=round(100 * (end["rss_kb"] - warm["rss_kb"]) / warm["rss_kb"], 1),
            fds_start=fds_start,
            fds_end=fds_end,
            workers_warm=warm["workers"],
            workers_end=idle["workers"],
            tasks_finished_warm=warm["tasks_finished"],
            tasks_finished_end=idle["tasks_finished"],
            event_records_warm=warm["stale_event_records"],
            event_records_end=end["stale_event_records"],  # before the clients leave (interrupt() prunes)
            loop_exceptions=idle["loop_exceptions"],
            rss_samples_kb=rss_samples,
        )
        report.server_exit_status = server.stop()
        stderr = server.stderr_text()
    check(report, args, stderr)
    return report


def check(report: Report, args: argparse.Namespace, server_stderr: str) -> None:
    """Fill ``report.failures`` with every check that failed."""
    failures = report.failures
    if report.errors:
        failures.append(f"{report.errors} unexpected errors, e.g. {report.error_samples[:3]}")
    if report.rss_growth_after_warmup_pct >= args.max_rss_growth:
        failures.append(f"RSS grew {report.rss_growth_after_warmup_pct}% after warm-up")
    if report.fds_end > report.fds_start:
        failures.append(f"open fds grew from {report.fds_start} to {report.fds_end}")
    if report.workers_end > report.workers_warm:
        failures.append(f"worker tasks grew from {report.workers_warm} to {report.workers_end} after warm-up")
    if report.tasks_finished_end > report.tasks_finished_warm + args.max_task_growth:
        failures.append(
            f"finished tasks grew from {report.tasks_finished_warm} to {report.tasks_finished_end}"
        )
    if report.event_records_end > report.event_records_warm + args.max_task_growth:
        grown = f"{report.event_records_warm} to {report.event_records_end}"
        failures.append(f"stale flowno event records grew from {grown} after warm-up (a leak)")
    if report.loop_exceptions:
        failures.append(f"{report.loop_exceptions} exceptions reached the flowno loop")
    if report.server_exit_status != 0:
        failures.append(f"the server exited with {report.server_exit_status} on SIGTERM")
    if "Traceback" in server_stderr or "ERROR" in server_stderr:
        failures.append(f"the server logged errors: {server_stderr[-2000:]}")
    if report.rate_achieved < args.min_rate:
        failures.append(f"{report.rate_achieved} requests/s, under --min-rate {args.min_rate}")


def print_report(report: Report) -> None:
    """The figures, one per line."""
    print(f"soak: {report.duration_s} s, {'PASSED' if report.passed else 'FAILED'}")
    rate = f"{report.rate_achieved}/s after warm-up, target {report.rate_target:.0f}/s"
    print(f"  requests       {report.requests} ({rate})")
    streams = f"{report.sse_streams_completed} completed, {report.sse_concurrent} concurrent"
    print(f"  event streams  {streams}, {report.sse_events} events")
    print(f"  errors         {report.errors}")
    rss = f"start {report.rss_start_kb} KiB, warm {report.rss_warm_kb} KiB, end {report.rss_end_kb} KiB"
    print(f"  RSS            {rss} ({report.rss_growth_after_warmup_pct:+}% after warm-up)")
    print(f"  fds            start {report.fds_start}, end {report.fds_end}")
    workers = f"workers {report.workers_warm} -> {report.workers_end}"
    finished = f"finished {report.tasks_finished_warm} -> {report.tasks_finished_end}"
    print(f"  tasks          {workers}, {finished}, loop exceptions {report.loop_exceptions}")
    events = f"{report.event_records_warm} -> {report.event_records_end}"
    print(f"  loop records   stale event_waiters entries {events}")
    print(f"  RSS each second (KiB): {' '.join(str(kb) for kb in report.rss_samples_kb)}")
    for failure in report.failures:
        print(f"  FAILED: {failure}")


def main(argv: list[str] | None = None) -> int:
    """Run the soak (or, with ``--serve``, the soak server); 0 when every check passed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--duration", type=float, default=60.0, help="seconds of traffic (default 60)")
    add("--rate", type=float, default=10_000, help="keep-alive requests/s to send (default 10000)")
    add("--connections", type=int, default=50, help="keep-alive connections (default 50)")
    add("--sse", type=int, default=1000, help="concurrent event streams (default 1000)")
    add("--sse-events", type=int, default=5, help="events per stream (default 5)")
    add("--sse-interval-ms", type=int, default=300, help="ms between events (default 300)")
    add("--warmup-fraction", type=float, default=0.2, help="warm-up share of the run (default 0.2)")
    add("--max-rss-growth", type=float, default=10.0, help="RSS growth %% allowed after warm-up (10)")
    add("--max-task-growth", type=int, default=2, help="finished tasks allowed after warm-up (2)")
    add("--min-rate", type=float, default=0.0, help="fail under this many requests/s (default 0)")
    add("--json", action="store_true", help="print the report as one JSON object")
    server = parser.add_argument_group("the server (--serve)")
    server.add_argument("--serve", action="store_true", help="run the soak server instead")
    server.add_argument("--port", type=int, default=8090)
    server.add_argument("--nofile", type=int, default=None, help="RLIMIT_NOFILE (default: the hard limit)")
    server.add_argument("--max-connections", type=int, default=None)
    server.add_argument("--keepalive-timeout", type=float, default=5.0)
    server.add_argument("--write-timeout", type=float, default=30.0)
    args = parser.parse_args(argv)
    if args.serve:
        return serve(args)
    report = soak(args)
    if args.json:
        print(json.dumps({**asdict(report), "passed": report.passed}))
    else:
        print_report(report)
    return 0 if report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
