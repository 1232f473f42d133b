"""Result files: JSON (everything), CSV (one row per phase, and the timelines), a text table.

Example:
    >>> print(format_table([{"a": 1, "bb": 2.5}, {"a": 10, "bb": 0.25}], ["a", "bb"]))
     a    bb
    --  ----
     1   2.5
    10  0.25
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .runner import STALL_NOTE_FACTOR, PhaseResult, RunResult
from .stats import RequestStats, StreamStats

__all__ = [
    "SUMMARY_COLUMNS",
    "format_cell",
    "format_table",
    "run_notes",
    "stall_notes",
    "summary_table",
    "write_csv",
    "write_json",
    "write_reports",
    "write_timeline_csv",
]

#: Columns of the printed summary, by mode (every column is in the CSV too).
SUMMARY_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "closed": (
        ("concurrency", "users"),
        ("requests", "requests"),
        ("errors", "errors"),
        ("throughput_rps", "req/s"),
        ("p50_ms", "p50 ms"),
        ("p90_ms", "p90 ms"),
        ("p99_ms", "p99 ms"),
        ("p99.9_ms", "p99.9 ms"),
        ("max_ms", "max ms"),
        ("co_p99_ms", "co p99 ms"),
        ("server_p50_ms", "server p50"),
        ("server_p99_ms", "server p99"),
        ("outside_p99_ms", "outside p99"),
    ),
    "open": (
        ("rate", "rate/s"),
        ("concurrency", "max in flight"),
        ("requests", "sent"),
        ("unsent", "unsent"),
        ("behind_s", "behind s"),
        ("errors", "errors"),
        ("throughput_rps", "req/s"),
        ("p50_ms", "p50 ms"),
        ("p99_ms", "p99 ms"),
        ("max_ms", "max ms"),
        ("service_p99_ms", "service p99"),
        ("server_p99_ms", "server p99"),
        ("outside_p99_ms", "outside p99"),
        ("lag_max_ms", "lag max ms"),
    ),
    "sse": (
        ("concurrency", "concurrent"),
        ("streams", "streams"),
        ("failed", "failed"),
        ("events_per_s", "events/s"),
        ("ttfe_p50_ms", "ttfe p50 ms"),
        ("ttfe_p99_ms", "ttfe p99 ms"),
        ("gap_p50_ms", "gap p50 ms"),
        ("gap_p99_ms", "gap p99 ms"),
        ("gap_max_ms", "gap max ms"),
        ("lost", "lost"),
        ("reconnects", "reconnects"),
    ),
}


def format_cell(value: Any) -> str:
    """Numbers to about four significant digits (the histograms are good to 0.4 %)."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int) or (isinstance(value, float) and value.is_integer() and abs(value) < 1e15):
        number = int(value)
        return f"{number:,}" if abs(number) >= 10_000 else str(number)
    if isinstance(value, float):
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 100:
            return f"{value:.1f}"
        return f"{value:.4g}"
    return str(value)


def format_table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], headers: Sequence[str] | None = None
) -> str:
    """A plain-text table of ``rows``: numbers right-aligned, text columns left-aligned."""
    titles = list(headers) if headers is not None else list(columns)
    text_columns = [
        all(isinstance(row.get(column), str) for row in rows if row.get(column, "") != "") and rows
        for column in columns
    ]
    cells = [[format_cell(row.get(column, "")) for column in columns] for row in rows]
    widths = [max([len(title)] + [len(line[i]) for line in cells]) for i, title in enumerate(titles)]

    def line(values: Sequence[str]) -> str:
        parts = [
            value.ljust(width) if text else value.rjust(width)
            for value, width, text in zip(values, widths, text_columns, strict=True)
        ]
        return "  ".join(parts).rstrip()

    lines = [line(titles), line(["-" * width for width in widths])]
    lines.extend(line(values) for values in cells)
    return "\n".join(lines)


def summary_table(result: RunResult) -> str:
    """The run's phases as a text table (columns chosen by mode), then its notes and checks."""
    columns = SUMMARY_COLUMNS[result.scenario.mode]
    rows = [phase.summary() for phase in result.phases]
    kind = {"closed": "closed loop", "open": "open loop", "sse": "event streams"}[result.scenario.mode]
    title = f"{result.scenario.name}: {kind} on {result.scenario.target}"
    if result.processes > 1:
        title += f" ({result.processes} generator processes, merged)"
    table = format_table(rows, [key for key, _ in columns], [label for _, label in columns])
    notes = run_notes(result)
    failed = [outcome for outcome in result.checks if not outcome.passed]
    if result.checks:
        held = len(result.checks) - len(failed)
        notes.append(f"checks: {held} of {len(result.checks)} held" + (", FAILED:" if failed else ""))
        notes.extend(f"  {outcome.message()}" for outcome in failed)
    return "\n".join([title, table, *notes])


