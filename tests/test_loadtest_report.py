"""Result files from synthetic runs: JSON, CSV, timeline CSV, the summary table, the HTML report."""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

from loadtest.histogram import LogLinearHistogram
from loadtest.html_report import Series, line_chart, nice_ticks, percentile_spectrum, render_html
from loadtest.index_page import write_index
from loadtest.locust_report import locust_table, read_locust_stats, total_failures
from loadtest.report import format_table, summary_table, write_reports
from loadtest.runner import PhaseResult, RunResult
from loadtest.scenario import Mode, RequestSpec, Scenario
from loadtest.stats import RequestStats, StreamStats


def request_phase(index: int, concurrency: int, rate: float | None, scale: float) -> PhaseResult:
    stats = RequestStats()
    for i in range(1000):
        latency = scale * (1 + i % 100) / 1000
        stats.record_response("GET /", i / 500, latency, status=200, ok=True, size=100, service=latency / 2)
        if rate is not None:
            stats.record_lag(latency / 2)
    stats.record_error("GET /", 1.5, 0.5, "ReadTimeout", "timed out")
    mode = "open" if rate is not None else "closed"
    phase = PhaseResult(index, mode, concurrency, rate, 2.0, None, "2026-01-01T00:00:00+00:00", stats)
    phase.elapsed = 2.0
    phase.users_started = concurrency
    if rate is not None:
        phase.planned, phase.unsent, phase.behind = 1100, 99, 0.25
    phase.finished = True
    return phase


def stream_phase(index: int, concurrency: int) -> PhaseResult:
    stats = StreamStats()
    for i in range(concurrency):
        stats.started += 1
        stats.record_open(200)
        stats.record_first_event(0.1 + i / 100, 0.002 * (1 + i % 5))
        for j in range(10):
            stats.record_event(0.2 + i / 100 + j / 50, gap=0.02)
        stats.record_end(0.3, cut=i % 2 == 0)
    phase = PhaseResult(index, "sse", concurrency, None, 2.0, None, "2026-01-01T00:00:00+00:00", stats)
    phase.elapsed = 2.0
    phase.users_started = concurrency
    return phase


def make_run(mode: Mode) -> RunResult:
    spec = RequestSpec("GET /", url="http://127.0.0.1:1/")
    rates = (100.0, 400.0) if mode == "open" else ()
    scenario = Scenario("demo <&>", "http://127.0.0.1:1", mode, (spec,), (1, 10, 100), rates, 2.0)
    result = RunResult(
        scenario, started_at="2026-01-01T00:00:00+00:00", finished_at="2026-01-01T00:00:10+00:00"
    )
    if mode == "sse":
        result.phases = [stream_phase(i, c) for i, c in enumerate((1, 10, 100))]
    elif mode == "open":
        result.phases = [request_phase(i, 64, rate, 1.0 + i) for i, rate in enumerate((100.0, 400.0))]
    else:
        result.phases = [request_phase(i, c, None, 1.0 + i) for i, c in enumerate((1, 10, 100))]
    return result


@pytest.mark.parametrize("mode", ["closed", "open", "sse"])
def test_reports_are_written_and_consistent(mode: Mode, tmp_path: Path) -> None:
    result = make_run(mode)
    paths = write_reports(result, tmp_path / "out", "run")
    assert {p.name for p in paths.values()} == {
        "summary.txt",
        "run.json",
        "run.csv",
        "run_timeline.csv",
        "run.html",
    }
    assert paths["summary"].read_text() == summary_table(result) + "\n"

    data = json.loads(paths["json"].read_text())
    assert data["scenario"]["mode"] == mode
    assert len(data["phases"]) == len(result.phases)
    first = data["phases"][0]
    assert first["summary"]["errors"] == sum(result.phases[0].stats.errors.values())
    assert first["histograms_us"]

    with paths["csv"].open() as stream:
        rows = list(csv.DictReader(stream))
    assert [int(row["phase"]) for row in rows] == list(range(len(result.phases)))
    key = "p99_ms" if mode != "sse" else "ttfe_p99_ms"
    assert all(float(row[key]) > 0 for row in rows)

    with paths["timeline"].open() as stream:
        timeline = list(csv.DictReader(stream))
    assert timeline and {"phase", "t", "width", "throughput", "p99_ms"} <= set(timeline[0])


