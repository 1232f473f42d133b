"""What a run measured: :class:`PhaseResult` per phase, :class:`RunResult` for the run, and the
generator's self-check (:class:`GeneratorLoad`); their JSON form, and merging the results of
several generator processes or machines (:func:`merge_results`) exactly.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from .histogram import LogLinearHistogram
from .scenario import RequestSpec, Scenario
from .stats import RequestStats, StreamStats, latency_summary
from .thresholds import ThresholdOutcome, outcome_dict, run_checks

__all__ = [
    "GENERATOR_CPU_LIMIT",
    "GENERATOR_LAG_LIMIT_MS",
    "STALL_NOTE_FACTOR",
    "GeneratorLoad",
    "PhaseResult",
    "ResultMergeError",
    "RunResult",
    "merge_results",
]

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
            :data:`loadtest.runner.GENERATOR_SAMPLE_INTERVAL` seconds: how long ready work kept the loop busy.
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

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GeneratorLoad:
        """Rebuild from :meth:`to_dict`."""
        return cls(
            float(data["cpu"]),
            LogLinearHistogram.from_dict(data["lag_histogram_us"]),
            int(data.get("processes", 1)),
            int(data.get("bound_processes", 0)),
        )

    def merge(self, other: GeneratorLoad) -> None:
        """Combine with another process's self-check: bound if any process was."""
        bound = self._bound_count() + other._bound_count()
        self.cpu = max(self.cpu, other.cpu)
        self.lag.merge(other.lag)
        self.processes += other.processes
        self.bound_processes = bound

    def _bound_count(self) -> int:
        if self.processes > 1:
            return self.bound_processes
        return int(self.bound)


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
            if stats.server_time.count:  # the server's own time (Server-Timing) and the rest
                server = latency_summary(stats.server_time)
                outside = latency_summary(stats.outside_server)
                row.update({f"server_{key}_ms": server[key] for key in ("p50", "p90", "p99")})
                row.update({f"outside_{key}_ms": outside[key] for key in ("p50", "p90", "p99")})
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
            if stats.server_time.count:
                data["server_time_ms"] = latency_summary(stats.server_time)
                data["outside_server_ms"] = latency_summary(stats.outside_server)
                data["server_time_note"] = (
                    f"server_time_ms: the server's Server-Timing app;dur of {stats.server_time.count} "
                    "responses; outside_server_ms: for each, the client-measured time from its send "
                    "minus the server's: network, queueing on both sides, framing"
                )
            data["endpoints"] = {name: ep.summary(self.elapsed or 1e-9) for name, ep in stats.by_name.items()}
            data["histograms_us"] = {
                "latency": stats.latency.to_dict(),
                "service_time": stats.service_time.to_dict(),
            }
            if stats.server_time.count:
                data["histograms_us"]["server_time"] = stats.server_time.to_dict()
                data["histograms_us"]["outside_server"] = stats.outside_server.to_dict()
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
        data["state"] = {
            "stats": stats.to_state(),
            "planned": self.planned,
            "unsent": self.unsent,
            "behind": self.behind,
            "users_started": self.users_started,
            "ramp_up": self.ramp_up,
        }
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PhaseResult:
        """Rebuild a phase from :meth:`to_dict` (a result file), histograms and all.

        Raises:
            ResultMergeError: a result file without the exact state (written by an older version).
        """
        state = data.get("state")
        if state is None:
            raise ResultMergeError(f"phase {data.get('index')}: no 'state' (not written by this version)")
        stats_state = state["stats"]
        stats: RequestStats | StreamStats = (
            StreamStats.from_state(stats_state)
            if stats_state["kind"] == "StreamStats"
            else RequestStats.from_state(stats_state)
        )
        return cls(
            index=int(data["index"]),
            mode=str(data["mode"]),
            concurrency=int(data["concurrency"]),
            rate=data["rate"],
            duration=data["duration"],
            count=data["count"],
            started_at=str(data["started_at"]),
            stats=stats,
            elapsed=float(data["elapsed_s"]),
            planned=int(state["planned"]),
            unsent=int(state["unsent"]),
            behind=float(state["behind"]),
            users_started=int(state["users_started"]),
            ramp_up=float(state["ramp_up"]),
            finished=bool(data["finished"]),
            generator=GeneratorLoad.from_dict(data["generator"]),
        )

    def merge(self, other: PhaseResult) -> None:
        """Add ``other``, the same phase run by another generator at the same time: users, rates
        and counts add up; histograms merge exactly; the elapsed time is the longer one.

        Raises:
            ResultMergeError: the phases differ in mode.
        """
        if other.mode != self.mode:
            raise ResultMergeError(
                f"phase {self.index}: cannot merge a {other.mode} phase into a {self.mode} one"
            )
        self.stats.merge(other.stats)
        self.concurrency += other.concurrency
        if self.rate is not None and other.rate is not None:
            self.rate += other.rate
        if self.count is not None and other.count is not None:
            self.count += other.count
        self.elapsed = max(self.elapsed, other.elapsed)
        self.planned += other.planned
        self.unsent += other.unsent
        self.behind = max(self.behind, other.behind)
        self.users_started += other.users_started
        self.ramp_up = max(self.ramp_up, other.ramp_up)
        self.finished = self.finished and other.finished
        self.started_at = min(self.started_at, other.started_at)
        self.generator.merge(other.generator)
        self._corrected = None


