"""What a load-test phase measures: latency histograms, outcomes, errors, and a timeline.

Everything here is plain bookkeeping (no I/O, no clock): the runners pass in timestamps and
durations in seconds, and these classes keep them in fixed memory. Latencies are stored in
integer microseconds in :class:`~loadtest.histogram.LogLinearHistogram` s and reported in
milliseconds.

Example:
    >>> stats = RequestStats()
    >>> stats.record_response("GET /echo", 0.5, 0.002, status=200, ok=True, size=12)
    >>> stats.record_error("GET /echo", 0.6, 0.010, "ReadTimeout", "timed out")
    >>> stats.completed, stats.ok, stats.failed, dict(stats.errors)
    (2, 1, 1, {'ReadTimeout': 1})
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .histogram import REPORTED_PERCENTILES, LogLinearHistogram

__all__ = [
    "DEFAULT_MAX_INTERVALS",
    "EndpointStats",
    "EventIdTracker",
    "RequestStats",
    "StreamStats",
    "Timeline",
    "latency_summary",
]

#: Timeline intervals kept at most; past it, neighbours are merged and the interval doubles.
DEFAULT_MAX_INTERVALS = 240
#: Linear bits of the per-interval histograms (3 % error, 2 KiB each: coarse but bounded).
TIMELINE_SIGNIFICANT_BITS = 5
#: Error messages kept per error kind, as samples for the report.
MAX_ERROR_SAMPLES = 3
#: Latencies of one endpoint kept unrecorded at most (see :class:`RequestStats`): 128 KiB of floats.
BATCH_LIMIT = 4096
#: ``round`` of a float without the special-method lookup of the builtin (same result).
_round_float = float.__round__


def _ms(microseconds: float) -> float:
    return round(microseconds / 1000.0, 3)


def latency_summary(
    histogram: LogLinearHistogram, percentiles: Iterable[float] = REPORTED_PERCENTILES
) -> dict[str, float]:
    """Milliseconds: ``min``, ``mean``, ``p50``..., ``max`` of a microsecond histogram."""
    summary: dict[str, float] = {"min": _ms(histogram.min), "mean": _ms(histogram.mean)}
    for percentile, value in histogram.percentiles(percentiles).items():
        summary[f"p{percentile:g}"] = _ms(value)
    summary["max"] = _ms(histogram.max)
    return summary


@dataclass
class _Interval:
    completed: int = 0
    errors: int = 0
    events: int = 0
    histogram: LogLinearHistogram = field(
        default_factory=lambda: LogLinearHistogram(TIMELINE_SIGNIFICANT_BITS)
    )

    def merge(self, other: _Interval) -> None:
        self.completed += other.completed
        self.errors += other.errors
        self.events += other.events
        self.histogram.merge(other.histogram)


class Timeline:
    """Per-interval counts and latencies, in at most ``max_intervals`` intervals.

    Args:
        interval: seconds per interval at first.
        max_intervals: intervals kept; a longer run merges neighbours (the interval doubles), so
            memory stays bounded whatever the run length.

    Example:
        >>> timeline = Timeline(interval=1.0, max_intervals=4)
        >>> for second in range(10):
        ...     timeline.record(second + 0.5, 1000)
        >>> timeline.interval, [row["completed"] for row in timeline.rows()]
        (4.0, [4, 4, 2])
    """

    def __init__(self, interval: float = 1.0, max_intervals: int = DEFAULT_MAX_INTERVALS) -> None:
        if interval <= 0 or max_intervals < 2:
            raise ValueError("interval must be positive and max_intervals at least 2")
        self.interval = interval
        self.max_intervals = max_intervals
        self._intervals: list[_Interval] = []

    def _slot(self, offset: float) -> _Interval:
        index = int(offset / self.interval)
        intervals = self._intervals
        if 0 <= index < len(intervals):  # (the usual case: an interval that exists already)
            return intervals[index]
        index = max(0, index)
        while index >= self.max_intervals:
            self._coarsen()
            index = max(0, int(offset / self.interval))
        intervals = self._intervals
        while len(intervals) <= index:
            intervals.append(_Interval())
        return intervals[index]

    def _coarsen(self) -> None:
        merged: list[_Interval] = []
        for index in range(0, len(self._intervals), 2):
            pair = self._intervals[index : index + 2]
            first = pair[0]
            if len(pair) == 2:
                first.merge(pair[1])
            merged.append(first)
        self._intervals = merged
        self.interval *= 2

    def merge(self, other: Timeline) -> None:
        """Add ``other`` (a timeline of the same phase from another generator) interval by interval.

        Both started at the same base interval, so the finer one is coarsened until they match.
        """
        other = Timeline.from_state(other.to_state())  # a copy: coarsening changes it
        while self.interval < other.interval * 0.999:
            self._coarsen()
        while other.interval < self.interval * 0.999:
            other._coarsen()
        for index, slot in enumerate(other._intervals):
            while len(self._intervals) <= index:
                self._intervals.append(_Interval())
            self._intervals[index].merge(slot)
        while len(self._intervals) > self.max_intervals:
            self._coarsen()

    def to_state(self) -> dict[str, Any]:
        """Everything, exactly (JSON-ready), for :meth:`from_state` in another process."""
        return {
            "interval": self.interval,
            "max_intervals": self.max_intervals,
            "intervals": [
                [slot.completed, slot.errors, slot.events, slot.histogram.to_dict()]
                for slot in self._intervals
            ],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Timeline:
        """Rebuild a timeline from :meth:`to_state`."""
        timeline = cls(float(state["interval"]), int(state["max_intervals"]))
        for completed, errors, events, histogram in state["intervals"]:
            timeline._intervals.append(
                _Interval(int(completed), int(errors), int(events), LogLinearHistogram.from_dict(histogram))
            )
        return timeline

    def record(self, offset: float, latency_us: int, ok: bool = True) -> None:
        """Count a completion ``offset`` seconds into the phase, with its latency."""
        slot = self._slot(offset)
        slot.completed += 1
        if not ok:
            slot.errors += 1
        slot.histogram.record(latency_us)

    def record_error(self, offset: float) -> None:
        """Count a failure without a latency (a stream that broke) ``offset`` seconds in."""
        self._slot(offset).errors += 1

    def record_events(self, offset: float, events: int = 1) -> None:
        """Count stream events received ``offset`` seconds into the phase."""
        self._slot(offset).events += events

    def rows(self, end: float | None = None) -> list[dict[str, Any]]:
        """One dict per interval: start ``t``, ``width``, completions/s, errors, events/s, p50/p99/max (ms).

        Args:
            end: seconds the phase lasted; the last interval is then only as wide as the time it
                covered (and merged into the one before when under a quarter of an interval), so
                its rates are not diluted.
        """
        spans: list[tuple[float, float, _Interval]] = []
        for index, slot in enumerate(self._intervals):
            spans.append((index * self.interval, self.interval, slot))
        if end is not None and spans:
            t, _, slot = spans[-1]
            width = end - t
            if 0 < width < self.interval:
                if width < self.interval / 4 and len(spans) > 1:
                    previous_t, previous_width, previous = spans[-2]
                    merged = _Interval()
                    merged.merge(previous)
                    merged.merge(slot)
                    spans[-2:] = [(previous_t, previous_width + width, merged)]
                else:
                    spans[-1] = (t, width, slot)
        rows = []
        for t, width, slot in spans:
            histogram = slot.histogram
            percentiles = histogram.percentiles((50.0, 99.0))
            rows.append(
                {
                    "t": round(t, 3),
                    "width": round(width, 3),
                    "completed": slot.completed,
                    "throughput": round(slot.completed / width, 3),
                    "errors": slot.errors,
                    "events_per_s": round(slot.events / width, 3),
                    "p50_ms": _ms(percentiles[50.0]),
                    "p99_ms": _ms(percentiles[99.0]),
                    "max_ms": _ms(histogram.max),
                }
            )
        return rows


class _Errors:
    """Error counts by kind, with a few sample messages per kind."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.samples: dict[str, list[str]] = {}

    def add(self, kind: str, message: str, count: int = 1) -> None:
        self.counts[kind] += count
        samples = self.samples.setdefault(kind, [])
        if len(samples) < MAX_ERROR_SAMPLES and message and message not in samples:
            samples.append(message[:300])

    def merge(self, counts: Mapping[str, int], samples: Mapping[str, list[str]]) -> None:
        for kind, count in counts.items():
            self.add(kind, "", int(count))
            for message in samples.get(kind, []):
                self.add(kind, message, 0)


