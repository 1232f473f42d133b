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

import math
import platform
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from time import perf_counter, thread_time
from typing import Any

from flowno import Event, spawn

from flowno_io import EventLoop, HttpClient, Timeout, sleep, streaming_response_is_ok

from .histogram import LogLinearHistogram
from .scenario import RequestPicker, RequestSpec, Scenario
from .schedule import ArrivalSchedule
from .stats import EventIdTracker, RequestStats, StreamStats, latency_summary
from .thresholds import ThresholdOutcome, outcome_dict, run_checks

__all__ = ["PhaseResult", "RunResult", "run_scenario", "run_scenario_async"]

#: Seconds between progress-line refreshes.
PROGRESS_INTERVAL = 0.5
#: Idle keep-alive connections are kept this long by the client (longer than any gap in a phase).
KEEPALIVE_EXPIRY = 30.0
#: Seconds between the generator self-check's samples of its own event-loop lag.
GENERATOR_SAMPLE_INTERVAL = 0.05
#: A phase is generator-bound when the loop's thread used at least this share of one core ...
GENERATOR_CPU_LIMIT = 0.9
#: ... or when the loop woke the self-check this late (milliseconds, 90th percentile): the
#: generator's own tasks (or the machine) kept it from sending and reading on time.
GENERATOR_LAG_LIMIT_MS = 25.0
#: The closed-loop note appears when the slowest response took this many times the median.
STALL_NOTE_FACTOR = 10.0


