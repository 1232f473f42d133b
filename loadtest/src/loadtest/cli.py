"""Command line: ``python -m loadtest {closed,open,sse,run} ...``.

Examples::

    # 1, 10 and 100 users for 5 s each against the echo service
    python -m loadtest closed http://127.0.0.1:8080/echo -c 1,10,100 -d 5

    # 500 requests/s for 10 s, at most 64 in flight, latency from the intended send times
    python -m loadtest open http://127.0.0.1:8080/delay/5 --rate 500 -c 64 -d 10

    # 100 concurrent event streams for 10 s
    python -m loadtest sse "http://127.0.0.1:8081/events?count=50&interval_ms=20" -c 100 -d 10

    # a scenario file, aimed at a service on another port
    python -m loadtest run loadtest/scenarios/echo-mix.toml --target http://127.0.0.1:9000

    # a table from a Locust run's --csv output
    python -m loadtest locust-summary reports/locust_stats.csv

    # every core: 4 generator processes, one merged report
    python -m loadtest closed http://127.0.0.1:8080/echo -c 400 -d 10 --processes auto

    # results of the same scenario run on several machines, merged into one report
    python -m loadtest merge host1/loadtest.json host2/loadtest.json -o merged/

    # a CI gate: exit 99 unless p99 stays under 50 ms and fewer than 1 % of requests fail
    python -m loadtest closed http://127.0.0.1:8080/echo -c 10 -d 5 \
        --threshold 'p99<50ms' --threshold 'error_rate<0.01'

Exit status: 0 done, 1 failures with ``--fail-on-error``, 2 bad arguments or scenario,
99 a threshold failed (open loop: also when the schedule was not kept; ``--strict``: also when
the generator was saturated), 130 interrupted (results so far are still written).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from datetime import datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlsplit

from .index_page import write_index
from .locust_report import locust_table, read_locust_stats, total_failures
from .parallel import ParallelRunError, cpu_count, run_in_processes, usable_processes
from .report import summary_table, write_reports
from .result import ResultMergeError, RunResult, merge_results
from .runner import run_scenario
from .scenario import (
    DEFAULT_DURATION,
    DEFAULT_TIMEOUT,
    RequestSpec,
    Scenario,
    ScenarioError,
    load_scenario,
)
from .thresholds import THRESHOLD_EXIT_STATUS, ThresholdError, parse_threshold

__all__ = ["ProgressLine", "build_parser", "main"]


class ProgressLine:
    """A status line rewritten in place on a terminal; silent when the stream is not a TTY."""

    def __init__(self, stream: IO[str] | None = None, enabled: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self._shown = False

    def __call__(self, text: str | None) -> None:
        """Show ``text`` in place of the previous line, or clear the line for ``None``."""
        if not self.enabled:
            return
        if text is None:
            if self._shown:
                self.stream.write("\r\x1b[2K")
                self.stream.flush()
                self._shown = False
            return
        self.stream.write("\r\x1b[2K" + text)
        self.stream.flush()
        self._shown = True


def _int_list(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers separated by commas, not {text!r}") from None
    if not values or any(value < 1 for value in values):
        raise argparse.ArgumentTypeError("expected positive integers")
    return values


def _float_list(text: str) -> tuple[float, ...]:
    try:
        values = tuple(float(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, not {text!r}") from None
    if not values or any(not value > 0 for value in values):
        raise argparse.ArgumentTypeError("expected positive numbers")
    return values


def _header(text: str) -> tuple[str, str]:
    name, sep, value = text.partition(":")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected 'Name: value', not {text!r}")
    return name.strip(), value.strip()


def _add_limits(parser: argparse.ArgumentParser, scenario_file: bool) -> None:
    default_note = "" if not scenario_file else " (overrides the scenario)"
    parser.add_argument(
        "-c",
        "--concurrency",
        type=_int_list,
        help="users (closed/sse) or most requests in flight (open); a list such as 1,10,100 "
        f"runs one phase per level{default_note}",
    )
    parser.add_argument(
        "-d", "--duration", type=float, help=f"seconds per phase (default {DEFAULT_DURATION:g}){default_note}"
    )
    parser.add_argument(
        "-n", "--count", type=int, help=f"requests (streams in sse mode) per phase{default_note}"
    )
    parser.add_argument(
        "--timeout", type=float, help=f"seconds per request (default {DEFAULT_TIMEOUT:g}){default_note}"
    )
    parser.add_argument("--think", type=float, help=f"seconds each user waits between requests{default_note}")


def _add_output(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-o",
        "--out",
        type=Path,
        help="directory for the JSON, CSV and HTML results (default: loadtest-reports/<timestamp>)",
    )
    parser.add_argument(
        "--stem", default="loadtest", help="file name stem of the results (default: loadtest)"
    )
    parser.add_argument("--no-files", action="store_true", help="print the summary only, write no files")
    parser.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a target that is not a loopback address (refused by default)",
    )
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument(
        "--progress", action="store_true", default=None, help="always show the live progress line"
    )
    progress.add_argument(
        "--no-progress", dest="progress", action="store_false", help="never show it (default: only on a TTY)"
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the report paths")
    parser.add_argument(
        "--fail-on-error", action="store_true", help="exit with status 1 if any request failed unexpectedly"
    )


def _threshold(text: str) -> str:
    try:
        parse_threshold(text)
    except ThresholdError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _processes(text: str) -> int:
    if text == "auto":
        return cpu_count()
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of processes or 'auto', not {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("expected at least 1 process")
    return value


def _add_processes(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--processes",
        type=_processes,
        default=1,
        metavar="N",
        help="generator processes sharing the load (default 1; 'auto': one per core); their results "
        "merge into one report",
    )
    parser.add_argument(
        "--source-address",
        action="append",
        default=[],
        metavar="ADDR",
        help="bind connections to this source address (repeatable: process N uses the N-th, round "
        "robin); e.g. 127.0.0.2 ... 127.0.0.9 pass the ~28k ports one address pair allows",
    )


def _add_checks(parser: argparse.ArgumentParser, mode: str | None) -> None:
    parser.add_argument(
        "--threshold",
        action="append",
        type=_threshold,
        default=[],
        metavar="EXPR",
        help="a pass/fail check on every phase, k6-style (repeatable): 'p99<50ms', "
        "'error_rate<0.01', 'rps>1000', 'unsent==0', 'p99{GET /bytes/1024}<20ms' for one request; "
        f"a failed one exits {THRESHOLD_EXIT_STATUS}",
    )
    if mode in ("open", None):
        parser.add_argument(
            "--no-schedule-check",
            dest="schedule_check",
            action="store_false",
            default=None,
            help="open loop: do not fail when the schedule was not kept (by default unsent > 0 or "
            "behind > 1 s fails the run)",
        )
    parser.add_argument(
        "--strict",
        action="store_true",
        default=None,
        help="fail the run when a phase was generator-bound (the load generator saturated)",
    )
    if mode in ("sse", None):
        parser.add_argument(
            "--reconnect",
            action="store_true",
            default=None,
            help="sse: when the server closes a stream, reconnect with Last-Event-ID (as a browser does)",
        )


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (sub-commands ``closed``, ``open``, ``sse``, ``run``)."""
    parser = argparse.ArgumentParser(
        prog="python -m loadtest",
        description="Bounded load tests on flowno_io.HttpClient: closed loop, open loop, event streams.",
        epilog="Only loopback targets unless --allow-remote. Every phase ends after its duration or count.",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="{closed,open,sse,run,merge,index,locust-summary}"
    )
    helps = {
        "closed": "N users, each sending its next request when the previous one is answered",
        "open": "a fixed arrival rate; latency from each request's intended send time",
        "sse": "N concurrent event streams: time to first event, events/s, gaps between events",
    }
    for mode, text in helps.items():
        sub = commands.add_parser(mode, help=text, description=text)
        sub.add_argument("url", help="full URL, e.g. http://127.0.0.1:8080/echo")
        sub.add_argument("-X", "--method", help="HTTP method (default GET, or POST with a body)")
        body = sub.add_mutually_exclusive_group()
        body.add_argument("--body", help="request body (text)")
        body.add_argument(
            "--json", dest="json_body", help="request body as a JSON document (sets Content-Type)"
        )
        sub.add_argument(
            "-H", "--header", action="append", type=_header, default=[], help="'Name: value' (repeatable)"
        )
        sub.add_argument(
            "--expect-status", type=_int_list, help="statuses that count as success (default: any 2xx)"
        )
        if mode == "open":
            sub.add_argument(
                "-r",
                "--rate",
                type=_float_list,
                required=True,
                help="arrivals per second; a list runs one phase each",
            )
        _add_limits(sub, scenario_file=False)
        _add_processes(sub)
        _add_checks(sub, mode)
        _add_output(sub)
    locust = commands.add_parser(
        "locust-summary",
        help="print a table from Locust's --csv statistics",
        description="Print a summary table from a Locust <prefix>_stats.csv file.",
    )
    locust.add_argument("stats_csv", type=Path, help="the <prefix>_stats.csv file Locust wrote")
    locust.add_argument(
        "--fail-on-error", action="store_true", help="exit with status 1 if Locust saw failures"
    )
    run = commands.add_parser("run", help="run a TOML scenario file", description="Run a TOML scenario file.")
    run.add_argument("scenario", type=Path, help="the scenario file")
    run.add_argument("-t", "--target", help="http://host:port replacing the scenario's target")
    run.add_argument(
        "-r", "--rate", type=_float_list, help="arrivals per second (open mode; overrides the scenario)"
    )
    _add_limits(run, scenario_file=True)
    _add_processes(run)
    _add_checks(run, None)
    _add_output(run)
    merge = commands.add_parser(
        "merge",
        help="merge result JSON files of the same scenario (several hosts) into one report",
        description="Merge loadtest.json files written by runs of the same scenario at the same time "
        "(e.g. on several machines) into one report: users, rates and counts add up, histograms merge "
        "exactly. Thresholds are checked again on the merged phases.",
    )
    merge.add_argument("results", type=Path, nargs="+", help="loadtest.json files")
    index = commands.add_parser(
        "index",
        help="write index.html over a folder of reports (make loadtest's)",
        description="Write DIR/index.html: every run's summary, notes and checks with a link to its "
        "page, and the Locust report; prints the page's path.",
    )
    index.add_argument("directory", type=Path, help="the report folder (its sub-folders hold the runs)")
    index.add_argument("--stem", default="loadtest", help="file name stem of the results (default: loadtest)")
    index.add_argument("--title", default="Load test", help="the page title")
    _add_checks(merge, None)
    _add_output(merge)
    return parser


