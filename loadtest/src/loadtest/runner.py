"""The load generator: closed-loop, open-loop and SSE phases on one flowno event loop.

Design, around flowno 0.1.19 (see ``docs/flowno-upstream.md``):

* One task per virtual user (closed/SSE) or per open-loop worker, never one per request: the
  loop keeps every finished task forever.
* A sleeping task cannot be woken, so every sleep is short or ends before the phase deadline, and
  every request carries a timeout: each phase stops by itself, at most one timeout after its end.
* Only one loop may run per process, so all phases of a sweep run on a single loop
  (:func:`run_scenario`), one :class:`~flowno_io.HttpClient` per phase.

Timing uses ``time.perf_counter`` (the clock flowno's ``sleep`` uses too).
"""

from __future__ import annotations

import gc
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from time import perf_counter, thread_time
from typing import Any

from flowno import Event, spawn

from flowno_io import EventLoop, Headers, HttpClient, Response, Timeout, sleep, streaming_response_is_ok

from .result import (
    GENERATOR_CPU_LIMIT,
    GENERATOR_LAG_LIMIT_MS,
    STALL_NOTE_FACTOR,
    GeneratorLoad,
    PhaseResult,
    RunResult,
)
from .scenario import RequestPicker, RequestSpec, Scenario
from .schedule import ArrivalSchedule
from .stats import EventIdTracker, RequestStats, StreamStats

__all__ = [
    "GENERATOR_CPU_LIMIT",
    "GENERATOR_LAG_LIMIT_MS",
    "STALL_NOTE_FACTOR",
    "GeneratorLoad",
    "PhaseResult",
    "RunResult",
    "run_scenario",
    "run_scenario_async",
]

#: Seconds between progress-line refreshes.
PROGRESS_INTERVAL = 0.5
#: Idle keep-alive connections are kept this long by the client (longer than any gap in a phase).
KEEPALIVE_EXPIRY = 30.0
#: Seconds between the generator self-check's samples of its own event-loop lag.
GENERATOR_SAMPLE_INTERVAL = 0.05
#: Container objects allocated between two runs of the cyclic GC while a scenario runs
#: (CPython's default is 700). A request allocates dozens (coroutines, dicts, tuples), so by
#: default the collector ran every ~20 requests and walked the users' suspended coroutines each
#: time: ~14,000 instructions per request with the objects of the start-up also frozen
#: (callgrind, ``bench/experiments/NOTES.md``, round four). Garbage cycles are still collected.
RUN_GC_THRESHOLD = 10_000


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _error_kind(exc: BaseException) -> str:
    return type(exc).__name__


class _Phase:
    """The shared state of a running phase: limits, the client, the stats, the start gate.

    Users are spawned first and wait at :attr:`gate`; :meth:`begin` starts the clock and opens
    the gate, so every user starts at once and spawning them (one loop turn each, behind every
    ready task) is not part of the measured time.
    """

    def __init__(self, scenario: Scenario, result: PhaseResult, client: HttpClient) -> None:
        self.scenario = scenario
        self.result = result
        #: The statistics of a request/response phase (``None`` for an SSE one).
        self.request_stats = result.stats if isinstance(result.stats, RequestStats) else None
        self.client = client
        self.gate = Event()
        self.start = math.inf
        self.deadline = math.inf
        self.cpu_start = 0.0
        self.users_done: float | None = None
        self.count = scenario.count
        self.issued = 0
        self.schedule: ArrivalSchedule | None = None
        self.active_users = 0
        self.headers = {spec.name: (dict(spec.headers) or None) for spec in scenario.requests}
        # The same, checked once here (the client copies them to add a request's traceparent);
        # invalid ones are sent as given, so that each request fails with the client's error.
        self.request_headers: dict[str, Headers | dict[str, str] | None] = {}
        for name, headers in self.headers.items():
            try:
                self.request_headers[name] = None if headers is None else Headers(headers)
            except (ValueError, TypeError):
                self.request_headers[name] = headers

    async def begin(self) -> None:
        """Start the clock (and the arrival schedule) and release the waiting users."""
        self.start = start = perf_counter()
        self.cpu_start = thread_time()
        duration = self.scenario.duration
        self.deadline = math.inf if duration is None else start + duration
        rate = self.result.rate
        if rate is not None:
            self.schedule = ArrivalSchedule(rate, start, duration, self.count)
            self.deadline = self.schedule.window_end
            self.result.planned = self.schedule.planned
        await self.gate.set()

    async def user_started(self) -> None:
        """Wait for the gate, then count the user (for ``users_started`` and ``ramp_up``)."""
        await self.gate.wait()
        now = perf_counter()
        if now < self.deadline:
            self.result.users_started += 1
            self.result.ramp_up = now - self.start

    def may_start(self) -> bool:
        """Claim the right to start one more request/stream (False once a limit is reached)."""
        if perf_counter() >= self.deadline:
            return False
        if self.count is not None:
            if self.issued >= self.count:
                return False
            self.issued += 1
        return True


