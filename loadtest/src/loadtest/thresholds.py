"""Pass/fail checks on a run's results, k6-style: ``p99<50ms``, ``error_rate<0.01``, ``rps>1000``.

A threshold is ``metric[{endpoint}] operator value[unit]``, checked against **every phase** of a
run (or, with ``{endpoint}``, against that named request of every phase). A run whose thresholds
do not all hold exits with status :data:`THRESHOLD_EXIT_STATUS` (99, k6's convention).

Metrics (a phase's summary keys, see :meth:`loadtest.runner.PhaseResult.summary`):

* latency: ``p50``, ``p90``, ``p99``, ``p99.9``, ``max``, ``mean``, ``min`` (milliseconds; ``ms``,
  ``s`` or ``us`` units accepted). Open loop: measured from the intended send time. Closed loop:
  ``co_p99`` etc. are the coordinated-omission corrected ones.
* ``error_rate`` (failed / completed, 0..1; ``%`` accepted), ``errors``, ``failed``, ``requests``;
* ``rps`` (completed requests per second), ``events_per_s``, ``streams_per_s``;
* open loop: ``unsent``, ``behind`` (seconds), ``lag_p99``, ``service_p99``;
* event streams: ``ttfe_p99``, ``gap_p99``, ``lost``, ``duplicated``, ``out_of_order``,
  ``reconnects``;
* any other numeric summary column by its exact name (``throughput_rps``, ``p99_ms``...).

For a named endpoint: ``p50``..``max``, ``error_rate``, ``failed``, ``requests``, ``rps``.

Example:
    >>> threshold = parse_threshold("p99<50ms")
    >>> threshold.key, threshold.limit, threshold.operator
    ('p99_ms', 50.0, '<')
    >>> outcome = threshold.check({"phase": 0, "p99_ms": 73.5}, "c=10")
    >>> outcome.passed, outcome.message()
    (False, 'p99<50ms failed in phase 0 (c=10): p99 = 73.5 ms, 23.5 ms (47%) over the limit')
    >>> parse_threshold("error_rate<1%").limit
    0.01
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "SCHEDULE_THRESHOLDS",
    "THRESHOLD_EXIT_STATUS",
    "Threshold",
    "ThresholdError",
    "ThresholdOutcome",
    "check_thresholds",
    "outcome_dict",
    "parse_threshold",
    "parse_thresholds",
    "run_checks",
]

#: Exit status of a run whose thresholds failed (k6 uses 99 too).
THRESHOLD_EXIT_STATUS = 99
#: Open-loop runs must keep their schedule unless told otherwise (``--no-schedule-check``).
SCHEDULE_THRESHOLDS = ("unsent==0", "behind<=1s")

_OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_PATTERN = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_.]*)\s*(?:\{(?P<endpoint>[^{}]+)\})?\s*"
    r"(?P<op><=|>=|==|!=|<|>)\s*(?P<value>[-+]?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*"
    r"(?P<unit>ms|us|s|%)?\s*$"
)
_PERCENTILE = re.compile(r"^(co_|ttfe_|gap_|lag_|service_)?(p[0-9]+(?:\.[0-9]+)?|max|min|mean)$")
#: Short names of summary columns.
_ALIASES = {
    "rps": "throughput_rps",
    "throughput": "throughput_rps",
    "behind": "behind_s",
    "error_rate": "error_rate",
}
_ENDPOINT_LATENCY = re.compile(r"^(p[0-9]+(?:\.[0-9]+)?|max|min|mean)$")
_ENDPOINT_KEYS = {"error_rate", "failed", "requests", "rps", "throughput"}


class ThresholdError(ValueError):
    """A threshold expression that cannot be parsed."""


@dataclass(frozen=True)
class ThresholdOutcome:
    """One threshold checked against one phase (or one endpoint of it)."""

    threshold: Threshold
    phase: int
    label: str
    actual: float | None
    passed: bool

    def message(self) -> str:
        """``p99<50ms held in phase 0 (c=1): p99 = 3.1 ms`` or how far off it failed."""
        threshold = self.threshold
        where = f"phase {self.phase} ({self.label})"
        if threshold.endpoint:
            where += f" for {threshold.endpoint!r}"
        if self.actual is None:
            return f"{threshold.text} failed in {where}: no such metric in this phase"
        unit = threshold.unit_text
        actual = f"{threshold.metric} = {_number(self.actual)}{unit}"
        if self.passed:
            return f"{threshold.text} held in {where}: {actual}"
        gap = abs(self.actual - threshold.limit)
        side = "over" if self.actual > threshold.limit else "under"
        if threshold.operator in ("==", "!="):
            return f"{threshold.text} failed in {where}: {actual}"
        relative = f" ({gap / abs(threshold.limit):.0%})" if threshold.limit else ""
        by = f"{_number(gap)}{unit}{relative} {side} the limit"
        return f"{threshold.text} failed in {where}: {actual}, {by}"


def _number(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e4 else f"{value:,.0f}"


@dataclass(frozen=True)
class Threshold:
    """A parsed threshold (see the module docstring for the syntax).

    Attributes:
        text: the expression as written.
        metric: the metric as written (``p99``).
        key: the summary column it reads (``p99_ms``).
        operator: ``<``, ``<=``, ``>``, ``>=``, ``==`` or ``!=``.
        limit: the value in the column's unit (milliseconds for latencies, seconds for ``behind``).
        endpoint: the request name it applies to (``None``: the whole phase).
    """

    text: str
    metric: str
    key: str
    operator: str
    limit: float
    endpoint: str | None = None

    @property
    def unit_text(self) -> str:
        """`` ms``, `` s`` or nothing: the unit of :attr:`limit` in messages."""
        if self.key.endswith("_ms"):
            return " ms"
        if self.key.endswith("_s"):
            return " s"
        return ""

    def holds(self, actual: float) -> bool:
        """True when ``actual`` satisfies the threshold."""
        return _OPERATORS[self.operator](actual, self.limit)

    def check(
        self, summary: Mapping[str, Any], label: str, endpoints: Mapping[str, Mapping[str, Any]] | None = None
    ) -> ThresholdOutcome:
        """Check one phase's ``summary`` row (and its per-endpoint summaries)."""
        phase = int(summary.get("phase", 0))
        if self.endpoint is None:
            actual = summary.get(self.key)
        else:
            endpoint = (endpoints or {}).get(self.endpoint)
            actual = None if endpoint is None else _endpoint_value(endpoint, self.key)
        if isinstance(actual, bool) or not isinstance(actual, (int, float)):
            return ThresholdOutcome(self, phase, label, None, False)
        return ThresholdOutcome(self, phase, label, float(actual), self.holds(float(actual)))


