"""The page that ties a report folder together: ``index.html`` over every run and Locust's report.

``make loadtest`` writes one folder per run (``closed/``, ``open/``, ``sse/``, ``llm/``, each with
a ``loadtest.json`` and ``loadtest.html``) and ``locust/``. :func:`write_index` puts an
``index.html`` at the top: per run its summary table, notes, checks and a link to its page; the
Locust statistics with links to Locust's own report; and links to the text summary and logs.
Self-contained like the run pages (no script, no external file).
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

from .html_report import CSS, html_table
from .locust_report import read_locust_stats, total_failures
from .report import SUMMARY_COLUMNS, run_notes
from .result import ResultMergeError, RunResult

__all__ = ["RUN_ORDER", "find_runs", "render_index", "write_index"]

#: Folders listed first, in this order (``make loadtest``'s runs); any others follow by name.
RUN_ORDER = ("closed", "open", "sse", "llm")
_LOCUST_COLUMNS = (
    ("Name", "name"),
    ("Request Count", "requests"),
    ("Failure Count", "failures"),
    ("Min Response Time", "min ms"),
    ("50%", "p50 ms"),
    ("95%", "p95 ms"),
    ("99%", "p99 ms"),
    ("Max Response Time", "max ms"),
    ("Requests/s", "req/s"),
)


def find_runs(directory: Path, stem: str = "loadtest") -> list[Path]:
    """The sub-folders of ``directory`` holding a ``<stem>.json``, in :data:`RUN_ORDER` first."""
    found = sorted(path.parent for path in directory.glob(f"*/{stem}.json"))
    order = {name: position for position, name in enumerate(RUN_ORDER)}
    return sorted(found, key=lambda path: (order.get(path.name, len(order)), path.name))


def _run_section(folder: Path, stem: str) -> str:
    name = escape(folder.name)
    link = f"{name}/{escape(stem)}.html"
    try:
        result = RunResult.from_dict(json.loads((folder / f"{stem}.json").read_text(encoding="utf-8")))
    except (OSError, ValueError, ResultMergeError) as exc:
        return (
            f"<h2>{name}</h2><p class='note'>cannot read {name}/{escape(stem)}.json: {escape(str(exc))}</p>"
        )
    scenario = result.scenario
    # the checks as the run recorded them (their outcomes are in the file)
    data = json.loads((folder / f"{stem}.json").read_text(encoding="utf-8"))
    failed = [check for check in data.get("checks", []) if not check["passed"]]
    verdict = ""
    if data.get("checks"):
        verdict = (
            f" <span class='fail'>{len(failed)} of {len(data['checks'])} checks failed</span>"
            if failed
            else f" <span class='pass'>{len(data['checks'])} checks held</span>"
        )
    rows = [phase.summary() for phase in result.phases]
    columns = SUMMARY_COLUMNS[scenario.mode]
    kind = {"closed": "closed loop", "open": "open loop", "sse": "event streams"}[scenario.mode]
    parts = [
        f"<h2><a href='{link}'>{name}</a>: {escape(scenario.name)}{verdict}</h2>",
        f"<p>{escape(kind)} on <code>{escape(scenario.target)}</code>, "
        f"{len(result.phases)} phase{'s' if len(result.phases) != 1 else ''}"
        f"{f', {result.processes} generator processes' if result.processes > 1 else ''}; "
        f"<a href='{link}'>full report with charts</a>, "
        f"<a href='{name}/{escape(stem)}.json'>JSON</a>, <a href='{name}/{escape(stem)}.csv'>CSV</a>.</p>",
        html_table(rows, (("phase", "phase"), *columns)),
    ]
    notes = run_notes(result)
    if notes:
        parts.append("<ul class='note'>" + "".join(f"<li>{escape(note)}</li>" for note in notes) + "</ul>")
    if failed:
        parts.append(
            "<ul class='note'>"
            + "".join(f"<li>{escape(check['message'])}</li>" for check in failed)
            + "</ul>"
        )
    return "\n".join(parts)


def _locust_section(folder: Path) -> str:
    stats_csv = folder / "locust_stats.csv"
    if not stats_csv.is_file():
        return ""
    rows = read_locust_stats(stats_csv)
    failures = total_failures(rows)
    name = escape(folder.name)
    links = (
        [f"<a href='{name}/locust.html'>Locust's report</a>"] if (folder / "locust.html").is_file() else []
    )
    links.append(f"<a href='{name}/locust_stats.csv'>statistics CSV</a>")
    if (folder / "locust.log").is_file():
        links.append(f"<a href='{name}/locust.log'>log</a>")
    verdict = (
        f"<span class='fail'>{failures} failures</span>"
        if failures
        else "<span class='pass'>no failures</span>"
    )
    table_rows: list[dict[str, object]] = []
    for raw in rows:
        row: dict[str, object] = {key: _number(raw.get(key, "")) for key, _ in _LOCUST_COLUMNS}
        if not raw.get("50%"):  # an older Locust without percentile columns
            row["50%"] = _number(raw.get("Median Response Time", ""))
        table_rows.append(row)
    return "\n".join(
        [
            f"<h2><a href='{name}/locust.html'>{name}</a>: Locust {verdict}</h2>",
            f"<p>{', '.join(links)}. Times in ms, rounded by Locust (whole ms below 100 ms).</p>",
            html_table(table_rows, _LOCUST_COLUMNS),
        ]
    )


def _number(text: str) -> object:
    """A Locust CSV cell as a number when it is one (so it is formatted like ours)."""
    try:
        return float(text)
    except ValueError:
        return text


def render_index(directory: Path, stem: str = "loadtest", title: str = "Load test") -> str:
    """The index page of ``directory`` (see the module docstring)."""
    sections = [_run_section(folder, stem) for folder in find_runs(directory, stem)]
    for folder in sorted(directory.glob("*/locust_stats.csv")):
        sections.append(_locust_section(folder.parent))
    extras = [
        f"<a href='{escape(name)}'>{escape(name)}</a>"
        for name in ("summary.txt", "logs/")
        if (directory / name.rstrip("/")).exists()
    ]
    also = f" Also: {', '.join(extras)}." if extras else ""
    body = [
        f"<h1>{escape(title)}: {escape(directory.name)}</h1>",
        f"<p>{len(sections)} reports in this folder.{also}</p>",
        *(sections or ["<p class='note'>no reports found</p>"]),
    ]
    return (
        "<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>{escape(title)}: {escape(directory.name)}</title><style>{CSS}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def write_index(directory: Path, stem: str = "loadtest", title: str = "Load test") -> Path:
    """Write :func:`render_index` to ``directory/index.html`` and return its path."""
    path = directory / "index.html"
    path.write_text(render_index(directory, stem, title), encoding="utf-8")
    return path
