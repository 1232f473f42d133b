"""Scenario files (TOML), command-line scenarios, the request picker and the loopback guard."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from loadtest.scenario import (
    RemoteTargetError,
    RequestPicker,
    RequestSpec,
    Scenario,
    ScenarioError,
    check_target,
    load_scenario,
    parse_scenario,
)

SCENARIOS = Path(__file__).resolve().parents[1] / "loadtest" / "scenarios"

FULL = """
name = "mix"
target = "http://127.0.0.1:9000"
mode = "open"
concurrency = [8, 64]
rate = [100, 250.5]
duration = 3
count = 1000
timeout = 2.5
think_time = 0.0
seed = 7
headers = { "X-Run" = "1" }

[[request]]
name = "post json"
method = "post"
path = "/echo?x=1"
json = { a = [1, 2] }
headers = { "X-Trace" = "t" }
weight = 4
expect_status = [200, 201]

[[request]]
path = "/bytes/10"
body = "hello"
"""


def test_full_scenario_parses() -> None:
    scenario = parse_scenario(FULL).checked()
    assert (scenario.name, scenario.mode, scenario.target) == ("mix", "open", "http://127.0.0.1:9000")
    assert scenario.concurrency == (8, 64) and scenario.rates == (100.0, 250.5)
    assert (scenario.duration, scenario.count, scenario.timeout, scenario.seed) == (3.0, 1000, 2.5, 7)
    first, second = scenario.requests
    assert first.name == "post json" and first.method == "POST" and first.weight == 4
    assert first.url == "http://127.0.0.1:9000/echo?x=1"
    assert first.body == b'{"a":[1,2]}'
    assert dict(first.headers) == {"X-Run": "1", "X-Trace": "t", "Content-Type": "application/json"}
    assert first.is_expected(201) and not first.is_expected(204)
    assert second.name == "GET /bytes/10" and second.body == b"hello" and second.weight == 1
    assert second.is_expected(204) and not second.is_expected(302)
    assert scenario.phases() == [(8, 100.0), (64, 100.0), (8, 250.5), (64, 250.5)]


@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.toml")), ids=lambda p: p.name)
def test_shipped_scenarios_are_valid(path: Path) -> None:
    scenario = load_scenario(path).checked()
    assert scenario.requests and (scenario.duration or scenario.count)


def test_defaults_bound_the_run() -> None:
    scenario = parse_scenario('[[request]]\npath = "/"')
    assert scenario.mode == "closed" and scenario.duration == 10.0 and scenario.count is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('mode = "closed"', "at least one"),
        ('bogus = 1\n[[request]]\npath = "/"', "unknown scenario keys"),
        ('[[request]]\npath = "/"\nspeed = 3', "unknown keys"),
        ('[[request]]\npath = "no-slash"', "must start with '/'"),
        ('[[request]]\npath = "/"\nbody = "a"\njson = 1', "either body or json"),
        ('[[request]]\npath = "/"\nweight = 0', "weight"),
        ('concurrency = [0]\n[[request]]\npath = "/"', "concurrency"),
        ('mode = "open"\n[[request]]\npath = "/"', "rate"),
        ('rate = 5\n[[request]]\npath = "/"', "open mode only"),
        ('mode = "soak"\n[[request]]\npath = "/"', "mode must be"),
        ('duration = -1\n[[request]]\npath = "/"', "duration"),
        ('[[request]]\npath = "/a"\nname = "x"\n[[request]]\npath = "/b"\nname = "x"', "unique"),
        ("this is = not toml [", "invalid TOML"),
    ],
)
def test_invalid_scenarios_are_refused(text: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(text)


def test_unbounded_scenario_is_refused() -> None:
    spec = RequestSpec("r")
    with pytest.raises(ScenarioError, match="bounded"):
        Scenario("s", "http://127.0.0.1:1", "closed", (spec,), duration=None, count=None)
    with pytest.raises(ScenarioError, match="stream may never end"):
        Scenario("s", "http://127.0.0.1:1", "sse", (spec,), duration=None, count=10)
    assert parse_scenario('mode = "sse"\ncount = 3\n[[request]]\npath = "/"').duration == 10.0


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080",
        "http://127.8.9.10",
        "http://localhost:1/",
        "http://[::1]:80",
        "https://LOCALHOST",
    ],
)
def test_loopback_targets_are_allowed(url: str) -> None:
    assert check_target(url).startswith(url.split("://")[0] + "://")


@pytest.mark.parametrize(
    "url", ["http://10.0.0.1:80", "http://example.com", "http://0.0.0.0:8080", "http://[::]:1"]
)
def test_remote_targets_are_refused_by_default(url: str) -> None:
    with pytest.raises(RemoteTargetError, match="--allow-remote"):
        check_target(url)
    assert check_target(url, allow_remote=True)


@pytest.mark.parametrize(
    "url", ["ftp://127.0.0.1", "127.0.0.1:80", "http://127.0.0.1/path", "http://127.0.0.1:99999"]
)
def test_malformed_targets_are_refused(url: str) -> None:
    with pytest.raises(ScenarioError):
        check_target(url)


def test_scenario_file_target_is_checked() -> None:
    scenario = parse_scenario('target = "http://192.0.2.1:80"\n[[request]]\npath = "/"')
    with pytest.raises(RemoteTargetError):
        scenario.checked()


def test_picker_follows_weights_and_repeats_with_a_seed() -> None:
    specs = (RequestSpec("a", weight=5), RequestSpec("b", weight=3), RequestSpec("c", weight=2))
    picker = RequestPicker(specs, seed=11)
    sample = Counter(picker.pick().name for _ in range(20_000))
    assert sample["a"] / 20_000 == pytest.approx(0.5, abs=0.02)
    assert sample["b"] / 20_000 == pytest.approx(0.3, abs=0.02)
    assert sample["c"] / 20_000 == pytest.approx(0.2, abs=0.02)
    again = RequestPicker(specs, seed=11)
    first = RequestPicker(specs, seed=11)
    assert [again.pick().name for _ in range(50)] == [first.pick().name for _ in range(50)]


def test_checks_from_a_scenario_file() -> None:
    scenario = parse_scenario(
        'mode = "open"\nrate = 10\nduration = 1\n'
        'thresholds = ["p99<50ms", "error_rate<1%"]\nschedule_check = false\nstrict = true\n'
        '[[request]]\npath = "/"'
    )
    assert scenario.thresholds == ("p99<50ms", "error_rate<1%")
    assert (scenario.schedule_check, scenario.strict, scenario.reconnect) == (False, True, False)
    assert scenario.describe()["thresholds"] == ["p99<50ms", "error_rate<1%"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('thresholds = ["p99 fast"]', "invalid threshold"),
        ("thresholds = [5]", "thresholds must be"),
        ('strict = "yes"', "strict must be true or false"),
        ("reconnect = true", "reconnect applies to sse mode only"),
    ],
)
def test_bad_checks_in_a_scenario_file(extra: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        parse_scenario(f'duration = 1\n{extra}\n[[request]]\npath = "/"')