def _scenario_from_url(args: argparse.Namespace) -> Scenario:
    parts = urlsplit(args.url)
    if not parts.scheme or not parts.netloc:
        raise ScenarioError(f"expected a full URL such as http://127.0.0.1:8080/echo, not {args.url!r}")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    headers = dict(args.header)
    body: bytes | None = None
    if args.json_body is not None:
        body = args.json_body.encode()
        headers.setdefault("Content-Type", "application/json")
    elif args.body is not None:
        body = args.body.encode()
    method = (args.method or ("POST" if body is not None else "GET")).upper()
    spec = RequestSpec(
        name=f"{method} {path}",
        method=method,
        path=path,
        body=body,
        headers=headers,
        expect_status=frozenset(args.expect_status) if args.expect_status else None,
    )
    return Scenario(
        name=f"{method} {path}",
        target=f"{parts.scheme}://{parts.netloc}",
        mode=args.command,
        requests=(spec,),
        concurrency=args.concurrency or (10,),
        rates=tuple(args.rate) if args.command == "open" else (),
        duration=args.duration
        if args.duration is not None or (args.count is not None and args.command != "sse")
        else DEFAULT_DURATION,
        count=args.count,
        timeout=args.timeout if args.timeout is not None else DEFAULT_TIMEOUT,
        think_time=args.think or 0.0,
        thresholds=tuple(args.threshold),
        schedule_check=getattr(args, "schedule_check", None) is not False,
        strict=bool(args.strict),
        reconnect=bool(getattr(args, "reconnect", False)),
    )