class LoadRunner:
    """Runs a scenario's phases on the current flowno loop.

    Args:
        scenario: a checked scenario (:meth:`Scenario.checked`).
        progress: called with a one-line status about twice a second (``None``: silent) and with
            ``None`` when a phase ends.
        client_options: extra ``HttpClient`` keyword arguments.
    """

    def __init__(
        self,
        scenario: Scenario,
        progress: Callable[[str | None], None] | None = None,
        client_options: dict[str, Any] | None = None,
    ) -> None:
        self.scenario = scenario
        self.progress = progress
        self.client_options = client_options or {}
        #: Called (blocking) with each phase's index before it starts: ``--processes`` lines the
        #: processes' phases up with it.
        self.before_phase: Callable[[int], None] | None = None
        self.result = RunResult(scenario, started_at=_now_iso())
        self._current: _Phase | None = None
        self._running = False

    async def run(self) -> RunResult:
        """Run every phase in order; the result is also kept in :attr:`result` as it grows."""
        self._running = True
        self.result.started_at = _now_iso()
        ticker = await spawn(self._progress_ticker()) if self.progress is not None else None
        try:
            for index, (concurrency, rate) in enumerate(self.scenario.phases()):
                if self.before_phase is not None:
                    self.before_phase(index)
                await self.run_phase(index, concurrency, rate)
        finally:
            self._running = False
            self.result.finished_at = _now_iso()
            if ticker is not None:
                await ticker.join()
        return self.result

    def _new_client(self, concurrency: int) -> HttpClient:
        limit = self.scenario.timeout
        streaming = self.scenario.mode == "sse"
        options: dict[str, Any] = {
            "timeout": Timeout(
                connect=limit, read=limit, write=limit, pool=limit, total=None if streaming else limit
            ),
            "max_connections_per_host": concurrency,
            "keepalive_expiry": KEEPALIVE_EXPIRY,
            "user_agent": "flowno-loadtest/0.1",
            # Each request its own W3C trace, so the server's logs and traces can be matched to it.
            "start_traces": not streaming,
        }
        if streaming:
            options["max_body_bytes"] = None
        options.update(self.client_options)
        return HttpClient(**options)

    async def run_phase(self, index: int, concurrency: int, rate: float | None) -> PhaseResult:
        """Run one phase with ``concurrency`` users (or workers, at ``rate`` arrivals/s)."""
        scenario = self.scenario
        interval = _timeline_interval(scenario.duration)
        stats: RequestStats | StreamStats = (
            StreamStats(interval) if scenario.mode == "sse" else RequestStats(interval)
        )
        result = PhaseResult(
            index=index,
            mode=scenario.mode,
            concurrency=concurrency,
            rate=rate,
            duration=scenario.duration,
            count=scenario.count,
            started_at=_now_iso(),
            stats=stats,
        )
        self.result.phases.append(result)
        client = self._new_client(concurrency)
        phase = _Phase(scenario, result, client)
        self._current = phase
        user: Callable[[_Phase, int], Any]
        if scenario.mode == "closed":
            user = self._closed_user
        elif scenario.mode == "open":
            user = self._open_worker
        else:
            user = self._stream_user
        try:
            handles = []
            for number in range(concurrency):
                phase.active_users += 1
                handles.append(await spawn(user(phase, number)))
            await phase.begin()
            watcher = await spawn(self._watch_generator(phase))
            for handle in handles:
                await handle.join()
            phase.users_done = perf_counter()
            await watcher.join()
        finally:
            self._close_phase(phase)
        result.finished = True
        return result

    def _close_phase(self, phase: _Phase) -> None:
        """Fill in the phase's elapsed time and schedule outcome, and close its client."""
        result = phase.result
        end = phase.users_done if phase.users_done is not None else perf_counter()
        result.elapsed = end - phase.start if phase.start != math.inf else 0.0
        if result.elapsed > 0:
            result.generator.cpu = (thread_time() - phase.cpu_start) / result.elapsed
        if phase.schedule is not None:
            result.unsent = phase.schedule.unsent
            result.behind = phase.schedule.behind()
        phase.client.close()
        self._current = None
        if self.progress is not None:
            self.progress(None)

    def abort(self) -> None:
        """Wrap up after the loop was stopped from outside (Ctrl-C): the running phase is partial."""
        self.result.interrupted = True
        self.result.finished_at = _now_iso()
        if self._current is not None:
            self._close_phase(self._current)

    # -- users ----------------------------------------------------------------------------------

    def _picker(self, number: int) -> RequestPicker:
        seed = self.scenario.seed if self.scenario.seed is not None else 0x10AD
        return RequestPicker(self.scenario.requests, seed=seed * 1_000_003 + number)

    async def _exchange(self, phase: _Phase, spec: RequestSpec, due: float, sent: float) -> None:
        """Send one request and record it (latency from ``due``, service time from ``sent``)."""
        headers = phase.request_headers[spec.name]  # (the client adds a new traceparent to each)
        try:
            response = await phase.client.request(spec.method, spec.url, spec.body, headers=headers)
        except Exception as exc:  # every failure is a result, never the end of a user
            _record_failure(phase, spec, due, sent, exc)
        else:
            _record_response(phase, spec, due, sent, response)

    async def _think(self, phase: _Phase) -> None:
        think = self.scenario.think_time
        if think > 0:
            remaining = phase.deadline - perf_counter()
            if remaining > 0:
                await sleep(min(think, remaining))

    async def _closed_user(self, phase: _Phase, number: int) -> None:
        """A virtual user: request, wait for the response, (think,) repeat until a limit.

        What :meth:`_exchange` does, written out: one coroutine less per request, and one level
        less for each resumption of the user's task.
        """
        pick = self._picker(number).pick
        await phase.user_started()
        request, headers = phase.client.request, phase.request_headers
        try:
            thinks = self.scenario.think_time > 0  # (else no coroutine per request for it)
            while phase.may_start():
                spec = pick()
                sent = perf_counter()
                try:  # (the client adds a new traceparent to each request)
                    response = await request(spec.method, spec.url, spec.body, headers=headers[spec.name])
                except Exception as exc:  # every failure is a result, never the end of a user
                    _record_failure(phase, spec, sent, sent, exc)
                else:
                    _record_response(phase, spec, sent, sent, response)
                if thinks:
                    await self._think(phase)
        finally:
            phase.active_users -= 1

    async def _open_worker(self, phase: _Phase, number: int) -> None:
        """An open-loop worker: claim the next due arrival, wait for its time, send it."""
        stats = phase.result.stats
        assert isinstance(stats, RequestStats)
        picker = self._picker(number)
        await phase.user_started()
        schedule = phase.schedule  # made when the gate opened
        assert schedule is not None
        try:
            while True:
                now = perf_counter()
                index = schedule.claim(now)
                if index is None:
                    return
                due = schedule.due(index)
                if due > now:
                    await sleep(due - now)
                    now = perf_counter()
                stats.record_lag(now - due)
                await self._exchange(phase, picker.pick(), due, now)
        finally:
            phase.active_users -= 1

    async def _stream_user(self, phase: _Phase, number: int) -> None:
        """An SSE user: open a stream, read it to the end (or the deadline), repeat."""
        stats = phase.result.stats
        assert isinstance(stats, StreamStats)
        picker = self._picker(number)
        await phase.user_started()
        try:
            while phase.may_start():
                await self._one_stream(phase, stats, picker.pick())
                await self._think(phase)
        finally:
            phase.active_users -= 1

    async def _one_stream(self, phase: _Phase, stats: StreamStats, spec: RequestSpec) -> None:
        """One logical stream: open it, read it to the end (or the deadline); with ``reconnect``,
        reopen it with ``Last-Event-ID`` each time the server closes it, until the server answers
        204 (the EventSource rule for "stop") or the phase ends."""
        start = phase.start
        stats.started += 1
        first_sent = sent = perf_counter()
        tracker = EventIdTracker()
        headers = phase.headers[spec.name]
        previous: float | None = None
        closed_at: float | None = None  # when the server closed the stream we are resuming
        cut = False
        try:
            while True:
                try:
                    response = await phase.client.stream_request(
                        spec.method, spec.url, spec.body, headers=headers
                    )
                except Exception as exc:
                    stats.record_failure(perf_counter() - start, _error_kind(exc), str(exc))
                    return
                status = response.status_code
                stats.record_open(status)
                if closed_at is not None and status == 204:
                    await response.aclose()
                    break  # nothing left to resume: the stream is complete
                if not streaming_response_is_ok(response) or not spec.is_expected(status):
                    await response.aclose()
                    stats.record_failure(perf_counter() - start, f"HTTP {status}", "")
                    return
                done = False
                try:
                    async for event in response.events():
                        now = perf_counter()
                        if event.data == "[DONE]":  # the OpenAI end marker is not a payload event
                            done = True
                        else:
                            before = tracker.last
                            skipped = tracker.observe(event.id)
                            if closed_at is not None:
                                stats.record_resume(now - closed_at, skipped if before is not None else 0)
                                closed_at = None
                            if previous is None:
                                stats.record_first_event(now - start, now - sent)
                            else:
                                stats.record_event(now - start, now - previous)
                            previous = now
                        if now >= phase.deadline:
                            cut = True
                            break
                except Exception as exc:
                    stats.record_failure(perf_counter() - start, _error_kind(exc), str(exc))
                    return
                finally:
                    await response.aclose()
                if cut or done or not self.scenario.reconnect or perf_counter() >= phase.deadline:
                    break
                # The server closed the stream: reconnect as an EventSource does.
                stats.record_reconnect()
                closed_at = sent = perf_counter()
                if tracker.last is not None:
                    headers = {**(headers or {}), "Last-Event-ID": str(tracker.last)}
        finally:
            stats.record_ids(tracker)
        stats.record_end(perf_counter() - first_sent, cut=cut)

    async def _watch_generator(self, phase: _Phase) -> None:
        """The self-check: how late the loop wakes a timer, every GENERATOR_SAMPLE_INTERVAL s.

        A loop busy with its own ready tasks (or starved of CPU) fires timers late; the same
        delay holds back every send and every read of the phase.
        """
        lag = phase.result.generator.lag
        while phase.active_users > 0:
            due = perf_counter() + GENERATOR_SAMPLE_INTERVAL
            await sleep(GENERATOR_SAMPLE_INTERVAL)
            lag.record_seconds(perf_counter() - due)

    # -- progress -------------------------------------------------------------------------------

    async def _progress_ticker(self) -> None:
        report = self.progress
        assert report is not None
        while self._running:
            await sleep(PROGRESS_INTERVAL)
            phase = self._current
            if phase is not None and self._running and phase.start != math.inf:
                report(progress_text(phase.result, perf_counter() - phase.start, len(self.scenario.phases())))