def run_notes(result: RunResult) -> list[str]:
    """What a reader must know beside the numbers: a saturated generator, an unkept schedule, a
    stall a closed loop hid, the commonest errors."""
    notes = []
    if result.interrupted:
        notes.append("interrupted: the last phase is partial")
    for phase in result.phases:
        where = f"phase {phase.index} ({phase.label})"
        if phase.users_started < phase.concurrency:
            notes.append(
                f"{where}: only {phase.users_started} of {phase.concurrency} "
                "users got to start before the phase ended (the load generator is saturated)"
            )
        elif phase.duration and phase.ramp_up > 0.1 * phase.duration:
            notes.append(
                f"{where}: starting all users took {phase.ramp_up:.2f} s (the load generator is busy)"
            )
        if phase.generator.bound:
            notes.append(f"{where}: {phase.generator.reason()}")
        if phase.unsent:
            notes.append(
                f"{where}: fell {phase.behind:.2f} s behind schedule; "
                f"{phase.unsent} planned requests were never sent and are not in the percentiles"
            )
        notes.extend(f"{where}: {note}" for note in stall_notes(phase))
        stats = phase.stats
        if isinstance(stats, StreamStats) and (stats.lost or stats.duplicated or stats.out_of_order):
            notes.append(
                f"{where}: event ids: {stats.lost} lost, {stats.duplicated} duplicated, "
                f"{stats.out_of_order} out of order"
            )
        for kind, count in stats.errors.most_common(3):
            notes.append(f"{where}: {count} x {kind}")
    return notes


def stall_notes(phase: PhaseResult) -> list[str]:
    """Closed loop: a warning when the slowest response took :data:`STALL_NOTE_FACTOR` times the
    median and the coordinated-omission corrected p99 is at least twice the measured one."""
    stats = phase.stats
    if phase.mode != "closed" or not isinstance(stats, RequestStats) or not stats.completed:
        return []
    median = stats.latency.value_at_percentile(50)
    if stats.latency.max < STALL_NOTE_FACTOR * max(median, 1):
        return []
    corrected = phase.corrected_latency().value_at_percentile(99) / 1000
    measured = stats.latency.value_at_percentile(99) / 1000
    if corrected < 2 * measured:
        return []  # a slow response or two, not a stall that hides the tail
    return [
        f"the slowest response took {stats.latency.max / 1000:,.1f} ms, "
        f"{stats.latency.max / max(median, 1):,.0f}x the median: a closed loop stops sending while "
        f"the server stalls, so p99 {measured:,.1f} ms understates it; corrected for coordinated "
        f"omission p99 is {corrected:,.1f} ms (co_p99_ms)"
    ]


def write_json(result: RunResult, path: Path) -> Path:
    """Write the whole result as JSON."""
    path.write_text(json.dumps(result.to_dict(), indent=1, sort_keys=False) + "\n", encoding="utf-8")
    return path


def _union_columns(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    return columns


def write_csv(result: RunResult, path: Path) -> Path:
    """Write one row per phase (:meth:`PhaseResult.summary`)."""
    rows = [phase.summary() for phase in result.phases]
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=_union_columns(rows) or ["phase"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_timeline_csv(result: RunResult, path: Path) -> Path:
    """Write the per-interval timeline of every phase (``phase`` column first)."""
    rows = [
        {"phase": phase.index, "label": phase.label, **row}
        for phase in result.phases
        for row in phase.stats.timeline.rows(end=phase.elapsed or None)
    ]
    with path.open("w", newline="", encoding="utf-8") as stream:
        writer = csv.DictWriter(stream, fieldnames=_union_columns(rows) or ["phase", "label", "t"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_reports(result: RunResult, directory: Path, stem: str = "loadtest") -> dict[str, Path]:
    """Write ``<stem>.json``, ``<stem>.csv``, ``<stem>_timeline.csv``, ``<stem>.html`` and ``summary.txt``.

    Returns:
        ``{"summary": path, "json": path, "csv": path, "timeline": path, "html": path}``.
    """
    from .html_report import write_html

    directory.mkdir(parents=True, exist_ok=True)
    summary = directory / "summary.txt"
    summary.write_text(summary_table(result) + "\n", encoding="utf-8")
    return {
        "summary": summary,
        "json": write_json(result, directory / f"{stem}.json"),
        "csv": write_csv(result, directory / f"{stem}.csv"),
        "timeline": write_timeline_csv(result, directory / f"{stem}_timeline.csv"),
        "html": write_html(result, directory / f"{stem}.html"),
    }
