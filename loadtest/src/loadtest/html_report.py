"""A self-contained HTML report: tables and inline SVG charts, no JavaScript, no external files.

Charts: throughput and latency (p50/p99) against concurrency (or arrival rate), and every phase's
timeline (throughput and p50/p99 over time) laid end to end. For SSE runs: events/s and
time-to-first-event instead.

Example:
    >>> svg = line_chart("t", [Series("a", [(1, 1.0), (10, 2.0), (100, 4.0)])], "x", "y", log_x=True)
    >>> svg.startswith("<svg") and "polyline" in svg
    True
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape
from pathlib import Path
from typing import Any

from .histogram import LogLinearHistogram
from .report import SUMMARY_COLUMNS, format_cell, format_table, run_notes
from .runner import PhaseResult, RunResult
from .stats import RequestStats

__all__ = [
    "CSS",
    "Series",
    "checks_html",
    "html_table",
    "line_chart",
    "nice_ticks",
    "percentile_spectrum",
    "render_html",
    "write_html",
]

_WIDTH = 760
_HEIGHT = 300
_MARGIN_LEFT = 64
_MARGIN_RIGHT = 170
_MARGIN_TOP = 32
_MARGIN_BOTTOM = 44
_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")


@dataclass
class Series:
    """A named line of ``(x, y)`` points."""

    name: str
    points: list[tuple[float, float]]
    dashed: bool = False


@dataclass
class _Axis:
    low: float
    high: float
    log: bool = False
    ticks: list[float] = field(default_factory=list)

    def position(self, value: float, start: float, length: float) -> float:
        if self.log:
            low, high, value = math.log10(self.low), math.log10(self.high), math.log10(max(value, self.low))
        else:
            low, high = self.low, self.high
        span = (high - low) or 1.0
        return start + (value - low) / span * length


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten) from at most ``low`` to at least ``high``.

    The axis spans the first to the last tick, so both ends must cover the data (a last tick
    short of ``high`` would leave the lines running out of the frame).

    Example:
        >>> nice_ticks(0, 97)
        [0.0, 20.0, 40.0, 60.0, 80.0, 100.0]
        >>> nice_ticks(1, 7)
        [0.0, 2.0, 4.0, 6.0, 8.0]
    """
    if high <= low:
        high = low + 1.0
    raw = (high - low) / max(1, count)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    ticks = []
    for number in itertools.count():
        value = round(first + number * step, 10)  # multiplied, not summed: no drift
        ticks.append(float(value))
        if value >= high - step * 1e-9:
            break
    return ticks


def _log_ticks(low: float, high: float) -> list[float]:
    ticks = []
    power = 10 ** math.floor(math.log10(low))
    while power <= high * 1.0001:
        for m in (1, 2, 5):
            tick = m * power
            if low * 0.9999 <= tick <= high * 1.0001:
                ticks.append(tick)
        power *= 10
    return ticks