class _PhaseStats:
    """What request and stream statistics share: exact state for other processes, and merging.

    Subclasses name their histograms and counters; statuses, errors and the timeline are common.
    """

    _HISTOGRAMS: tuple[str, ...] = ()
    _COUNTERS: tuple[str, ...] = ()
    statuses: Counter[int]
    timeline: Timeline
    _errors: _Errors

    def to_state(self) -> dict[str, Any]:
        """Everything measured, exactly (JSON-ready): histograms, counters, errors, timeline."""
        return {
            "kind": type(self).__name__,
            "histograms": {name: getattr(self, name).to_dict() for name in self._HISTOGRAMS},
            "counters": {name: getattr(self, name) for name in self._COUNTERS},
            "statuses": {str(code): n for code, n in self.statuses.items()},
            "errors": dict(self._errors.counts),
            "error_samples": self._errors.samples,
            "timeline": self.timeline.to_state(),
        }

    def _load_state(self, state: Mapping[str, Any]) -> None:
        for name in self._HISTOGRAMS:
            saved = state["histograms"].get(name)  # a state from before a histogram existed lacks it
            setattr(
                self, name, LogLinearHistogram() if saved is None else LogLinearHistogram.from_dict(saved)
            )
        for name in self._COUNTERS:
            setattr(self, name, int(state["counters"][name]))
        self.statuses = Counter({int(code): int(n) for code, n in state["statuses"].items()})
        self._errors = _Errors()
        self._errors.merge(state["errors"], state["error_samples"])
        self.timeline = Timeline.from_state(state["timeline"])

    def merge(self, other: _PhaseStats) -> None:
        """Add ``other`` (the same phase measured by another generator): exact, histograms included.

        Raises:
            TypeError: ``other`` measured another kind of traffic.
        """
        if type(other) is not type(self):
            raise TypeError(f"cannot merge {type(other).__name__} into {type(self).__name__}")
        for name in self._HISTOGRAMS:
            getattr(self, name).merge(getattr(other, name))
        for name in self._COUNTERS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.statuses.update(other.statuses)
        self._errors.merge(other._errors.counts, other._errors.samples)
        self.timeline.merge(other.timeline)


