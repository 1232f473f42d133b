"""The command line: arguments to scenarios, overrides of scenario files, the progress line."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from loadtest.cli import ProgressLine, build_parser, main, make_scenario
from loadtest.scenario import RemoteTargetError, Scenario

SCENARIOS = Path(__file__).resolve().parents[1] / "loadtest" / "scenarios"


def scenario_for(*argv: str) -> Scenario:
    return make_scenario(build_parser().parse_args(list(argv)))


def test_closed_url_with_query_body_and_headers() -> None:
    scenario = scenario_for(
        "closed",
        "http://127.0.0.1:9/echo?a=1",
        "--json",
        '{"x": 1}',
        "-H",
        "X-A: b",
        "-c",
        "1,10",
        "-n",
        "50",
    )
    (spec,) = scenario.requests
    assert (spec.method, spec.path, spec.url) == ("POST", "/echo?a=1", "http://127.0.0.1:9/echo?a=1")
    assert spec.body == b'{"x": 1}'
    assert dict(spec.headers) == {"X-A": "b", "Content-Type": "application/json"}
    assert scenario.concurrency == (1, 10)
    assert (scenario.count, scenario.duration) == (50, None)  # a count alone bounds the run


def test_open_mode_needs_a_rate() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["open", "http://127.0.0.1:9/"])
    scenario = scenario_for("open", "http://127.0.0.1:9/", "-r", "100,200", "-c", "4", "-d", "2")
    assert scenario.phases() == [(4, 100.0), (4, 200.0)]
    assert scenario.requests[0].method == "GET"


def test_sse_defaults_are_bounded() -> None:
    scenario = scenario_for("sse", "http://localhost:9/events", "-X", "get")
    assert scenario.mode == "sse" and scenario.duration == 10.0 and scenario.concurrency == (10,)


def test_run_overrides_the_scenario_file() -> None:
    scenario = scenario_for(
        "run",
        str(SCENARIOS / "echo-mix.toml"),
        "-t",
        "http://127.0.0.1:1234",
        "-c",
        "3",
        "-d",
        "0.5",
        "--timeout",
        "2",
    )
    assert scenario.target == "http://127.0.0.1:1234"
    assert all(spec.url.startswith("http://127.0.0.1:1234/") for spec in scenario.requests)
    assert (scenario.concurrency, scenario.duration, scenario.timeout) == ((3,), 0.5, 2.0)


def test_remote_target_needs_the_flag() -> None:
    with pytest.raises(RemoteTargetError):
        scenario_for("closed", "http://example.com/")
    assert scenario_for("closed", "http://example.com/", "--allow-remote").target == "http://example.com"


@pytest.mark.parametrize(
    "argv",
    [
        ["closed", "http://127.0.0.1:9/", "-c", "0"],
        ["closed", "http://127.0.0.1:9/", "-c", "x"],
        ["open", "http://127.0.0.1:9/", "-r", "-5"],
        ["closed", "http://127.0.0.1:9/", "-H", "no colon"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(argv)
    assert exit_info.value.code == 2


def test_missing_scenario_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(tmp_path / "nope.toml")])
    assert exit_info.value.code == 2
    assert "cannot read" in capsys.readouterr().err


def test_progress_line_rewrites_in_place_on_a_terminal() -> None:
    stream = io.StringIO()
    progress = ProgressLine(stream, enabled=True)
    progress("one")
    progress("two")
    progress(None)
    assert stream.getvalue() == "\r\x1b[2Kone\r\x1b[2Ktwo\r\x1b[2K"


def test_progress_line_is_silent_off_a_terminal() -> None:
    stream = io.StringIO()  # isatty() is False
    progress = ProgressLine(stream)
    progress("one")
    progress(None)
    assert not progress.enabled and stream.getvalue() == ""