@dataclass
class GeneratorLoad:
    """The load generator's own load during a phase (its self-check).

    Attributes:
        cpu: CPU seconds of the event loop's thread / phase wall seconds (1.0: one core busy).
        lag: microseconds the self-check's timer fired late, sampled every
            :data:`GENERATOR_SAMPLE_INTERVAL` seconds: how long ready work kept the loop busy.
        processes: generator processes merged into this one (``--processes``).
        bound_processes: how many of them were saturated.
    """

    cpu: float = 0.0
    lag: LogLinearHistogram = field(default_factory=LogLinearHistogram)
    processes: int = 1
    bound_processes: int = 0

    @property
    def lag_p90_ms(self) -> float:
        """The 90th percentile of the loop lag, in milliseconds."""
        return self.lag.value_at_percentile(90) / 1000

    @property
    def bound(self) -> bool:
        """True when the generator was saturated (its results understate the server)."""
        if self.bound_processes:
            return True
        return self.cpu >= GENERATOR_CPU_LIMIT or self.lag_p90_ms >= GENERATOR_LAG_LIMIT_MS

    def reason(self) -> str:
        """Why the phase is generator-bound (empty when it is not)."""
        if not self.bound:
            return ""
        text = (
            f"generator-bound: results understate the server (loop thread at {self.cpu:.0%} of a core, "
            f"event-loop lag p90 {self.lag_p90_ms:.1f} ms; limits {GENERATOR_CPU_LIMIT:.0%}, "
            f"{GENERATOR_LAG_LIMIT_MS:g} ms)"
        )
        if self.processes > 1:
            text += f"; {self.bound_processes} of {self.processes} processes saturated"
        return text

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the lag histogram in sparse form)."""
        return {
            "cpu": round(self.cpu, 4),
            "lag_ms": latency_summary(self.lag),
            "bound": self.bound,
            "reason": self.reason(),
            "processes": self.processes,
            "bound_processes": self.bound_processes,
            "cpu_limit": GENERATOR_CPU_LIMIT,
            "lag_p90_limit_ms": GENERATOR_LAG_LIMIT_MS,
            "lag_histogram_us": self.lag.to_dict(),
        }


@dataclass
class PhaseResult:
    """The outcome of one phase (one concurrency level, or one rate).

    Attributes:
        index: position in the run (0-based).
        mode: ``closed``, ``open`` or ``sse``.
        concurrency: virtual users (closed/sse) or most requests in flight (open).
        rate: open mode: planned arrivals per second.
        started_at: wall-clock start (UTC, ISO 8601).
        elapsed: seconds from the start until the last user finished.
        stats: :class:`~loadtest.stats.RequestStats` or :class:`~loadtest.stats.StreamStats`.
        planned, unsent, behind: open mode: arrivals planned, never sent, and how far behind the
            schedule (seconds) the phase was when its send window closed.
        users_started: users (or workers) that got to run before the phase ended.
        ramp_up: seconds from the phase start (when all users are released at once) until the
            last of them got its first turn on the loop.
    """

    index: int
    mode: str
    concurrency: int
    rate: float | None
    duration: float | None
    count: int | None
    started_at: str
    stats: RequestStats | StreamStats
    elapsed: float = 0.0
    planned: int = 0
    unsent: int = 0
    behind: float = 0.0
    users_started: int = 0
    ramp_up: float = 0.0
    finished: bool = False
    generator: GeneratorLoad = field(default_factory=GeneratorLoad)
    _corrected: tuple[int, LogLinearHistogram] | None = field(default=None, repr=False, compare=False)

    def expected_interval_us(self) -> int:
        """Closed loop: microseconds between a user's requests when nothing stalls (wrk's rule:
        wall time x users / requests)."""
        stats = self.stats
        if not isinstance(stats, RequestStats) or not stats.completed or self.elapsed <= 0:
            return 0
        return max(1, round(self.elapsed * 1e6 * self.concurrency / stats.completed))

    def corrected_latency(self) -> LogLinearHistogram:
        """Closed loop: the latency histogram back-filled for coordinated omission
        (:meth:`LogLinearHistogram.corrected` with :meth:`expected_interval_us`)."""
        stats = self.stats
        assert isinstance(stats, RequestStats)
        if self._corrected is None or self._corrected[0] != stats.latency.count:
            self._corrected = (stats.latency.count, stats.latency.corrected(self.expected_interval_us()))
        return self._corrected[1]

    @property
    def label(self) -> str:
        """Short name: ``c=100`` or ``rate=500/s c=64``."""
        if self.rate is not None:
            return f"rate={self.rate:g}/s c={self.concurrency}"
        return f"c={self.concurrency}"

    def summary(self) -> dict[str, Any]:
        """The phase's headline numbers, flat (one CSV row)."""
        elapsed = self.elapsed or 1e-9
        row: dict[str, Any] = {
            "phase": self.index,
            "mode": self.mode,
            "concurrency": self.concurrency,
            "rate": self.rate if self.rate is not None else "",
            "elapsed_s": round(self.elapsed, 3),
            "users_started": self.users_started,
            "ramp_up_s": round(self.ramp_up, 3),
        }
        stats = self.stats
        if isinstance(stats, RequestStats):
            latency = latency_summary(stats.latency)
            row.update(
                {
                    "requests": stats.completed,
                    "ok": stats.ok,
                    "failed": stats.failed,
                    "throughput_rps": round(stats.completed / elapsed, 2),
                    "mb_received": round(stats.bytes_received / 1e6, 3),
                }
            )
            row.update({f"{key}_ms": value for key, value in latency.items()})
            row["error_rate"] = round(stats.failed / stats.completed, 6) if stats.completed else 0.0
            if self.mode == "closed":
                corrected = latency_summary(self.corrected_latency())
                row.update({f"co_{key}_ms": corrected[key] for key in ("p50", "p90", "p99", "p99.9", "max")})
            if self.mode == "open":
                lag = latency_summary(stats.send_lag)
                row.update(
                    {
                        "planned": self.planned,
                        "unsent": self.unsent,
                        "behind_s": round(self.behind, 3),
                        "lag_p99_ms": lag["p99"],
                        "lag_max_ms": lag["max"],
                        "service_p99_ms": latency_summary(stats.service_time)["p99"],
                    }
                )
        else:
            ttfe = latency_summary(stats.time_to_first_event)
            gap = latency_summary(stats.event_gap)
            row.update(
                {
                    "streams": stats.started,
                    "completed": stats.completed,
                    "cut": stats.cut,
                    "failed": stats.failed,
                    "events": stats.events,
                    "events_per_s": round(stats.events / elapsed, 2),
                    "streams_per_s": round(stats.completed / elapsed, 2),
                    "ttfe_p50_ms": ttfe["p50"],
                    "ttfe_p99_ms": ttfe["p99"],
                    "ttfe_max_ms": ttfe["max"],
                    "gap_p50_ms": gap["p50"],
                    "gap_p99_ms": gap["p99"],
                    "gap_max_ms": gap["max"],
                    "lost": stats.lost,
                    "duplicated": stats.duplicated,
                    "out_of_order": stats.out_of_order,
                    "reconnects": stats.reconnects,
                    "reconnect_lost": stats.reconnect_lost,
                    "resume_p50_ms": latency_summary(stats.time_to_resume)["p50"],
                    "resume_max_ms": latency_summary(stats.time_to_resume)["max"],
                    "error_rate": round(stats.failed / stats.started, 6) if stats.started else 0.0,
                }
            )
        row["errors"] = sum(stats.errors.values())
        row["gen_cpu"] = round(self.generator.cpu, 3)
        row["gen_lag_p90_ms"] = round(self.generator.lag_p90_ms, 3)
        row["generator_bound"] = int(self.generator.bound)
        return row

    def to_dict(self) -> dict[str, Any]:
        """Everything about the phase, JSON-ready (histograms in sparse form)."""
        stats = self.stats
        data: dict[str, Any] = {
            "index": self.index,
            "label": self.label,
            "mode": self.mode,
            "concurrency": self.concurrency,
            "rate": self.rate,
            "duration": self.duration,
            "count": self.count,
            "started_at": self.started_at,
            "elapsed_s": self.elapsed,
            "finished": self.finished,
            "summary": self.summary(),
            "errors": dict(stats.errors),
            "error_samples": stats.error_samples,
            "statuses": {str(code): n for code, n in sorted(stats.statuses.items())},
            "timeline_interval_s": stats.timeline.interval,
            "timeline": stats.timeline.rows(end=self.elapsed or None),
            "generator": self.generator.to_dict(),
        }
        if isinstance(stats, RequestStats):
            data["latency_ms"] = latency_summary(stats.latency)
            if self.mode == "closed":
                data["corrected_latency_ms"] = latency_summary(self.corrected_latency())
                data["corrected_note"] = (
                    "latency_ms: from each request's actual send (what the users saw; a stall holds "
                    "only one sample per user). corrected_latency_ms: back-filled for coordinated "
                    "omission as wrk does, from the expected interval "
                    f"{self.expected_interval_us() / 1000:.3f} ms (wall time x users / requests): "
                    "what requests sent on schedule during a stall would have waited."
                )
            data["service_time_ms"] = latency_summary(stats.service_time)
            data["endpoints"] = {name: ep.summary(self.elapsed or 1e-9) for name, ep in stats.by_name.items()}
            data["histograms_us"] = {
                "latency": stats.latency.to_dict(),
                "service_time": stats.service_time.to_dict(),
            }
            if self.mode == "open":
                data["schedule"] = {
                    "planned": self.planned,
                    "sent": self.planned - self.unsent,
                    "unsent": self.unsent,
                    "behind_s": self.behind,
                    "send_lag_ms": latency_summary(stats.send_lag),
                    "note": "latency is measured from each request's intended send time "
                    "(coordinated-omission corrected); service_time from its actual send; "
                    "unsent requests are not in the percentiles",
                }
                data["histograms_us"]["send_lag"] = stats.send_lag.to_dict()
        else:
            data["time_to_first_event_ms"] = latency_summary(stats.time_to_first_event)
            data["event_gap_ms"] = latency_summary(stats.event_gap)
            data["stream_duration_ms"] = latency_summary(stats.stream_duration)
            data["time_to_resume_ms"] = latency_summary(stats.time_to_resume)
            data["event_ids"] = {
                "lost": stats.lost,
                "duplicated": stats.duplicated,
                "out_of_order": stats.out_of_order,
                "untracked": stats.untracked,
                "reconnects": stats.reconnects,
                "reconnect_lost": stats.reconnect_lost,
                "note": "ids are expected to be consecutive integers per stream: a gap counts as lost, "
                "an id from an earlier gap as out of order, a repeated id as duplicated; events "
                "without an integer id are untracked",
            }
            data["histograms_us"] = {
                "time_to_first_event": stats.time_to_first_event.to_dict(),
                "event_gap": stats.event_gap.to_dict(),
                "stream_duration": stats.stream_duration.to_dict(),
                "time_to_resume": stats.time_to_resume.to_dict(),
            }
        return data