@dataclass
class EndpointStats:
    """Outcomes and latencies of one named request of a scenario."""

    latency: LogLinearHistogram = field(default_factory=LogLinearHistogram)
    ok: int = 0
    failed: int = 0

    def summary(self, elapsed: float) -> dict[str, Any]:
        """Counts, throughput and latency (ms) as a flat dict."""
        completed = self.ok + self.failed
        return {
            "completed": completed,
            "ok": self.ok,
            "failed": self.failed,
            "throughput": round(completed / elapsed, 3) if elapsed > 0 else 0.0,
            "latency_ms": latency_summary(self.latency),
        }


class RequestStats(_PhaseStats):
    """Everything measured about request/response traffic in one phase.

    Attributes:
        latency: microseconds from the *intended* send time to the end of the response (in
            closed-loop mode the intended time is the actual send time).
        service_time: microseconds from the actual send to the end of the response (differs from
            ``latency`` only in open-loop mode, where requests can start late).
        send_lag: microseconds each open-loop request started after its intended time.
        server_time: microseconds the server says it spent (its ``Server-Timing: app;dur=``), for
            the responses that carried one.
        outside_server: for those responses, ``service_time`` minus ``server_time``: the network,
            the queues (the server's accept and read, the generator's own loop) and the framing.
        errors: failures by kind: an exception type (``ReadTimeout``) or ``HTTP 503``.
        statuses: responses by status code.
    """

    _HISTOGRAMS = ("latency", "service_time", "send_lag", "server_time", "outside_server")
    _COUNTERS = ("ok", "failed", "bytes_received")

    def __init__(self, timeline_interval: float = 1.0) -> None:
        self._latency = LogLinearHistogram()
        # While every service time equals its latency (closed loop: always), the service times
        # are not recorded twice: ``service_time`` is made from ``latency`` when first read or
        # when a different value comes (one histogram record less per request).
        self._service_time = LogLinearHistogram()
        self._service_is_latency = True
        self.send_lag = LogLinearHistogram()
        self.server_time = LogLinearHistogram()
        self.outside_server = LogLinearHistogram()
        self.ok = 0
        self.failed = 0
        self.bytes_received = 0
        self._statuses: Counter[int] = Counter()
        self._new_statuses: dict[int, int] = {}  # counted since ``statuses`` was last read
        self._errors = _Errors()
        self._by_name: dict[str, EndpointStats] = {}
        self._timeline = Timeline(timeline_interval)
        # A response's latency is only appended to its endpoint's batch of the current timeline
        # interval; the batches are recorded in the phase's, the endpoints' and the interval's
        # histograms (and counts) together, in bulk, when the interval ends, when a batch is full,
        # and before any of those is read (``_flush``). Every view is as if recorded one by one.
        self._batches: dict[str, list[float]] = {}  # latencies (microseconds) by request name
        self._batch_failed: dict[str, int] = {}  # failures among them, by request name
        self._batch_interval = -1  # the timeline interval index of the batches
        self._batch_offset = 0.0  # an offset in it (its slot is found when they are recorded)
        self._width = self._timeline.interval  # (the timeline's, when the batches began)

    @property
    def completed(self) -> int:
        """Requests finished, successfully or not."""
        return self.ok + self.failed

    @property
    def latency(self) -> LogLinearHistogram:
        """Microseconds from the intended send to the end of each response (see the class doc)."""
        if self._batches:
            self._flush()
        return self._latency

    @latency.setter
    def latency(self, histogram: LogLinearHistogram) -> None:
        self._flush()
        self._latency = histogram

    @property
    def statuses(self) -> Counter[int]:
        """Responses by status code."""
        if self._new_statuses:
            self._statuses.update(self._new_statuses)
            self._new_statuses = {}
        return self._statuses

    @statuses.setter
    def statuses(self, statuses: Counter[int]) -> None:
        self._new_statuses = {}
        self._statuses = statuses

    @property
    def by_name(self) -> dict[str, EndpointStats]:
        """Outcomes and latencies by request name (in the order they first completed)."""
        if self._batches:
            self._flush()
        return self._by_name

    @property
    def timeline(self) -> Timeline:
        """Completions, errors and latencies per interval of the phase."""
        if self._batches:
            self._flush()
        return self._timeline

    @timeline.setter
    def timeline(self, timeline: Timeline) -> None:
        self._flush()
        self._timeline = timeline
        self._width = timeline.interval
        self._batch_interval = -1

    @property
    def service_time(self) -> LogLinearHistogram:
        """Microseconds from the actual send to the end of each response (see the class doc)."""
        if self._service_is_latency:
            self._service_is_latency = False
            self._service_time.merge(self.latency)
        return self._service_time

    @service_time.setter
    def service_time(self, histogram: LogLinearHistogram) -> None:
        self._service_is_latency = False
        self._service_time = histogram

    @property
    def errors(self) -> Counter[str]:
        """Failure counts by kind."""
        return self._errors.counts

    @property
    def error_samples(self) -> dict[str, list[str]]:
        """A few messages per failure kind."""
        return self._errors.samples

    def to_state(self) -> dict[str, Any]:
        """Everything measured, exactly (per-endpoint histograms included)."""
        state = super().to_state()
        state["endpoints"] = {
            name: {"latency": ep.latency.to_dict(), "ok": ep.ok, "failed": ep.failed}
            for name, ep in self.by_name.items()
        }
        return state

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> RequestStats:
        """Rebuild from :meth:`to_state` (e.g. a result file of another process)."""
        stats = cls()
        stats._load_state(state)
        for name, ep in state.get("endpoints", {}).items():
            stats.by_name[name] = EndpointStats(
                LogLinearHistogram.from_dict(ep["latency"]), ep["ok"], ep["failed"]
            )
        return stats

    def merge(self, other: _PhaseStats) -> None:
        """Add ``other``, per endpoint too (see :meth:`_PhaseStats.merge`)."""
        self.service_time  # noqa: B018  (made from our latencies before theirs are added)
        super().merge(other)
        assert isinstance(other, RequestStats)
        for name, theirs in other.by_name.items():
            mine = self._endpoint(name)
            mine.latency.merge(theirs.latency)
            mine.ok += theirs.ok
            mine.failed += theirs.failed

    def _endpoint(self, name: str) -> EndpointStats:
        endpoint = self._by_name.get(name)
        if endpoint is None:
            endpoint = self._by_name[name] = EndpointStats()
        return endpoint

    def _flush(self) -> None:
        """Record the batches in the phase's, their endpoints' and their interval's histograms."""
        batches, failures = self._batches, self._batch_failed
        if not batches:
            return
        self._batches, self._batch_failed = {}, {}
        slot = self._timeline._slot(self._batch_offset)
        for name, microseconds in batches.items():
            microseconds.sort()  # (as floats: faster than as ints, and rounding keeps the order)
            latencies = list(map(_round_float, microseconds))
            negative = bisect_left(latencies, 0)
            if negative:  # (a clock step back: recorded as 0)
                latencies[:negative] = [0] * negative
            endpoint = self._endpoint(name)
            self._latency.record_many(latencies)  # (each sorts them again: one pass when sorted)
            endpoint.latency.record_many(latencies)
            slot.histogram.record_many(latencies)
            failed = failures.get(name, 0)
            endpoint.ok += len(latencies) - failed
            endpoint.failed += failed
            slot.completed += len(latencies)
            slot.errors += failed
        # (finding the slot may have coarsened the timeline: later batches use its new width)
        self._width = self._timeline.interval
        self._batch_interval = int(self._batch_offset / self._width)

    def _record(self, name: str, offset: float, latency: float, service: float | None, ok: bool) -> None:
        if not (service is None or service == latency) or not self._service_is_latency:
            self._record_service(latency, service)
        if int(offset / self._width) != self._batch_interval:
            self._flush()  # (the batches of the interval before)
            self._batch_offset = offset
            self._batch_interval = int(offset / self._width)
        microseconds = self._batches.get(name)
        if microseconds is None:
            microseconds = self._batches[name] = []
        microseconds.append(latency * 1e6)  # (rounded when recorded)
        if ok:
            self.ok += 1
        else:
            self.failed += 1
            self._batch_failed[name] = self._batch_failed.get(name, 0) + 1
        if len(microseconds) >= BATCH_LIMIT:
            self._flush()

    def _record_service(self, latency: float, service: float | None) -> None:
        """Record a service time (once one differs from its latency, they are all recorded)."""
        latency_us = max(0, round(latency * 1e6))
        service_us = latency_us if service is None else max(0, round(service * 1e6))
        if not self._service_is_latency or service_us != latency_us:
            self.service_time.record(service_us)  # (made from the latencies first, if need be)

    def record_response(
        self,
        name: str,
        offset: float,
        latency: float,
        *,
        status: int,
        ok: bool,
        size: int = 0,
        service: float | None = None,
        server: float | None = None,
    ) -> None:
        """Count a response.

        Args:
            name: the request's name in the scenario.
            offset: seconds from the phase start to the end of the response.
            latency: seconds from the intended send time to the end of the response.
            status: the status code.
            ok: the status was an expected one (else counted as ``HTTP <status>``).
            size: body bytes received.
            service: seconds from the actual send (``None``: same as ``latency``).
            server: seconds the server reported in ``Server-Timing`` (``None``: it did not).
        """
        if server is not None:
            server_us = max(0, round(server * 1e6))
            self.server_time.record(server_us)
            outside = latency if service is None else service
            self.outside_server.record(max(0, round(outside * 1e6) - server_us))
        statuses = self._new_statuses  # (a Counter's item assignment is a Python-level call)
        if status in statuses:
            statuses[status] += 1
        else:
            statuses[status] = 1
        self.bytes_received += size
        if not ok:
            self._errors.add(f"HTTP {status}", "")
        self._record(name, offset, latency, service, ok)

    def record_error(
        self, name: str, offset: float, latency: float, kind: str, message: str, service: float | None = None
    ) -> None:
        """Count a request that failed without a response (``kind``: the exception type)."""
        self._errors.add(kind, message)
        self._record(name, offset, latency, service, False)

    def record_lag(self, lag: float) -> None:
        """Count how late (seconds) an open-loop request started."""
        self.send_lag.record(max(0, round(lag * 1e6)))