class ResultMergeError(ValueError):
    """Results that cannot be merged (different scenarios or shapes), or a file without state."""


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

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunResult:
        """Rebuild a run from :meth:`to_dict` (a result file). Request bodies are not in the file,
        so the scenario is good for reports and checks, not for running again.

        Raises:
            ResultMergeError: not a result file of this tool.
        """
        try:
            scenario = _scenario_from_description(data["scenario"])
            phases = [PhaseResult.from_dict(phase) for phase in data["phases"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ResultMergeError(f"not a loadtest result file: {exc!r}") from None
        return cls(
            scenario,
            phases,
            started_at=str(data.get("started_at", "")),
            finished_at=str(data.get("finished_at", "")),
            interrupted=bool(data.get("interrupted", False)),
            processes=int(data.get("processes", 1)),
        )


def _scenario_from_description(described: Mapping[str, Any]) -> Scenario:
    requests = tuple(
        RequestSpec(
            name=str(spec["name"]),
            method=str(spec["method"]),
            path=str(spec["path"]),
            headers=dict(spec.get("headers") or {}),
            weight=int(spec["weight"]),
            expect_status=frozenset(spec["expect_status"]) if spec.get("expect_status") else None,
            url=str(described["target"]) + str(spec["path"]),
        )
        for spec in described["requests"]
    )
    return Scenario(
        name=str(described["name"]),
        target=str(described["target"]),
        mode=described["mode"],
        requests=requests,
        concurrency=tuple(int(c) for c in described["concurrency"]),
        rates=tuple(float(r) for r in described["rates"]),
        duration=described["duration"],
        count=described["count"],
        timeout=float(described["timeout"]),
        think_time=float(described["think_time"]),
        thresholds=tuple(described.get("thresholds", ())),
        schedule_check=bool(described.get("schedule_check", True)),
        strict=bool(described.get("strict", False)),
        reconnect=bool(described.get("reconnect", False)),
    )


def merge_results(results: Sequence[RunResult]) -> RunResult:
    """One run from several generators' runs of the same scenario at the same time.

    Phases are matched by position; their users, rates, counts and every histogram add up
    exactly (as if one generator had recorded every sample). The scenario's concurrency levels
    and rates become the sums; thresholds are those of the first run (check again after merging).

    Raises:
        ResultMergeError: no results, or runs of different modes or phase counts.
    """
    if not results:
        raise ResultMergeError("nothing to merge")
    first = results[0]
    shape = (first.scenario.mode, len(first.phases))
    for other in results[1:]:
        if (other.scenario.mode, len(other.phases)) != shape:
            raise ResultMergeError(
                f"cannot merge a {other.scenario.mode} run of {len(other.phases)} phases into a "
                f"{shape[0]} run of {shape[1]} phases"
            )
    phases = [PhaseResult.from_dict(phase.to_dict()) for phase in first.phases]  # copies
    for other in results[1:]:
        for mine, theirs in zip(phases, other.phases, strict=True):
            mine.merge(theirs)
    scenario = first.scenario
    levels = tuple(dict.fromkeys(phase.concurrency for phase in phases))
    rates = tuple(dict.fromkeys(phase.rate for phase in phases if phase.rate is not None))
    count = phases[0].count if phases else scenario.count
    scenario = replace(scenario, concurrency=levels or scenario.concurrency, rates=rates, count=count)
    return RunResult(
        scenario,
        phases,
        started_at=min(result.started_at for result in results),
        finished_at=max(result.finished_at for result in results),
        interrupted=any(result.interrupted for result in results),
        processes=sum(result.processes for result in results),
    )