def _scenario_from_file(args: argparse.Namespace) -> Scenario:
    scenario = load_scenario(args.scenario)
    changes: dict[str, Any] = {}
    if args.target:
        changes["target"] = args.target
    if args.concurrency:
        changes["concurrency"] = args.concurrency
    if args.rate:
        changes["rates"] = args.rate
    if args.duration is not None or args.count is not None:
        changes["duration"] = args.duration
        changes["count"] = args.count
        if args.duration is None and scenario.mode == "sse":
            changes["duration"] = scenario.duration  # a count cannot bound a stream that never ends
    if args.timeout is not None:
        changes["timeout"] = args.timeout
    if args.think is not None:
        changes["think_time"] = args.think
    if args.threshold:
        changes["thresholds"] = (*scenario.thresholds, *args.threshold)
    if args.schedule_check is not None:
        changes["schedule_check"] = args.schedule_check
    if args.strict is not None:
        changes["strict"] = args.strict
    if args.reconnect is not None:
        changes["reconnect"] = args.reconnect
    return dataclasses.replace(scenario, **changes) if changes else scenario


def make_scenario(args: argparse.Namespace) -> Scenario:
    """The checked scenario the parsed arguments describe.

    Raises:
        ScenarioError: an invalid or unbounded scenario, or a remote target without ``--allow-remote``.
    """
    scenario = _scenario_from_file(args) if args.command == "run" else _scenario_from_url(args)
    return scenario.checked(allow_remote=args.allow_remote)