class EventIdTracker:
    """One stream's event ids, checked for loss, duplicates and order.

    Ids are expected to be consecutive integers (as the stream service sends them); events with
    no id or a non-integer one are counted in :attr:`untracked` only. A gap counts its ids as
    lost; an id inside an earlier gap arriving late is out of order (and no longer lost); an id
    seen before is a duplicate. Memory holds only the ids still missing.

    Args:
        after: the ``Last-Event-ID`` a resumed stream was opened with (ids should start after it).

    Example:
        >>> tracker = EventIdTracker()
        >>> [tracker.observe(event_id) for event_id in ["1", "2", "5", "3", "3", "6", None]]
        [0, 0, 2, 0, 0, 0, 0]
        >>> tracker.lost, tracker.out_of_order, tracker.duplicated, tracker.untracked, tracker.last
        (1, 1, 1, 1, 6)
    """

    __slots__ = ("_missing", "_untracked_gaps", "duplicated", "last", "out_of_order", "untracked")

    def __init__(self, after: int | None = None) -> None:
        #: The highest id seen (or the ``Last-Event-ID`` resumed after).
        self.last = after
        self._missing: set[int] = set()
        self._untracked_gaps = 0
        self.duplicated = 0
        self.out_of_order = 0
        self.untracked = 0

    @property
    def lost(self) -> int:
        """Ids skipped and not (yet) received."""
        return len(self._missing) + self._untracked_gaps

    def observe(self, event_id: str | None) -> int:
        """Check one event's id; returns how many ids it showed lost (a gap before it), else 0."""
        try:
            number = int(event_id) if event_id is not None else None
        except ValueError:
            number = None
        if number is None:
            self.untracked += 1
            return 0
        last = self.last
        if last is None or number == last + 1:
            self.last = number
            return 0
        if number > last:
            gap = number - last - 1
            if gap <= MAX_TRACKED_GAP:
                self._missing.update(range(last + 1, number))
            else:
                self._untracked_gaps += gap
            self.last = number
            return gap
        if number in self._missing:
            self._missing.discard(number)
            self.out_of_order += 1
        else:
            self.duplicated += 1
        return 0