def _format_tick(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"


def line_chart(
    title: str,
    series: Sequence[Series],
    x_label: str,
    y_label: str,
    *,
    log_x: bool = False,
    markers: bool = True,
    separators: Sequence[tuple[float, str]] = (),
    x_ticks: Sequence[tuple[float, str]] = (),
) -> str:
    """An SVG line chart (y from 0), with a legend; ``separators`` draw labelled vertical lines;
    ``x_ticks``: ``(position, label)`` pairs replacing the automatic x ticks."""
    points = [p for s in series for p in s.points if math.isfinite(p[0]) and math.isfinite(p[1])]
    if not points:
        return (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="40" role="img">'
            f'<text x="8" y="24" class="title">{escape(title)}: no data</text></svg>'
        )
    xs = [x for x, _ in points]
    ys = [y for _, y in points]
    if log_x and min(xs) <= 0:
        log_x = False
    tick_labels: dict[float, str] = {}
    if x_ticks:
        positions = [position for position, _ in x_ticks]
        x_axis = _Axis(min(positions + xs), max(positions + xs), ticks=positions)
        tick_labels = dict(x_ticks)
        log_x = False
    elif log_x:
        x_axis = _Axis(min(xs), max(xs) if max(xs) > min(xs) else min(xs) * 10, log=True)
        x_axis.ticks = _log_ticks(x_axis.low, x_axis.high)
    else:
        ticks = nice_ticks(min(xs), max(xs))
        x_axis = _Axis(ticks[0], ticks[-1], ticks=ticks)
    y_ticks = nice_ticks(0.0, max(ys) * 1.05 if max(ys) > 0 else 1.0)
    y_axis = _Axis(y_ticks[0], y_ticks[-1], ticks=y_ticks)
    plot_w = _WIDTH - _MARGIN_LEFT - _MARGIN_RIGHT
    plot_h = _HEIGHT - _MARGIN_TOP - _MARGIN_BOTTOM

    def px(x: float) -> float:
        return x_axis.position(x, _MARGIN_LEFT, plot_w)

    def py(y: float) -> float:
        return _MARGIN_TOP + plot_h - y_axis.position(y, 0.0, plot_h)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" '
        f'viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" aria-label="{escape(title)}">',
        f'<text x="{_MARGIN_LEFT}" y="18" class="title">{escape(title)}</text>',
    ]
    for tick in y_axis.ticks:
        y = py(tick)
        parts.append(
            f'<line x1="{_MARGIN_LEFT}" y1="{y:.1f}" x2="{_MARGIN_LEFT + plot_w}" y2="{y:.1f}" class="grid"/>'
        )
        parts.append(
            f'<text x="{_MARGIN_LEFT - 6}" y="{y + 4:.1f}" class="tick" text-anchor="end">'
            f"{_format_tick(tick)}</text>"
        )
    for tick in x_axis.ticks:
        x = px(tick)
        parts.append(
            f'<line x1="{x:.1f}" y1="{_MARGIN_TOP}" x2="{x:.1f}" y2="{_MARGIN_TOP + plot_h}" class="grid"/>'
        )
        parts.append(
            f'<text x="{x:.1f}" y="{_MARGIN_TOP + plot_h + 16}" class="tick" text-anchor="middle">'
            f"{escape(tick_labels.get(tick, _format_tick(tick)))}</text>"
        )
    for position, label in separators:
        x = px(position)
        parts.append(
            f'<line x1="{x:.1f}" y1="{_MARGIN_TOP}" x2="{x:.1f}" y2="{_MARGIN_TOP + plot_h}" class="sep"/>'
        )
        parts.append(f'<text x="{x + 3:.1f}" y="{_MARGIN_TOP + 10}" class="seplabel">{escape(label)}</text>')
    parts.append(
        f'<rect x="{_MARGIN_LEFT}" y="{_MARGIN_TOP}" width="{plot_w}" height="{plot_h}" class="frame"/>'
    )
    parts.append(
        f'<text x="{_MARGIN_LEFT + plot_w / 2:.1f}" y="{_HEIGHT - 6}" class="label" text-anchor="middle">'
        f"{escape(x_label)}{' (log scale)' if log_x else ''}</text>"
    )
    parts.append(
        f'<text x="14" y="{_MARGIN_TOP + plot_h / 2:.1f}" class="label" text-anchor="middle" '
        f'transform="rotate(-90 14 {_MARGIN_TOP + plot_h / 2:.1f})">{escape(y_label)}</text>'
    )
    for number, line in enumerate(series):
        color = _COLORS[number % len(_COLORS)]
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in line.points)
        dash = ' stroke-dasharray="5 3"' if line.dashed else ""
        if coords:
            parts.append(f'<polyline points="{coords}" fill="none" stroke="{color}" stroke-width="2"{dash}/>')
        if markers:
            for x, y in line.points:
                parts.append(
                    f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color}">'
                    f"<title>{escape(line.name)}: {x:g}, {y:g}</title></circle>"
                )
        legend_y = _MARGIN_TOP + 14 + number * 18
        legend_x = _MARGIN_LEFT + plot_w + 12
        parts.append(
            f'<line x1="{legend_x}" y1="{legend_y - 4}" x2="{legend_x + 18}" y2="{legend_y - 4}" '
            f'stroke="{color}" stroke-width="2"{dash}/>'
        )
        parts.append(f'<text x="{legend_x + 24}" y="{legend_y}" class="legend">{escape(line.name)}</text>')
    parts.append("</svg>")
    return "\n".join(parts)