@dataclass
class RunResult:
    """A whole run: the scenario and its phases, in order."""

    scenario: Scenario
    phases: list[PhaseResult] = field(default_factory=list)
    started_at: str = ""
    finished_at: str = ""
    interrupted: bool = False
    checks: list[ThresholdOutcome] = field(default_factory=list)
    processes: int = 1

    def check(self, extra_thresholds: tuple[str, ...] = ()) -> list[ThresholdOutcome]:
        """Check the scenario's thresholds (and ``extra_thresholds``) on every phase; kept in
        :attr:`checks` and returned."""
        scenario = self.scenario
        self.checks = run_checks(
            [phase.to_dict() for phase in self.phases],
            scenario.mode,
            (*scenario.thresholds, *extra_thresholds),
            schedule_check=scenario.schedule_check,
            strict=scenario.strict,
        )
        return self.checks

    @property
    def failed_checks(self) -> list[ThresholdOutcome]:
        """The checks that did not hold."""
        return [outcome for outcome in self.checks if not outcome.passed]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form of the run."""
        return {
            "tool": "loadtest (flowno_io.HttpClient on one flowno event loop)",
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "interrupted": self.interrupted,
            "environment": {
                "python": platform.python_version(),
                "platform": platform.platform(),
                "argv": sys.argv,
            },
            "scenario": self.scenario.describe(),
            "processes": self.processes,
            "checks": [outcome_dict(outcome) for outcome in self.checks],
            "phases": [phase.to_dict() for phase in self.phases],
        }


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
        stats = phase.result.stats
        assert isinstance(stats, RequestStats)
        try:
            response = await phase.client.request(
                spec.method, spec.url, spec.body, headers=phase.headers[spec.name]
            )
        except Exception as exc:  # every failure is a result, never the end of a user
            end = perf_counter()
            stats.record_error(
                spec.name, end - phase.start, end - due, _error_kind(exc), str(exc), service=end - sent
            )
            return
        end = perf_counter()
        status = response.status_code
        stats.record_response(
            spec.name,
            end - phase.start,
            end - due,
            status=status,
            ok=spec.is_expected(status),
            size=len(response.body),
            service=end - sent,
        )

    async def _think(self, phase: _Phase) -> None:
        think = self.scenario.think_time
        if think > 0:
            remaining = phase.deadline - perf_counter()
            if remaining > 0:
                await sleep(min(think, remaining))

    async def _closed_user(self, phase: _Phase, number: int) -> None:
        """A virtual user: request, wait for the response, (think,) repeat until a limit."""
        picker = self._picker(number)
        await phase.user_started()
        try:
            while phase.may_start():
                sent = perf_counter()
                await self._exchange(phase, picker.pick(), sent, sent)
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
    scenario: Scenario, progress: Callable[[str | None], None] | None = None, **client_options: Any
) -> RunResult:
    """Run ``scenario`` on a new flowno ``EventLoop`` (one per process at a time) and return the result.

    On ``KeyboardInterrupt`` the phases finished so far are returned, marked ``interrupted``.
    """
    runner = LoadRunner(scenario, progress, client_options)
    try:
        EventLoop().run_until_complete(runner.run(), join=True)
    except KeyboardInterrupt:
        runner.abort()
    finally:
        if progress is not None:
            progress(None)
    return runner.result
