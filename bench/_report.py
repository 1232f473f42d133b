"""Turn a results document into a markdown report and a chart (SVG, via matplotlib)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

OURS = "flowno-io"
#: Typography of the tables (written as escapes: ruff flags the characters as look-alikes).
DASH = "\N{EN DASH}"
TIMES = "\N{MULTIPLICATION SIGN}"


def _num(value: float | None, digits: int = 0) -> str:
    if value is None:
        return DASH
    return f"{value:,.{digits}f}"


def _percent(value: float | None) -> str:
    return DASH if value is None else f"{value:+.2f}%"


def _share(value: float | None) -> str:
    return DASH if value is None else f"{value * 100:.0f}%"


def _ratio(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f}{TIMES}"


def targets_table(targets: list[dict[str, Any]]) -> list[str]:
    """The issue's targets, each with its measured ratio and whether it holds."""
    lines = [
        "| target | measured (rate) | same ratio by CPU µs per unit (peer ÷ ours) | met (by rate) |",
        "|---|---|---|---|",
    ]
    for target in targets:
        met = {True: "yes", False: "**no**", None: DASH}[target["met"]]
        lines.append(f"| {target['target']} | {target['measured']} | {target.get('by_cpu', DASH)} | {met} |")
    return lines


def throughput_table(scenarios: dict[str, Any]) -> list[str]:
    """One row per scenario and system: median rate, spread, CPU per unit, ratios against ours."""
    lines = [
        f"| scenario | system | median | min{DASH}max | CPU µs/unit "
        "| ours ÷ this (rate) | this ÷ ours (CPU) | of ceiling | CPU 0 used outside the server |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for record in scenarios.values():
        if record.get("kind") != "throughput":
            continue
        for name, system in record["systems"].items():
            label = f"**{name}**" if name == OURS else name
            ratio = DASH if name == OURS else _ratio(system.get("ours_over_this"))
            cpu_ratio = DASH if name == OURS else _ratio(system.get("this_cpu_over_ours"))
            lines.append(
                f"| {record['title']} | {label} | {_num(system['median_rate'])} {record['unit']} | "
                f"{_num(system['min_rate'])}{DASH}{_num(system['max_rate'])} | "
                f"{_num(system['median_cpu_us'], 1)} | "
                f"{ratio} | {cpu_ratio} | {_share(system.get('fraction_of_ceiling'))} | "
                f"{_share(system.get('median_foreign_cpu0'))} |"
            )
    return lines


def idle_table(record: dict[str, Any]) -> list[str]:
    """KiB per idle connection and throughput retained, per server."""
    lines = [
        "| server | KiB per idle connection | req/s without | req/s with | retained (rate) | retained (CPU) "
        "| still open at end |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, system in record["systems"].items():
        retained = system.get("retained")
        by_cpu = system.get("retained_by_cpu")
        lines.append(
            f"| {name} | {system['kib_per_connection']:.2f} | {_num(system['rate_without'])} | "
            f"{_num(system['rate_with'])} | {_num(None if retained is None else retained * 100, 1)}% | "
            f"{_num(None if by_cpu is None else by_cpu * 100, 1)}% | "
            f"{', '.join(str(n) for n in system['still_open_at_end'])} of {system['idle_connections']:,} |"
        )
    return lines


def memory_table(record: dict[str, Any]) -> list[str]:
    """RSS at warm-up and end, growth in percent and bytes per connection."""
    lines = [
        "| server | connections | RSS after warm-up (KiB) | RSS at end (KiB) | growth "
        "| bytes per connection | growth over the second half |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, system in record["systems"].items():
        growth = system.get("growth_percent")
        reached = "" if system["reached_target"] else f" (of {system['target']:,}: time limit)"
        lines.append(
            f"| {name} | {system['connections']:,}{reached} | {system['rss_kib_after_warmup']:,} | "
            f"{system['rss_kib_end']:,} | {_percent(growth)} | "
            f"{_num(system.get('bytes_per_connection'), 1)} | "
            f"{_percent(system.get('growth_second_half_percent'))} |"
        )
    return lines


def render_markdown(document: dict[str, Any], chart_name: str | None) -> str:
    """The whole markdown report."""
    meta = document["meta"]
    scenarios = document["scenarios"]
    out = [f"# flowno-io benchmarks, {meta['date']}", ""]
    out.append(
        f"{meta['machine']}; servers pinned to CPU 0, load generators and clients to CPU 1; "
        f"{meta['rounds']} interleaved rounds of {meta['duration']} s, medians"
        f"{' (quick mode: a smoke test, not a measurement)' if meta['quick'] else ''}. "
        f"Commit {meta['commit']}. Load average at start {meta['loadavg_start']}, "
        f"at end {meta.get('loadavg_end')}."
    )
    out.append("")
    if chart_name:
        out += [f"![benchmark chart]({chart_name})", ""]
    if document.get("targets"):
        out += ["## Targets (issue 12), same-run ratios", "", *targets_table(document["targets"]), ""]
    if any(r.get("kind") == "throughput" for r in scenarios.values()):
        out += [
            "## Throughput",
            "",
            "CPU µs/unit is the measured process's `utime+stime` per request or event: the server's, "
            "except in the client rows, where it is the client's. *CPU 0 used outside the server* "
            "is the share of the server's core that the server process itself did not use while it "
            "was measured (median): other programs of this shared machine, and kernel network work "
            "done while the server slept. A high share means the rate is not to be trusted. *Of ceiling* "
            "(hello rows) is the rate as a share of the bare asyncio `Protocol` ceiling's.",
            "",
            *throughput_table(scenarios),
            "",
        ]
        notes = [
            f"- *{r['title']}*: {r['note']}"
            for r in scenarios.values()
            if r.get("note") and r["kind"] == "throughput"
        ]
        for record in scenarios.values():
            for name, reason in record.get("skipped", {}).items():
                notes.append(f"- *{record['title']}*: {name} skipped: {reason}.")
        out += [*notes, ""] if notes else []
    if "idle" in scenarios:
        record = scenarios["idle"]
        out += [f"## {record['title']}", "", *idle_table(record), "", record["note"], ""]
    if "memory" in scenarios:
        record = scenarios["memory"]
        out += [f"## {record['title']}", "", *memory_table(record), "", record["note"], ""]
    out += ["## Versions", "", ", ".join(f"{k} {v}" for k, v in meta["versions"].items()), ""]
    if document.get("errors"):
        out += (
            ["## Scenarios that failed", ""] + [f"- {k}: {v}" for k, v in document["errors"].items()] + [""]
        )
    return "\n".join(out)


def render_chart(document: dict[str, Any], path: Path) -> bool:
    """Bar charts of the medians (one panel per scenario) and the memory curves; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    scenarios = document["scenarios"]
    panels: list[tuple[str, dict[str, Any]]] = list(scenarios.items())
    if not panels:
        return False
    columns = 3
    rows = (len(panels) + columns - 1) // columns
    figure, axes_grid = plt.subplots(rows, columns, figsize=(15, 3.6 * rows), squeeze=False)
    axes_list = [axes for row in axes_grid for axes in row]
    for axes, (_key, record) in zip(axes_list, panels, strict=False):
        kind = record.get("kind")
        if kind == "throughput":
            names = list(record["systems"])
            values = [record["systems"][n]["median_rate"] for n in names]
            labels = [
                f"{v:,.0f}  ({record['systems'][n]['median_cpu_us']:.1f} µs)"
                for n, v in zip(names, values, strict=True)
            ]
            unit = f"{record['unit']} (label: rate, CPU µs per unit)"
            _bars(axes, names, values, labels, record["title"], unit)
        elif kind == "idle":
            names = list(record["systems"])
            values = [record["systems"][n]["kib_per_connection"] for n in names]
            _bars(
                axes, names, values, [f"{v:.2f}" for v in values], record["title"], "KiB per idle connection"
            )
        elif kind == "memory":
            for name, system in record["systems"].items():
                xs = [point[0] / 1000 for point in system["series"]]
                ys = [point[1] / 1024 for point in system["series"]]
                axes.plot(xs, ys, marker=".", label=name, linewidth=2.5 if name == OURS else 1.2)
            axes.set_title(record["title"], fontsize=9)
            axes.set_xlabel("thousand connections", fontsize=8)
            axes.set_ylabel("RSS (MiB)", fontsize=8)
            axes.legend(fontsize=7)
            axes.tick_params(labelsize=7)
    for axes in axes_list[len(panels) :]:
        axes.set_visible(False)
    meta = document["meta"]
    figure.suptitle(
        f"flowno-io vs peers, {meta['date']}: server on CPU 0, load on CPU 1, "
        f"medians of {meta['rounds']} rounds",
        fontsize=11,
    )
    figure.tight_layout()
    figure.savefig(path, format=path.suffix.lstrip("."))
    plt.close(figure)
    return True


def _bars(axes: Any, names: list[str], values: list[float], labels: list[str], title: str, unit: str) -> None:
    colors = ["#d95f02" if name == OURS else "#7570b3" for name in names]
    positions = range(len(names))
    bars = axes.barh(list(positions), values, color=colors)
    axes.set_yticks(list(positions), [name.replace(" (seed)", "\n(seed)") for name in names], fontsize=7)
    axes.invert_yaxis()
    axes.set_title(title, fontsize=9)
    axes.set_xlabel(unit, fontsize=8)
    axes.tick_params(axis="x", labelsize=7)
    top = max(values) if values else 0
    for bar, label in zip(bars, labels, strict=True):
        axes.text(
            bar.get_width() + top * 0.01,
            bar.get_y() + bar.get_height() / 2,
            label,
            va="center",
            fontsize=7,
        )
    axes.set_xlim(0, top * 1.35 if top else 1)