def _record_response(phase: _Phase, spec: RequestSpec, due: float, sent: float, response: Response) -> None:
    """Record a response to ``spec`` (latency from ``due``, service time from ``sent``)."""
    end = perf_counter()
    stats = phase.request_stats
    assert stats is not None
    status = response.status_code
    timing = response.headers._fields.get("server-timing")  # (no Headers.get: only one is read)
    stats.record_response(
        spec.name,
        end - phase.start,
        end - due,
        status=status,
        ok=spec.is_expected(status),
        size=len(response.body),
        service=end - sent,
        server=None if timing is None else server_time_of(", ".join(timing)),
    )


def _record_failure(phase: _Phase, spec: RequestSpec, due: float, sent: float, exc: Exception) -> None:
    """Record a request to ``spec`` that failed without a response."""
    end = perf_counter()
    stats = phase.request_stats
    assert stats is not None
    stats.record_error(
        spec.name, end - phase.start, end - due, _error_kind(exc), str(exc), service=end - sent
    )


def server_time_of(header: str | None) -> float | None:
    """Seconds in a ``Server-Timing`` header's ``app`` metric (``app;dur=<ms>``), else ``None``.

    >>> server_time_of("db;dur=2, app;dur=1.5")
    0.0015
    >>> server_time_of("app") is None, server_time_of(None) is None, server_time_of("app;dur=x") is None
    (True, True, True)
    """
    if not header:
        return None
    for metric in header.split(","):
        name, _, params = metric.strip().partition(";")
        if name.strip() != "app":
            continue
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "dur":
                try:
                    return float(value.strip().strip('"')) / 1000
                except ValueError:
                    return None
    return None