def test_open_loop_json_explains_the_correction() -> None:
    data = make_run("open").to_dict()
    schedule = data["phases"][0]["schedule"]
    assert schedule["planned"] == 1100 and schedule["unsent"] == 99 and schedule["sent"] == 1001
    assert "intended send time" in schedule["note"]
    latency = data["phases"][0]["latency_ms"]
    service = data["phases"][0]["service_time_ms"]
    assert latency["p50"] > service["p50"]


def test_summary_table_lists_phases_and_notes() -> None:
    table = summary_table(make_run("open"))
    assert "rate/s" in table and "400" in table
    assert "99 planned requests were never sent" in table
    assert "ReadTimeout" in table


def test_locust_statistics_table(tmp_path: Path) -> None:
    stats = tmp_path / "run_stats.csv"
    # Locust clamps "Median Response Time" to the exact minimum when the rounded median is below
    # it (here every response took 1.3-1.9 ms, kept as 1 ms): the table must show the 50% column.
    stats.write_text(
        "Type,Name,Request Count,Failure Count,Median Response Time,Average Response Time,"
        "Min Response Time,Max Response Time,Requests/s,50%,95%,99%\n"
        "GET,/echo,100,0,1.31,1.6,1.31,9.5,50.25,1,2,3\n"
        ",Aggregated,100,2,1.31,1.6,1.31,9.5,50.25,1,2,3\n"
    )
    rows = read_locust_stats(stats)
    assert total_failures(rows) == 2
    table = locust_table(rows)
    assert table.splitlines()[0].split() == [
        "type",
        "name",
        "requests",
        "failures",
        "min",
        "ms",
        "p50",
        "ms",
        "p95",
        "ms",
        "p99",
        "ms",
        "max",
        "ms",
        "req/s",
    ]
    assert table.splitlines()[2].split() == [
        "GET",
        "/echo",
        "100",
        "0",
        "1.31",
        "1",
        "2",
        "3",
        "9.5",
        "50.25",
    ]


def test_format_table_aligns_columns() -> None:
    text = format_table([{"a": 1, "b": "x"}, {"a": 12345, "b": "yy"}], ["a", "b"], ["A", "B"])
    assert text.splitlines() == [
        "     A  B",
        "------  --",
        "     1  x",
        "12,345  yy",
    ]


@pytest.mark.parametrize("mode", ["closed", "open", "sse"])
def test_html_is_self_contained_with_valid_svg_charts(mode: Mode) -> None:
    html = render_html(make_run(mode))
    assert html.startswith("<!DOCTYPE html>")
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "@import" not in html and "url(" not in html
    assert "demo &lt;&amp;&gt;" in html  # the scenario name is escaped
    svgs = re.findall(r"<svg.*?</svg>", html, re.S)
    phases = len(make_run(mode).phases)
    assert len(svgs) == 4 + phases  # two sweep charts, two timelines, a percentile chart per phase
    assert html.count('<text x="64" y="18" class="title">') == 4 + phases  # every chart titled
    assert len(re.findall(r"class=\"title\">[^<]* by percentile, phase ", html)) == phases
    for svg in svgs:
        ElementTree.fromstring(svg)  # well-formed XML
    # The open-loop run sweeps two rates at one concurrency; the others sweep concurrency.
    expected_axis = "vs arrival rate" if mode == "open" else "vs concurrency"
    other_axis = "vs concurrency" if mode == "open" else "vs arrival rate"
    assert expected_axis in html and other_axis not in html
    assert "over time" in html