def _endpoint_value(endpoint: Mapping[str, Any], key: str) -> Any:
    completed = endpoint.get("completed", 0)
    if key == "error_rate":
        return endpoint.get("failed", 0) / completed if completed else 0.0
    if key == "requests":
        return completed
    if key == "throughput_rps":
        return endpoint.get("throughput")
    if key.endswith("_ms"):
        return endpoint.get("latency_ms", {}).get(key.removesuffix("_ms"))
    return endpoint.get(key)


def _convert(value: float, unit: str | None, key: str, text: str) -> float:
    """``value`` in the unit of column ``key`` (milliseconds for ``*_ms``, seconds for ``*_s``)."""
    if key.endswith(("_ms", "_s")):
        if unit is None:
            return value
        if unit == "%":
            raise ThresholdError(f"{text!r}: {key} is a duration, not a fraction")
        seconds = value * {"ms": 1e-3, "s": 1.0, "us": 1e-6}[unit]
        return seconds * 1000.0 if key.endswith("_ms") else seconds
    if unit == "%":
        return value / 100.0
    if unit is not None:
        raise ThresholdError(f"{text!r}: {key} is not a duration, so it takes no {unit!r} unit")
    return value


def parse_threshold(text: str) -> Threshold:
    """Parse ``metric[{endpoint}] op value[unit]``.

    Raises:
        ThresholdError: not a threshold expression, or a unit that does not fit the metric.
    """
    match = _PATTERN.match(text)
    if match is None:
        raise ThresholdError(
            f"invalid threshold {text!r}: expected METRIC[{{endpoint}}] OP VALUE[unit], such as "
            "'p99<50ms', 'error_rate<0.01', 'rps>1000', 'unsent==0'"
        )
    metric = match["metric"]
    endpoint = match["endpoint"].strip() if match["endpoint"] else None
    key = f"{metric}_ms" if _PERCENTILE.match(metric) else _ALIASES.get(metric, metric)
    if endpoint is not None and not _ENDPOINT_LATENCY.match(metric) and metric not in _ENDPOINT_KEYS:
        raise ThresholdError(
            f"{text!r}: a threshold for an endpoint takes p50..max, error_rate, failed, requests or rps"
        )
    limit = _convert(float(match["value"]), match["unit"], key, text)
    return Threshold(text.strip(), metric, key, match["op"], limit, endpoint)


def parse_thresholds(texts: Iterable[str]) -> list[Threshold]:
    """Parse several thresholds (see :func:`parse_threshold`)."""
    return [parse_threshold(text) for text in texts]


def check_thresholds(
    thresholds: Sequence[Threshold], phases: Sequence[Mapping[str, Any]]
) -> list[ThresholdOutcome]:
    """Check every threshold against every phase.

    Args:
        thresholds: parsed thresholds.
        phases: phase dicts as in the result JSON (``summary``, ``label``, ``endpoints``).
    """
    return [
        threshold.check(phase["summary"], str(phase.get("label", "")), phase.get("endpoints"))
        for phase in phases
        for threshold in thresholds
    ]


def run_checks(
    phases: Sequence[Mapping[str, Any]],
    mode: str,
    thresholds: Iterable[str] = (),
    *,
    schedule_check: bool = True,
    strict: bool = False,
) -> list[ThresholdOutcome]:
    """Every check of a run: its thresholds, the open-loop schedule check, the strict self-check.

    Args:
        phases: phase dicts as in the result JSON.
        mode: the scenario's mode (the schedule check applies to ``open`` only).
        thresholds: expressions (see :func:`parse_threshold`).
        schedule_check: open mode: add :data:`SCHEDULE_THRESHOLDS`.
        strict: add ``generator_bound==0`` (no phase may have saturated its generator).
    """
    texts = list(thresholds)
    if mode == "open" and schedule_check:
        texts.extend(SCHEDULE_THRESHOLDS)
    if strict:
        texts.append("generator_bound==0")
    return check_thresholds(parse_thresholds(texts), phases)


def outcome_dict(outcome: ThresholdOutcome) -> dict[str, Any]:
    """JSON-ready form of a check."""
    return {
        "threshold": outcome.threshold.text,
        "endpoint": outcome.threshold.endpoint,
        "phase": outcome.phase,
        "label": outcome.label,
        "actual": outcome.actual,
        "limit": outcome.threshold.limit,
        "passed": outcome.passed,
        "message": outcome.message(),
    }