def _timeline_interval(duration: float | None) -> float:
    """Timeline resolution: 1 s, coarser for long phases (about 120 intervals at most)."""
    if duration is None:
        return 1.0
    return max(1.0, duration / 120.0)


def progress_text(result: PhaseResult, elapsed: float, phases: int) -> str:
    """The live status line of a running phase."""
    stats = result.stats
    limit = f"/{result.duration:g}s" if result.duration is not None else ""
    head = f"[{result.index + 1}/{phases} {result.mode} {result.label}] {elapsed:5.1f}s{limit}"
    rate_base = max(elapsed, 1e-9)
    errors = sum(stats.errors.values())
    if isinstance(stats, RequestStats):
        p99 = stats.latency.value_at_percentile(99) / 1000
        return (
            f"{head}  {stats.completed:,} req  {stats.completed / rate_base:,.0f} req/s  "
            f"p99 {p99:,.1f} ms  errors {errors:,}"
        )
    ttfe = stats.time_to_first_event.value_at_percentile(99) / 1000
    return (
        f"{head}  {stats.started:,} streams  {stats.events / rate_base:,.0f} events/s  "
        f"ttfe p99 {ttfe:,.1f} ms  errors {errors:,}"
    )


async def run_scenario_async(
    scenario: Scenario, progress: Callable[[str | None], None] | None = None, **client_options: Any
) -> RunResult:
    """Run ``scenario`` on the current flowno loop (for tests that also serve on that loop)."""
    return await LoadRunner(scenario, progress, client_options).run()


def run_scenario(
    scenario: Scenario,
    progress: Callable[[str | None], None] | None = None,
    *,
    before_phase: Callable[[int], None] | None = None,
    **client_options: Any,
) -> RunResult:
    """Run ``scenario`` on a new flowno ``EventLoop`` (one per process at a time) and return the result.

    ``before_phase`` is called with each phase's index before it starts (blocking the loop).
    On ``KeyboardInterrupt`` the phases finished so far are returned, marked ``interrupted``.
    """
    runner = LoadRunner(scenario, progress, client_options)
    runner.before_phase = before_phase
    try:
        with _lean_gc():
            EventLoop().run_until_complete(runner.run(), join=True)
    except KeyboardInterrupt:
        runner.abort()
    finally:
        if progress is not None:
            progress(None)
    return runner.result


@contextmanager
def _lean_gc() -> Iterator[None]:
    """Run with the objects made so far frozen (never traversed again) and a less eager cyclic
    GC (:data:`RUN_GC_THRESHOLD`); both as they were afterwards."""
    thresholds = gc.get_threshold()
    gc.collect()
    gc.freeze()
    gc.set_threshold(RUN_GC_THRESHOLD, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