#: A jump in ids larger than this is counted once as lost events but not remembered id by id.
MAX_TRACKED_GAP = 100_000


class StreamStats(_PhaseStats):
    """Everything measured about event streams (SSE) in one phase.

    Attributes:
        time_to_first_event: microseconds from sending the request to the first event.
        event_gap: microseconds between consecutive events of a stream.
        stream_duration: microseconds from sending the request to the end of a completed stream.
        opened: streams whose response head arrived with a 2xx status.
        completed: streams the server ended (or ``[DONE]``).
        cut: streams still open when the phase ended (closed by us, not an error).
        failed: streams that could not open, got a non-2xx status, or broke mid-way.
        events: events received in all.
        lost, duplicated, out_of_order: events by id (:class:`EventIdTracker`), over all streams.
        untracked: events without an integer id (not checked).
        reconnects: reconnections after the server closed a stream (``reconnect`` scenarios).
        reconnect_lost: ids skipped across a reconnect (the resumed stream did not start right
            after ``Last-Event-ID``); also counted in ``lost``.
        time_to_resume: microseconds from the server closing a stream to the first event of the
            reconnected one.
    """

    _HISTOGRAMS = ("time_to_first_event", "event_gap", "stream_duration", "time_to_resume")
    _COUNTERS = (
        "started",
        "opened",
        "completed",
        "cut",
        "failed",
        "events",
        "lost",
        "duplicated",
        "out_of_order",
        "untracked",
        "reconnects",
        "reconnect_lost",
    )

    def __init__(self, timeline_interval: float = 1.0) -> None:
        self.time_to_first_event = LogLinearHistogram()
        self.event_gap = LogLinearHistogram()
        self.stream_duration = LogLinearHistogram()
        self.started = 0
        self.opened = 0
        self.completed = 0
        self.cut = 0
        self.failed = 0
        self.events = 0
        self.lost = 0
        self.duplicated = 0
        self.out_of_order = 0
        self.untracked = 0
        self.reconnects = 0
        self.reconnect_lost = 0
        self.time_to_resume = LogLinearHistogram()
        self.statuses: Counter[int] = Counter()
        self._errors = _Errors()
        self.timeline = Timeline(timeline_interval)

    @property
    def errors(self) -> Counter[str]:
        """Failure counts by kind."""
        return self._errors.counts

    @property
    def error_samples(self) -> dict[str, list[str]]:
        """A few messages per failure kind."""
        return self._errors.samples

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> StreamStats:
        """Rebuild from :meth:`to_state` (e.g. a result file of another process)."""
        stats = cls()
        stats._load_state(state)
        return stats

    def record_ids(self, tracker: EventIdTracker) -> None:
        """Add one finished stream's id bookkeeping."""
        self.lost += tracker.lost
        self.duplicated += tracker.duplicated
        self.out_of_order += tracker.out_of_order
        self.untracked += tracker.untracked

    def record_reconnect(self) -> None:
        """Count a reconnection after the server closed a stream."""
        self.reconnects += 1

    def record_resume(self, seconds: float, skipped: int) -> None:
        """Count a resumed stream's first event, ``seconds`` after the previous one was closed;
        ``skipped``: ids missing between ``Last-Event-ID`` and it."""
        self.time_to_resume.record(max(0, round(seconds * 1e6)))
        self.reconnect_lost += skipped

    def record_open(self, status: int) -> None:
        """Count a response head (a stream that opened when 2xx)."""
        self.statuses[status] += 1
        if 200 <= status < 300:
            self.opened += 1

    def record_first_event(self, offset: float, seconds: float) -> None:
        """Count a stream's first event, ``seconds`` after its request was sent."""
        microseconds = max(0, round(seconds * 1e6))
        self.time_to_first_event.record(microseconds)
        self.timeline.record(offset, microseconds)
        self.record_event(offset)

    def record_event(self, offset: float, gap: float | None = None) -> None:
        """Count an event; ``gap``: seconds since the previous event of the same stream."""
        self.events += 1
        self.timeline.record_events(offset)
        if gap is not None:
            self.event_gap.record(max(0, round(gap * 1e6)))

    def record_end(self, seconds: float, *, cut: bool) -> None:
        """Count a stream that ended (``cut``: closed by us at the end of the phase)."""
        if cut:
            self.cut += 1
        else:
            self.completed += 1
            self.stream_duration.record(max(0, round(seconds * 1e6)))

    def record_failure(self, offset: float, kind: str, message: str) -> None:
        """Count a stream that failed (``kind``: exception type or ``HTTP <status>``)."""
        self.failed += 1
        self.timeline.record_error(offset)
        self._errors.add(kind, message)