# -- the report ---------------------------------------------------------------------------------

#: The style sheet of every page (the run reports and the index).
CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto;
       max-width: 1000px; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.5em 0; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 9px; border-bottom: 1px solid #eee; text-align: right; }
th { background: #f5f5f5; } td:first-child, th:first-child { text-align: left; }
pre { background: #f7f7f7; padding: 0.8em; overflow-x: auto; }
.note { color: #8a4b00; } .muted { color: #777; }
.fail { color: #fff; background: #c62828; padding: 4px 8px; display: inline-block; }
.pass { color: #fff; background: #2e7d32; padding: 4px 8px; display: inline-block; }
svg { display: block; margin: 1em 0; }
svg .title { font-weight: 600; font-size: 13px; } svg .tick { font-size: 11px; fill: #555; }
svg .label { font-size: 12px; fill: #333; } svg .legend { font-size: 12px; }
svg .grid { stroke: #eee; } svg .frame { fill: none; stroke: #999; }
svg .sep { stroke: #bbb; stroke-dasharray: 2 3; } svg .seplabel { font-size: 10px; fill: #777; }
"""


def html_table(rows: Sequence[dict[str, object]], columns: Sequence[tuple[str, str]]) -> str:
    """An HTML table of ``rows`` with ``(key, heading)`` columns: numbers to about four significant
    digits as in the text tables (:func:`~loadtest.report.format_cell`), every cell escaped."""
    head = "".join(f"<th>{escape(label)}</th>" for _, label in columns)
    body = []
    for row in rows:
        cells = "".join(f"<td>{escape(format_cell(row.get(key, '')))}</td>" for key, _ in columns)
        body.append(f"<tr>{cells}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _sweep_groups(
    phases: Sequence[PhaseResult], by_rate: bool
) -> dict[str, list[tuple[float, dict[str, Any]]]]:
    """Phases as ``{group label: [(x, summary)]}``: x is the rate or the concurrency, and the
    other parameter (when it varies) tells the groups apart."""
    groups: dict[str, list[tuple[float, dict[str, Any]]]] = {}
    several = (
        len({phase.concurrency for phase in phases}) > 1
        if by_rate
        else len({phase.rate for phase in phases}) > 1
    )
    for phase in phases:
        if by_rate and phase.rate is not None:
            x, label = float(phase.rate), f"c={phase.concurrency}"
        else:
            x, label = float(phase.concurrency), f"rate={phase.rate:g}/s" if phase.rate is not None else ""
        groups.setdefault(label if several else "", []).append((x, phase.summary()))
    return groups


def _series(
    groups: dict[str, list[tuple[float, dict[str, Any]]]], key: str, name: str, dashed: bool = False
) -> list[Series]:
    return [
        Series(f"{name} {label}".strip(), [(x, float(summary[key])) for x, summary in points], dashed)
        for label, points in groups.items()
    ]


def _sweep_charts(result: RunResult) -> list[str]:
    phases = [phase for phase in result.phases if phase.elapsed > 0]
    if len(phases) < 2:
        return []
    mode = result.scenario.mode
    by_rate = mode == "open" and len({phase.rate for phase in phases}) > 1
    x_label = "arrival rate (requests/s)" if by_rate else "concurrency"
    xs = [float(phase.rate) if by_rate and phase.rate else float(phase.concurrency) for phase in phases]
    log_x = min(xs) > 0 and max(xs) / min(xs) >= 20
    groups = _sweep_groups(phases, by_rate)
    if mode == "sse":
        return [
            line_chart(
                f"Events per second vs {x_label}",
                _series(groups, "events_per_s", "events/s"),
                x_label,
                "events/s",
                log_x=log_x,
            ),
            line_chart(
                f"Time to first event vs {x_label}",
                _series(groups, "ttfe_p50_ms", "p50")
                + _series(groups, "ttfe_p99_ms", "p99")
                + _series(groups, "gap_p99_ms", "gap p99", dashed=True),
                x_label,
                "milliseconds",
                log_x=log_x,
            ),
        ]
    throughput = _series(groups, "throughput_rps", "requests/s")
    if by_rate:
        rates = sorted(set(xs))
        throughput.append(Series("target rate", [(x, x) for x in rates], dashed=True))
    latency = _series(groups, "p50_ms", "p50") + _series(groups, "p99_ms", "p99")
    if mode == "open":
        latency += _series(groups, "service_p99_ms", "service p99", dashed=True)
    if all("server_p99_ms" in summary for points in groups.values() for _, summary in points):
        latency += _series(groups, "server_p99_ms", "server p99", dashed=True)
        latency += _series(groups, "outside_p99_ms", "outside server p99", dashed=True)
    return [
        line_chart(f"Throughput vs {x_label}", throughput, x_label, "requests/s", log_x=log_x),
        line_chart(f"Latency vs {x_label}", latency, x_label, "milliseconds", log_x=log_x),
    ]


def _timeline_charts(result: RunResult) -> list[str]:
    offset = 0.0
    separators: list[tuple[float, str]] = []
    throughput: list[tuple[float, float]] = []
    events: list[tuple[float, float]] = []
    p50: list[tuple[float, float]] = []
    p99: list[tuple[float, float]] = []
    for phase in result.phases:
        rows = phase.stats.timeline.rows(end=phase.elapsed)
        if not rows:
            continue
        separators.append((offset, phase.label))
        for row in rows:
            t = offset + row["t"] + row["width"] / 2
            throughput.append((t, row["throughput"]))
            events.append((t, row["events_per_s"]))
            if row["completed"]:
                p50.append((t, row["p50_ms"]))
                p99.append((t, row["p99_ms"]))
        offset += max(phase.elapsed, rows[-1]["t"] + rows[-1]["width"])
    if not separators:
        return []
    sse = result.scenario.mode == "sse"
    rate_series = Series("events/s", events) if sse else Series("requests/s", throughput)
    latency_name = "time to first event" if sse else "latency"
    return [
        line_chart(
            "Events per second over time" if sse else "Throughput over time",
            [rate_series],
            "seconds since the run started",
            rate_series.name,
            markers=False,
            separators=separators,
        ),
        line_chart(
            f"{latency_name.capitalize()} over time (per interval)",
            [Series("p50", p50), Series("p99", p99)],
            "seconds since the run started",
            "milliseconds",
            markers=False,
            separators=separators,
        ),
    ]


_NOTE = " class='note'"

#: Percentiles plotted by the percentile-distribution chart.
SPECTRUM_PERCENTILES = (
    *range(0, 90, 5),
    90.0,
    92.5,
    95.0,
    96.25,
    97.5,
    98.75,
    99.0,
    99.375,
    99.5,
    99.75,
    99.9,
    99.95,
    99.99,
    99.995,
    99.999,
)


def _spectrum_position(percentile: float) -> float:
    """x of a percentile on the spectrum axis: the number of nines, ``-log10(1 - p/100)``."""
    return -math.log10(max(1e-9, 1.0 - percentile / 100.0))


def percentile_spectrum(
    title: str, histograms: Sequence[tuple[str, LogLinearHistogram, bool]], y_label: str = "milliseconds"
) -> str:
    """The HdrHistogram "percentile spectrum" chart: value (ms) against percentile, with the
    x axis stretched by nines (0, 90, 99, 99.9 %... equally spaced) so the tail is readable.

    Args:
        histograms: ``(name, microsecond histogram, dashed)`` per line.
    """
    series = []
    most_nines = 1.0
    for name, histogram, dashed in histograms:
        if not histogram.count:
            continue
        # beyond 1 / count the percentiles repeat the maximum: stop the line there
        wanted = [p for p in SPECTRUM_PERCENTILES if 1.0 - p / 100.0 >= 1.0 / histogram.count]
        values = histogram.percentiles(wanted)
        points = [(_spectrum_position(p), values[p] / 1000) for p in wanted]
        points.append((_spectrum_position(100.0 * (1.0 - 1.0 / histogram.count)), histogram.max / 1000))
        most_nines = max(most_nines, points[-1][0])
        series.append(Series(name, points, dashed))
    nines = max(1, math.ceil(most_nines - 1e-9))
    ticks = [(float(n), ("0" if n == 0 else f"{100 - 10 ** (2 - n):g}") + "%") for n in range(nines + 1)]
    return line_chart(title, series, "percentile", y_label, markers=False, x_ticks=ticks)


def _phase_spectrum(phase: PhaseResult) -> str:
    stats = phase.stats
    title = f"Latency by percentile, phase {phase.index} ({phase.label})"
    if isinstance(stats, RequestStats):
        lines: list[tuple[str, LogLinearHistogram, bool]] = [("latency", stats.latency, False)]
        if phase.mode == "closed":
            lines.append(("corrected (CO)", phase.corrected_latency(), True))
        elif phase.mode == "open":
            lines.append(("service time", stats.service_time, True))
        if stats.server_time.count:  # the split: the server's own time, and the rest
            lines.append(("server time (Server-Timing)", stats.server_time, True))
            lines.append(("outside the server (network + queueing)", stats.outside_server, True))
        return percentile_spectrum(title, lines)
    return percentile_spectrum(
        f"Stream timings by percentile, phase {phase.index} ({phase.label})",
        [
            ("time to first event", stats.time_to_first_event, False),
            ("event gap", stats.event_gap, True),
        ],
    )


def _phase_details(phase: PhaseResult) -> str:
    data = phase.to_dict()
    parts = [f"<h3>Phase {phase.index}: {escape(phase.label)}</h3>"]
    stats = phase.stats
    if isinstance(stats, RequestStats) and data.get("endpoints"):
        rows = [
            {"name": name, **{k: v for k, v in ep.items() if k != "latency_ms"}, **ep["latency_ms"]}
            for name, ep in data["endpoints"].items()
        ]
        columns = [
            ("name", "request"),
            ("completed", "completed"),
            ("failed", "failed"),
            ("throughput", "req/s"),
            ("p50", "p50 ms"),
            ("p99", "p99 ms"),
            ("max", "max ms"),
        ]
        parts.append(html_table(rows, columns))
    generator = phase.generator
    parts.append(
        f"<p{_NOTE if generator.bound else ''}>Generator self-check: loop thread at "
        f"{generator.cpu:.0%} of a core, event-loop lag p90 {generator.lag_p90_ms:.1f} ms"
        f"{' - ' + escape(generator.reason()) if generator.bound else ' (not saturated)'}.</p>"
    )
    if "corrected_latency_ms" in data:
        measured, corrected = data["latency_ms"], data["corrected_latency_ms"]
        keys = ("p50", "p90", "p99", "p99.9", "max")
        corrected_rows: list[dict[str, object]] = [
            {"kind": "measured (from each actual send)", **{key: measured[key] for key in keys}},
            {"kind": "corrected for coordinated omission", **{key: corrected[key] for key in keys}},
        ]
        parts.append(html_table(corrected_rows, [("kind", "latency ms"), *((key, key) for key in keys)]))
        parts.append(f"<p class='muted'>{escape(data['corrected_note'])}</p>")
    if "event_ids" in data:
        ids = data["event_ids"]
        resume = data["time_to_resume_ms"]
        parts.append(
            f"<p{_NOTE if ids['lost'] or ids['duplicated'] or ids['out_of_order'] else ''}>"
            f"Event ids: {ids['lost']:,} lost, {ids['duplicated']:,} duplicated, {ids['out_of_order']:,} "
            f"out of order, {ids['untracked']:,} without an id; {ids['reconnects']:,} reconnects "
            f"({ids['reconnect_lost']:,} ids skipped across them; time to resume p50 {resume['p50']} ms, "
            f"max {resume['max']} ms).</p>"
        )
    parts.append(_phase_spectrum(phase))
    if "schedule" in data:
        schedule = data["schedule"]
        parts.append(
            f"<p>Planned {schedule['planned']:,}, sent {schedule['sent']:,}, unsent {schedule['unsent']:,}; "
            f"behind schedule at the end: {schedule['behind_s']:.3f} s; send lag p99 "
            f"{schedule['send_lag_ms']['p99']} ms, max {schedule['send_lag_ms']['max']} ms.</p>"
            f"<p class='muted'>{escape(schedule['note'])}.</p>"
        )
    if data["statuses"]:
        statuses = ", ".join(f"{code}: {n:,}" for code, n in data["statuses"].items())
        parts.append(f"<p>Statuses: {escape(statuses)}</p>")
    if data["errors"]:
        items = []
        for kind, n in sorted(data["errors"].items(), key=lambda item: -item[1]):
            samples = "; ".join(data["error_samples"].get(kind, []))
            items.append(f"<li>{escape(kind)}: {n:,}{' - ' + escape(samples) if samples else ''}</li>")
        parts.append(f"<ul class='note'>{''.join(items)}</ul>")
    return "\n".join(parts)


def render_html(result: RunResult) -> str:
    """The whole report as one HTML document."""
    scenario = result.scenario
    columns = SUMMARY_COLUMNS[scenario.mode]
    summaries = [phase.summary() for phase in result.phases]
    mode_text = {
        "closed": "closed loop: each user sends its next request when the previous one is answered",
        "open": "open loop: requests arrive at a fixed rate; latency counts from each request's "
        "intended send time (coordinated-omission corrected)",
        "sse": "event streams: each user holds one stream open at a time",
    }[scenario.mode]
    limits = []
    if scenario.duration is not None:
        limits.append(f"{scenario.duration:g} s per phase")
    if scenario.count is not None:
        limits.append(f"{scenario.count:,} per phase")
    requests = "".join(
        f"<li><code>{escape(spec.method)} {escape(spec.path)}</code> weight {spec.weight}"
        f"{' (' + escape(spec.name) + ')' if spec.name != f'{spec.method} {spec.path}' else ''}</li>"
        for spec in scenario.requests
    )
    body = [
        f"<h1>Load test: {escape(scenario.name)}</h1>",
        f"<p>Target <code>{escape(scenario.target)}</code>; {escape(mode_text)}; "
        f"{escape(', '.join(limits))}; timeout {scenario.timeout:g} s. "
        f"Started {escape(result.started_at)}, finished {escape(result.finished_at or '-')}.</p>",
        f"<ul>{requests}</ul>",
    ]
    if result.interrupted:
        body.append("<p class='note'>The run was interrupted; the last phase is partial.</p>")
    body.append("<h2>Summary</h2>")
    body.append(html_table(summaries, (("phase", "phase"), *columns)))
    notes = run_notes(result)
    if notes:
        body.append("<ul class='note'>" + "".join(f"<li>{escape(note)}</li>" for note in notes) + "</ul>")
    if result.checks:
        body.append(checks_html(result))
    body.append("<h2>Charts</h2>")
    body.extend(_sweep_charts(result))
    body.extend(_timeline_charts(result))
    body.append("<h2>Phases</h2>")
    body.extend(_phase_details(phase) for phase in result.phases)
    body.append("<h2>Text summary</h2>")
    text_table = format_table(summaries, [key for key, _ in columns], [label for _, label in columns])
    body.append(f"<pre>{escape(text_table)}</pre>")
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>Load test: {escape(scenario.name)}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def checks_html(result: RunResult) -> str:
    """The run's checks (thresholds) as a table, failures first."""
    failed = [outcome for outcome in result.checks if not outcome.passed]
    verdict = (
        f"<p class='fail'>{len(failed)} of {len(result.checks)} checks FAILED (exit status 99)</p>"
        if failed
        else f"<p class='pass'>all {len(result.checks)} checks held</p>"
    )
    rows: list[dict[str, object]] = [
        {"result": "FAILED" if not outcome.passed else "held", "message": outcome.message()}
        for outcome in sorted(result.checks, key=lambda outcome: outcome.passed)
    ]
    return "<h2>Checks</h2>" + verdict + html_table(rows, (("result", "result"), ("message", "check")))


def write_html(result: RunResult, path: Path) -> Path:
    """Write :func:`render_html` to ``path``."""
    path.write_text(render_html(result), encoding="utf-8")
    return path
