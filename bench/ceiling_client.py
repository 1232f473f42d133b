"""One generator process of the ceiling bench: N live event streams held by the load-test orchestrator.

The streams are the orchestrator's SSE users (:class:`loadtest.runner.LoadRunner`, one phase of
``--streams`` users for ``--hold`` seconds, connections bound to ``--source``); each event's
``data: {"t": <send time>}`` gives the delivery latency (wall clock, same machine), recorded per
tick id, and each id's receipts are counted so that the harness can count lost ticks.

Two ways to read the events (``--reader``):

* ``sse`` — each user reads its stream with the client's own SSE decoder
  (``response.events()``): one task wake-up, decoder pass and event object per tick per stream.
  On this 2-core machine that costs the generator ~60-70 µs of CPU per tick delivered, 3x the
  server's, so at 19,000 streams the generators, not the server, set the tick latency.
* ``shared`` (default) — the orchestrator's users open the streams (pacing, source address,
  ``HttpClient.stream_request``, status check) and then hold them while one task of the
  process reads every stream's socket from one ``epoll`` and finds the ticks in the raw bytes: a
  tick costs one ``recv`` and an append (the bytes are searched after the window), so the
  latency measured is the server's fan-out and the kernel's, not the generator's backlog. While
  a fan-out's ticks arrive the reader polls every 2 ms instead of waiting (``POLL_EVERY``): a
  waiting reader is woken by the first tick of each poll and, on a loaded machine, preempts the
  server in the middle of its fan-out.

Opens are paced (``--open-rate``) and at most ``MAX_OPENING`` are under way at once, so that a
saturated machine opens more slowly instead of failing opens.

Protocol with ``bench/ceiling.py`` (one JSON object per stdout line): ``{"open": n, "failed": f,
"base_rss_kib": r}`` once every stream has its response head (or ``--open-timeout`` has passed);
the harness then writes ``stop <wall-clock time>`` on stdin, and at that time the generator prints
``{"result": {...}}`` and exits (its streams are cut, as a phase's end cuts them).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import re
import select
import socket
import sys
import time
from collections import deque
from pathlib import Path
from time import perf_counter
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent / "apps"))

from _ceiling_payloads import raise_fd_limit
from flowno import spawn

from flowno_io import EventLoop, HttpClient, sleep, streaming_response_is_ok
from flowno_io.io.poller import HANGUP, MAX_EVENTS, READABLE, Poller
from flowno_io.io.wakeup import Wakeup
from loadtest.histogram import LogLinearHistogram
from loadtest.runner import LoadRunner, _error_kind, _Phase
from loadtest.scenario import RequestPicker, RequestSpec, Scenario
from loadtest.stats import StreamStats

#: File descriptors a generator process needs besides its streams.
SPARE_FDS = 64
#: A tick in the raw bytes of a stream (``id:`` then ``data:`` lines, inside one chunk).
_TICK = re.compile(rb'id: (\d+)\ndata: \{"t": ([0-9.]+)\}')
#: Bytes of a read kept for the next one, where a tick cut by the read boundary is completed.
_TAIL = 128
#: Streams one generator process opens at once at most (connect, request, response head). At the
#: paced rate only a few are under way; when the machine is saturated (several server and
#: generator processes on 2 cores) the opens queued beyond this wait here rather than in the
#: server's accept queue, where they overflowed it (SYN retries, connect timeouts) or waited past
#: the server's 10 s header timeout (closed unread: ReadError, RemoteProtocolError) at 100,000.
MAX_OPENING = 128
#: Seconds between two polls of the shared reader while ticks arrive, and polls in a row that find
#: nothing before it waits again. Waiting costs: each wait registers the reader's epoll with the
#: loop's selector, where the kernel walks every socket inside it (~1.4 ms at 9,500 sockets), and
#: every socket that turns readable then wakes the process, which preempts the server in the
#: middle of its fan-out on a loaded machine. Polling every 2 ms during a fan-out (as a network
#: card coalesces interrupts) reads ~100 ticks per poll instead of a few per wake-up, for at most
#: 2 ms more latency.
POLL_EVERY = 0.002
QUIET_POLLS = 5


def tick_time(data: str) -> float | None:
    """The send time in a tick's ``data`` (``{"t": 1700000000.123456}``), ``None`` if absent.

    >>> tick_time('{"t": 1700000000.5}')
    1700000000.5
    >>> tick_time("hello") is None
    True
    """
    if not data.startswith('{"t":'):
        return None
    try:
        return float(data[5:-1])
    except ValueError:
        return None


class SharedTickReader:
    """Reads every held stream's socket from one ``epoll`` in one task; records each tick."""

    def __init__(self, runner: TickRunner) -> None:
        self.runner = runner
        self.poller = Poller()
        self.sockets: dict[int, socket.socket] = {}
        self.tails: dict[int, bytes] = {}
        self.running = False
        #: Latency samples (seconds) by tick id, put in histograms at the end (``fold``): a list
        #: append is ~20x cheaper than a histogram record in the middle of a fan-out.
        self.samples: dict[int, list[float]] = {}
        #: The send times (``data``'s ``t``) by tick id: one per server process that sent it.
        self.sent: dict[bytes, set[bytes]] = {}
        #: Reads that ended on an event's end, with their time, searched for ticks later
        #: (``parse``): a fan-out's reads cost a ``recv`` and an append each.
        self.reads: list[tuple[float, bytes]] = []

    def parse(self) -> None:
        """Find the ticks of the reads kept by :meth:`read`; their latencies go to ``samples``."""
        for now, data in self.reads:
            self.record(now, data)
        self.reads = []

    def record(self, now: float, data: bytes) -> int:
        """Record the ticks in ``data``, read at ``now``; the offset after the last one."""
        samples = self.samples
        sent = self.sent
        end = 0
        for match in _TICK.finditer(data):
            seq = int(match.group(1))
            values = samples.get(seq)
            if values is None:
                values = samples[seq] = []
                sent[match.group(1)] = set()
            values.append(now - float(match.group(2)))
            sent[match.group(1)].add(match.group(2))
            end = match.end()
        return end

    def fold(self) -> None:
        """Move the samples into the runner's histograms and receipt counts."""
        self.parse()
        for seq, values in self.samples.items():
            histogram = self.runner.latency.get(seq)
            if histogram is None:
                histogram = self.runner.latency[seq] = LogLinearHistogram()
            for value in values:
                histogram.record_seconds(max(0.0, value))
            self.runner.received[seq] = self.runner.received.get(seq, 0) + len(values)
        for seq_bytes, times in self.sent.items():
            self.runner.sent.setdefault(int(seq_bytes), set()).update(float(t) for t in times)
        self.samples = {}
        self.sent = {}

    def add(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        self.sockets[fd] = sock
        self.poller.register(fd, READABLE | HANGUP)

    def remove(self, sock: socket.socket) -> None:
        fd = sock.fileno()
        if self.sockets.pop(fd, None) is not None:
            self.tails.pop(fd, None)
            self.poller.unregister(fd)

    async def run(self) -> None:
        """Wait for a first ready socket, then poll without waiting every ``POLL_EVERY`` s until
        ``QUIET_POLLS`` polls in a row find nothing (the tick's fan-out is over), then wait again."""
        poller = self.poller
        while True:
            await poller.wait()
            quiet = 0
            while quiet < QUIET_POLLS:
                events = poller.ready()
                if events:
                    quiet = 0
                    self.read(events)
                    if len(events) >= MAX_EVENTS:
                        continue  # more are ready now
                else:
                    quiet += 1
                await sleep(POLL_EVERY)

    def read(self, events: list[tuple[int, int]]) -> None:
        """Read the ready sockets; record each tick found (its latency, by id)."""
        sockets = self.sockets
        tails = self.tails
        reads = self.reads
        for fd, _mask in events:
            sock = sockets.get(fd)
            if sock is None:
                continue
            try:
                data = sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:
                self.poller.unregister(fd)  # the server closed it: the user sees it at the end
                del sockets[fd]
                continue
            now = time.time()
            tail = tails.pop(fd, None)
            if tail:
                data = tail + data
            if data[-4:] == b"\n\n\r\n" or data[-2:] == b"\n\n":  # whole events (chunked or not)
                reads.append((now, data))
                continue
            end = self.record(now, data)
            if len(data) - end > 2:  # a tick may continue in the next read
                tails[fd] = data[max(end, len(data) - _TAIL) :]


class OpeningWindow:
    """At most ``size`` streams opening at once (connect, request, response head), first come
    first served: when the server falls behind, opening slows down instead of timing out."""

    def __init__(self, size: int) -> None:
        self.free = size
        self.waiting: deque[Wakeup] = deque()

    async def acquire(self) -> None:
        if self.free > 0 and not self.waiting:
            self.free -= 1
            return
        wakeup = Wakeup()
        self.waiting.append(wakeup)
        await wakeup.wait()  # the slot is handed over by release()

    def release(self) -> None:
        if self.waiting:
            self.waiting.popleft().set()
        else:
            self.free += 1


class TickRunner(LoadRunner):
    """The orchestrator's SSE users, recording each tick's latency and receipts by id."""

    def __init__(
        self,
        scenario: Scenario,
        local_address: str | None,
        open_timeout: float,
        open_rate: float | None = None,
        reader: str = "shared",
    ) -> None:
        #: Source addresses, one client each, taken in turn by the streams opened.
        self.sources = local_address.split(",") if local_address else []
        options = {"local_address": self.sources[0]} if self.sources else {}
        super().__init__(scenario, None, options)
        self.clients: list[HttpClient] = []
        self._opened = 0
        self.open_timeout = open_timeout
        self.open_rate = open_rate
        self.base_rss_kib = _rss_kib()
        self.latency: dict[int, LogLinearHistogram] = {}
        self.received: dict[int, int] = {}
        self.sent: dict[int, set[float]] = {}
        self.opened_at: float | None = None
        self.shared = SharedTickReader(self) if reader == "shared" else None
        self.opening = OpeningWindow(MAX_OPENING)
        self._shared_picker: RequestPicker | None = None

    def _new_client(self, concurrency: int) -> HttpClient:
        """The phase's client (the first source address) and one more per further address: with
        one address, ``connect()`` looks for a free port for the one destination among every
        port already taken (25 % of a generator's CPU while opening 15,000 streams)."""
        client = super()._new_client(concurrency)
        self.clients = [client]
        for source in self.sources[1:]:
            self.client_options["local_address"] = source
            self.clients.append(super()._new_client(concurrency))
        if self.sources:
            self.client_options["local_address"] = self.sources[0]
        return client

    async def run_phase(self, index: int, concurrency: int, rate: float | None) -> Any:
        await spawn(self._report(concurrency))
        return await super().run_phase(index, concurrency, rate)

    async def _report(self, wanted: int) -> None:
        """Print ``{"open": n}`` when every stream is open (or failed), or at the open timeout;
        then wait for ``stop <time>`` on stdin, and at that time print the result and exit."""
        deadline = perf_counter() + self.open_timeout
        while True:
            phase = self._current
            if phase is not None:
                stats = phase.result.stats
                assert isinstance(stats, StreamStats)
                if stats.opened + stats.failed >= wanted or perf_counter() >= deadline:
                    self.opened_at = time.time()
                    _emit({"open": stats.opened, "failed": stats.failed, "base_rss_kib": self.base_rss_kib})
                    break
            # What the streams opened so far hold lives until the end: out of the cyclic GC's
            # way, whose full collections otherwise walk every held stream again (13 % of the
            # CPU of opening 15,000 streams).
            gc.freeze()
            await sleep(0.1)
        stop_at: float | None = None
        while stop_at is None:
            ready, _, _ = select.select([sys.stdin], [], [], 0)
            if ready:
                line = sys.stdin.readline()
                if not line:  # the harness went away
                    os._exit(1)
                if line.startswith("stop "):
                    stop_at = float(line.split()[1])
            else:
                await sleep(0.1)
        await sleep(max(0.0, stop_at - time.time()))
        _emit({"result": self.summary()})
        os._exit(0)  # the streams are cut with the process, as a phase's end would cut them

    def summary(self) -> dict[str, Any]:
        """What the harness needs: streams opened and failed, ticks received and their latency by id."""
        if self.shared is not None:
            self.shared.fold()
        phase = self.result.phases[-1]
        stats = phase.stats
        assert isinstance(stats, StreamStats)
        return {
            "opened": stats.opened,
            "failed": stats.failed,
            "errors": dict(stats.errors),
            "error_samples": {kind: samples[:2] for kind, samples in stats.error_samples.items()},
            "received": {str(seq): count for seq, count in self.received.items()},
            "sent": {str(seq): sorted(times) for seq, times in self.sent.items()},
            "latency": {str(seq): hist.to_dict() for seq, hist in self.latency.items()},
            "generator_lag_p99_ms": phase.generator.lag.value_at_percentile(99) / 1000,
        }

    def _picker(self, number: int) -> RequestPicker:
        """One picker for every user: the scenario has one request, and the orchestrator's picker
        per user carries a ``random.Random`` (~2.8 KiB, a third of what a held stream costs here)."""
        if self._shared_picker is None:
            self._shared_picker = super()._picker(0)
        return self._shared_picker

    async def _stream_user(self, phase: _Phase, number: int) -> None:
        """The orchestrator's SSE user, its first connect paced at ``open_rate`` streams/s: all at
        once, 19,000 SYNs overflow the server's accept queue and the dropped ones retry for
        seconds (some past the connect timeout)."""
        if self.open_rate:
            await phase.gate.wait()
            await sleep(number / self.open_rate)
        await super()._stream_user(phase, number)

    async def _one_stream(self, phase: _Phase, stats: StreamStats, spec: RequestSpec) -> None:
        """Open one stream and read it until the phase ends, recording every tick."""
        await self.opening.acquire()
        stats.started += 1
        sent = perf_counter()
        try:
            client = self.clients[self._opened % len(self.clients)] if self.clients else phase.client
            self._opened += 1
            response = await client.stream_request(spec.method, spec.url, headers=phase.headers[spec.name])
        except Exception as exc:
            stats.record_failure(perf_counter() - phase.start, _error_kind(exc), str(exc))
            return
        finally:
            self.opening.release()
        stats.record_open(response.status_code)
        if not streaming_response_is_ok(response):
            await response.aclose()
            stats.record_failure(perf_counter() - phase.start, f"HTTP {response.status_code}", "")
            return
        shared = self.shared
        if shared is not None:  # hand the socket to the shared reader, hold the stream (inline:
            sock = response._reader._connection.stream.sock  # one coroutine frame less per stream)
            shared.add(sock)
            if not shared.running:
                shared.running = True
                await spawn(shared.run())
            try:
                await sleep(max(0.0, phase.deadline - perf_counter()))
            finally:
                shared.remove(sock)
                await response.aclose()
            stats.record_end(perf_counter() - sent, cut=True)
            return
        latency = self.latency
        received = self.received
        first = True
        try:
            async for event in response.events():
                now = perf_counter()
                sent_at = tick_time(event.data)
                if sent_at is not None:
                    seq = int(event.id) if event.id else -1
                    histogram = latency.get(seq)
                    if histogram is None:
                        histogram = latency[seq] = LogLinearHistogram()
                    histogram.record_seconds(max(0.0, time.time() - sent_at))
                    received[seq] = received.get(seq, 0) + 1
                    self.sent.setdefault(seq, set()).add(sent_at)
                    stats.events += 1
                    if first:
                        stats.record_first_event(now - phase.start, now - sent)
                        first = False
                if now >= phase.deadline:
                    break
        except Exception as exc:
            if perf_counter() < phase.deadline:
                stats.record_failure(perf_counter() - phase.start, _error_kind(exc), str(exc))
                return
        finally:
            await response.aclose()
        stats.record_end(perf_counter() - sent, cut=True)


def _rss_kib() -> int:
    """This process's resident set size in KiB."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * (os.sysconf("SC_PAGE_SIZE") // 1024)


def _emit(message: dict[str, Any]) -> None:
    print(json.dumps(message), flush=True)


def main() -> None:
    """Open ``--streams`` streams, report, hold them until told to stop."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="http://127.0.0.1:PORT/ticks")
    parser.add_argument("--streams", type=int, required=True)
    parser.add_argument(
        "--source", help="source addresses of the connections, comma-separated (e.g. 127.0.0.2,127.0.1.2)"
    )
    parser.add_argument("--open-timeout", type=float, default=120.0)
    parser.add_argument(
        "--open-rate", type=float, default=None, help="streams opened per second (default: all at once)"
    )
    parser.add_argument(
        "--reader",
        choices=("shared", "sse"),
        default="shared",
        help="read the ticks from one epoll (shared) or with each user's SSE decoder (sse)",
    )
    parser.add_argument(
        "--hold", type=float, default=900.0, help="seconds at most (a bound if never stopped)"
    )
    args = parser.parse_args()
    raise_fd_limit(args.streams + SPARE_FDS)
    base, _, path = args.url.partition("/ticks")
    spec = RequestSpec("GET /ticks", path="/ticks" + path)
    scenario = Scenario(
        "ceiling",
        base,
        "sse",
        (spec,),
        concurrency=(args.streams,),
        duration=args.hold,
        count=args.streams,
        timeout=120.0,  # connect and per-read: a saturated machine accepts late, and giving up only adds work
    ).checked()
    runner = TickRunner(scenario, args.source, args.open_timeout, args.open_rate, args.reader)
    EventLoop().run_until_complete(runner.run(), join=True)
    _emit({"result": runner.summary()})


if __name__ == "__main__":
    main()