def test_line_chart_handles_empty_and_single_points() -> None:
    assert "no data" in line_chart("t", [Series("a", [])], "x", "y")
    single = line_chart("t", [Series("a", [(5.0, 0.0)])], "x", "y", log_x=True)
    ElementTree.fromstring(single)


def frame_and_points(svg: str) -> tuple[tuple[float, float, float, float], list[tuple[float, float]]]:
    """The plot frame (x, y, width, height) and every polyline point of a chart."""
    frame = re.search(
        r'<rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="([\d.]+)" class="frame"', svg
    )
    assert frame is not None
    x, y, width, height = (float(v) for v in frame.groups())
    points = [
        (float(px), float(py))
        for line in re.findall(r'<polyline points="([^"]+)"', svg)
        for px, py in (pair.split(",") for pair in line.split())
    ]
    return (x, y, width, height), points


@pytest.mark.parametrize(("low", "high"), [(1, 7), (0.5, 86.1), (7.6, 33.2), (0, 97), (0.25, 2.9)])
def test_ticks_cover_the_data_at_both_ends(low: float, high: float) -> None:
    ticks = nice_ticks(low, high)
    assert ticks[0] <= low and ticks[-1] >= high
    assert ticks == sorted(ticks) and len(ticks) <= 12


@pytest.mark.parametrize("mode", ["closed", "open", "sse"])
def test_every_line_stays_inside_its_chart(mode: Mode) -> None:
    html = render_html(make_run(mode))
    for svg in re.findall(r"<svg.*?</svg>", html, re.S):
        if "polyline" not in svg:
            continue
        (x, y, width, height), points = frame_and_points(svg)
        for px, py in points:
            assert x - 0.1 <= px <= x + width + 0.1, (px, svg[:120])
            assert y - 0.1 <= py <= y + height + 0.1, (py, svg[:120])


def test_percentile_spectrum_spreads_the_tail_by_nines() -> None:
    histogram = LogLinearHistogram()
    for value in range(1, 10_001):
        histogram.record(value * 10)  # 10 us .. 100 ms
    svg = percentile_spectrum("spectrum", [("latency", histogram, False)])
    ElementTree.fromstring(svg)
    labels = re.findall(r'class="tick" text-anchor="middle">([^<]+)<', svg)
    assert labels == ["0%", "90%", "99%", "99.9%", "99.99%"]  # 10,000 samples: four nines
    (x, _y, width, _height), points = frame_and_points(svg)
    assert points[-1][0] == pytest.approx(x + width, abs=0.2)  # the maximum at the right edge
    assert all(b[0] >= a[0] and b[1] <= a[1] + 0.1 for a, b in itertools.pairwise(points))


def test_index_page_links_every_run_and_lists_failed_checks(tmp_path: Path) -> None:
    closed = make_run("closed")
    closed.scenario = dataclasses.replace(closed.scenario, thresholds=("p99<1ms",))
    closed.check()
    write_reports(closed, tmp_path / "closed")
    write_reports(make_run("sse"), tmp_path / "sse")
    write_reports(make_run("open"), tmp_path / "zz-extra")
    (tmp_path / "locust").mkdir()
    (tmp_path / "locust" / "locust_stats.csv").write_text(
        "Type,Name,Request Count,Failure Count,Median Response Time,Min Response Time,"
        "Max Response Time,Requests/s,50%,95%,99%\n"
        ",Aggregated,100,0,1.31,1.31,9.5,50.25,1,2,3\n"
    )
    path = write_index(tmp_path, title="make loadtest")
    page = path.read_text()
    assert path == tmp_path / "index.html" and page.startswith("<!DOCTYPE html>")
    assert "<script" not in page.lower()
    positions = [page.index(f"href='{name}/loadtest.html'") for name in ("closed", "sse", "zz-extra")]
    assert positions == sorted(positions)  # make loadtest's order first, then by name
    assert "3 of 3 checks failed" in page and "p99&lt;1ms failed in phase 0" in page
    assert "href='locust/locust.html'" in page and "Aggregated" in page
    assert "99 planned requests were never sent" in page  # the open run's notes