def _default_out() -> Path:
    return Path("loadtest-reports") / datetime.now().strftime("%Y%m%d-%H%M%S")


def _unexpected_failures(result: RunResult) -> int:
    return sum(sum(phase.stats.errors.values()) for phase in result.phases)


def _locust_summary(args: argparse.Namespace) -> int:
    try:
        rows = read_locust_stats(args.stats_csv)
    except OSError as exc:
        print(f"cannot read {args.stats_csv}: {exc}", file=sys.stderr)
        return 2
    print(locust_table(rows))
    failures = total_failures(rows)
    if failures:
        print(f"{failures} failures (see {str(args.stats_csv).replace('_stats.csv', '_failures.csv')})")
    return 1 if failures and args.fail_on_error else 0


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "locust-summary":
        return _locust_summary(args)
    if args.command == "merge":
        return _merge(parser, args)
    if args.command == "index":
        if not args.directory.is_dir():
            parser.exit(2, f"{parser.prog}: error: {args.directory} is not a directory\n")
        print(write_index(args.directory, args.stem, args.title).resolve())
        return 0
    try:
        scenario = make_scenario(args)
    except ScenarioError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    except OSError as exc:
        parser.exit(2, f"{parser.prog}: error: cannot read the scenario: {exc}\n")
    # Warnings and errors only; flowno's loop dumps its state as warnings on Ctrl-C, which says
    # nothing about the load test.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("flowno.core.event_loop.event_loop").setLevel(logging.ERROR)
    progress = ProgressLine(enabled=args.progress)
    args.processes = usable_processes(scenario, args.processes)
    if not args.quiet:
        phases = ", ".join(
            f"rate={rate:g}/s c={level}" if rate is not None else f"c={level}"
            for level, rate in scenario.phases()
        )
        processes = f" ({args.processes} generator processes)" if args.processes > 1 else ""
        print(f"{scenario.mode} loop on {scenario.target}: {phases}{processes}", file=sys.stderr, flush=True)
    if args.processes > 1:
        try:
            result = run_in_processes(scenario, args.processes, tuple(args.source_address))
        except ParallelRunError as exc:
            print(f"{parser.prog}: {exc}", file=sys.stderr)
            return 1
    else:
        options = {"local_address": args.source_address[0]} if args.source_address else {}
        result = run_scenario(scenario, progress if progress.enabled else None, **options)
    return _finish(result, args)


def _merge(parser: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """``merge``: read result files, merge them, check and report as a run would."""
    results = []
    for path in args.results:
        try:
            results.append(RunResult.from_dict(json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError) as exc:
            parser.exit(2, f"{parser.prog}: error: cannot read {path}: {exc}\n")
    try:
        merged = merge_results(results)
    except ResultMergeError as exc:
        parser.exit(2, f"{parser.prog}: error: {exc}\n")
    changes: dict[str, Any] = {}
    if args.threshold:
        changes["thresholds"] = (*merged.scenario.thresholds, *args.threshold)
    if args.schedule_check is not None:
        changes["schedule_check"] = args.schedule_check
    if args.strict is not None:
        changes["strict"] = args.strict
    if changes:
        merged.scenario = dataclasses.replace(merged.scenario, **changes)
    if not args.quiet:
        print(f"merged {len(results)} results ({merged.processes} generator processes)", file=sys.stderr)
    return _finish(merged, args)


def _finish(result: RunResult, args: argparse.Namespace) -> int:
    """Check the thresholds, print the summary and the failed checks, write the files; the exit status."""
    result.check()
    if not args.quiet:
        print(summary_table(result))
    if not args.no_files:
        paths = write_reports(result, args.out or _default_out(), args.stem)
        for kind, path in paths.items():
            print(f"{kind:>8}: {path}")
    failed = result.failed_checks
    for outcome in failed:
        print(f"threshold failed: {outcome.message()}", file=sys.stderr)
    if result.interrupted:
        return 130
    if failed:
        print(
            f"{len(failed)} of {len(result.checks)} checks failed: exit status {THRESHOLD_EXIT_STATUS}",
            file=sys.stderr,
        )
        return THRESHOLD_EXIT_STATUS
    if args.fail_on_error and _unexpected_failures(result):
        return 1
    return 0
