"""Scenarios: what to send, where, how hard and for how long (TOML files or command-line flags).

A scenario file (parsed with the standard library's ``tomllib``)::

    name = "echo mix"
    target = "http://127.0.0.1:8080"   # --target overrides it
    mode = "closed"                    # closed | open | sse
    concurrency = [1, 10, 100]         # one phase per level (a sweep)
    duration = 5.0                     # seconds per phase ...
    # count = 10000                    # ... or requests per phase (the first limit reached ends it)
    # rate = [200, 500]                # open mode: requests/s, one phase per rate
    timeout = 10.0                     # seconds per request
    headers = { "X-Load-Test" = "1" }  # sent with every request
    thresholds = ["p99<50ms", "error_rate<0.01"]  # pass/fail checks (exit 99 when one fails)
    # schedule_check = false           # open mode: do not fail a run that fell behind schedule
    # strict = true                    # fail a phase where the generator was saturated
    # reconnect = true                 # sse mode: reconnect with Last-Event-ID when the server closes

    [[request]]
    name = "echo json"                 # label in reports (default: "METHOD path")
    method = "POST"
    path = "/echo"
    json = { hello = "world" }         # or body = "text"
    headers = { "X-Trace" = "on" }
    weight = 5                         # relative frequency among the requests
    expect_status = [200]              # default: any 2xx

Every scenario is bounded: a phase needs a ``duration`` or a ``count`` (or both; SSE phases always
have a duration, as a stream may never end), and each request a ``timeout``. Targets must be
loopback addresses unless remote ones are explicitly allowed (:func:`check_target`).

Example:
    >>> scenario = parse_scenario('''
    ... target = "http://127.0.0.1:8080"
    ... duration = 2
    ... [[request]]
    ... path = "/echo"
    ... method = "POST"
    ... body = "hi"
    ... weight = 3
    ... [[request]]
    ... path = "/bytes/16"
    ... ''')
    >>> [(r.name, r.weight) for r in scenario.requests]
    [('POST /echo', 3), ('GET /bytes/16', 1)]
    >>> scenario.checked().requests[0].url
    'http://127.0.0.1:8080/echo'
"""

from __future__ import annotations

import bisect
import ipaddress
import itertools
import json
import random
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeAlias, cast
from urllib.parse import urlsplit

from .thresholds import ThresholdError, parse_threshold

__all__ = [
    "DEFAULT_DURATION",
    "DEFAULT_TIMEOUT",
    "MODES",
    "Mode",
    "RemoteTargetError",
    "RequestPicker",
    "RequestSpec",
    "Scenario",
    "ScenarioError",
    "check_target",
    "load_scenario",
    "parse_scenario",
]

Mode: TypeAlias = Literal["closed", "open", "sse"]
MODES: tuple[Mode, ...] = ("closed", "open", "sse")

#: Seconds per phase when neither a duration nor a count is given.
DEFAULT_DURATION = 10.0
#: Seconds a request (or a stream's connect/read) may take before it counts as a timeout.
DEFAULT_TIMEOUT = 10.0
#: Host names accepted as local besides loopback IP addresses.
LOCAL_HOST_NAMES = frozenset({"localhost", "localhost.localdomain"})

_SCENARIO_KEYS = frozenset(
    {"name", "target", "mode", "concurrency", "rate", "duration", "count", "timeout", "think_time"}
    | {"headers", "seed", "request", "thresholds", "schedule_check", "strict", "reconnect"}
)
_REQUEST_KEYS = frozenset({"name", "method", "path", "body", "json", "headers", "weight", "expect_status"})


class ScenarioError(ValueError):
    """A scenario file or flag that cannot describe a bounded, valid run."""


class RemoteTargetError(ScenarioError):
    """A target that is not a loopback address, without ``--allow-remote``."""


def check_target(url: str, allow_remote: bool = False) -> str:
    """Return ``url`` (``http://host:port``, no trailing slash) if it may be load-tested.

    Loopback targets (``127.0.0.0/8``, ``::1``, ``localhost``) are always allowed; any other host
    only with ``allow_remote``, so a typo cannot point a load test at somebody else's server.

    Raises:
        ScenarioError: not an ``http(s)://`` URL with a host.
        RemoteTargetError: a non-loopback host without ``allow_remote``.

    Example:
        >>> check_target("http://localhost:8080/")
        'http://localhost:8080'
        >>> check_target("http://example.com")
        Traceback (most recent call last):
        ...
        loadtest.scenario.RemoteTargetError: refusing to load-test example.com: not a loopback address ...
    """
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - validates the port
    except ValueError as exc:
        raise ScenarioError(f"invalid target {url!r}: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ScenarioError(f"invalid target {url!r}: expected http://host:port")
    if parts.path not in ("", "/") or parts.query:
        raise ScenarioError(f"invalid target {url!r}: give the path in the request, not the target")
    host = parts.hostname
    if not allow_remote and not _is_loopback(host):
        raise RemoteTargetError(
            f"refusing to load-test {host}: not a loopback address (pass --allow-remote to override)"
        )
    return f"{parts.scheme}://{parts.netloc}"


def _is_loopback(host: str) -> bool:
    if host.lower() in LOCAL_HOST_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class RequestSpec:
    """One kind of request in a scenario.

    Attributes:
        name: label in the reports.
        method: HTTP method.
        path: path and query, starting with ``/``.
        body: bytes to send (``None``: no body).
        headers: headers of this request (scenario headers included).
        weight: relative frequency among the scenario's requests.
        expect_status: statuses that count as success (``None``: any 2xx).
        url: the full URL (set by :meth:`Scenario.with_target`).
    """

    name: str
    method: str = "GET"
    path: str = "/"
    body: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    weight: int = 1
    expect_status: frozenset[int] | None = None
    url: str = ""

    def is_expected(self, status: int) -> bool:
        """True when ``status`` counts as a success for this request."""
        if self.expect_status is None:
            return 200 <= status < 300
        return status in self.expect_status


@dataclass(frozen=True)
class Scenario:
    """A bounded load test: target, traffic mix, mode and phases.

    Attributes:
        name: label in the reports.
        target: ``http://host:port`` (checked by :func:`check_target` on use).
        mode: ``closed`` (N users back to back), ``open`` (fixed arrival rate) or ``sse``.
        requests: the traffic mix.
        concurrency: users (closed/sse) or the most requests in flight (open), one phase each.
        rates: open mode: arrivals per second, one phase each (crossed with ``concurrency``).
        duration: seconds per phase (``None``: only ``count`` limits it).
        count: requests (closed/open) or streams (sse) per phase (``None``: only ``duration``).
        timeout: seconds per request; a stream gets it per read.
        think_time: closed/sse mode: seconds a user waits between its requests.
        seed: seed of the request picker (``None``: a fixed default, so runs repeat).
        thresholds: pass/fail expressions (:mod:`loadtest.thresholds`), checked on every phase.
        schedule_check: open mode: fail the run when the schedule was not kept (unsent requests,
            or more than 1 s behind).
        strict: fail the run when a phase was generator-bound.
        reconnect: sse mode: when the server closes a stream, reconnect with ``Last-Event-ID``
            (as a browser's EventSource does) until it answers 204 or the phase ends.
    """

    name: str
    target: str
    mode: Mode
    requests: tuple[RequestSpec, ...]
    concurrency: tuple[int, ...] = (10,)
    rates: tuple[float, ...] = ()
    duration: float | None = DEFAULT_DURATION
    count: int | None = None
    timeout: float = DEFAULT_TIMEOUT
    think_time: float = 0.0
    seed: int | None = None
    thresholds: tuple[str, ...] = ()
    schedule_check: bool = True
    strict: bool = False
    reconnect: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ScenarioError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if not self.requests:
            raise ScenarioError("a scenario needs at least one request")
        names = [spec.name for spec in self.requests]
        if len(set(names)) != len(names):
            raise ScenarioError("request names must be unique (give each [[request]] its own name)")
        if not self.concurrency or any(level < 1 for level in self.concurrency):
            raise ScenarioError("concurrency levels must be positive integers")
        if self.duration is None and self.count is None:
            raise ScenarioError("a scenario needs a duration or a count: every run must be bounded")
        if self.mode == "sse" and self.duration is None:
            raise ScenarioError(
                "sse mode needs a duration: a stream may never end, so a count cannot bound it"
            )
        if self.duration is not None and not self.duration > 0:
            raise ScenarioError("duration must be positive")
        if self.count is not None and self.count < 1:
            raise ScenarioError("count must be positive")
        if not self.timeout > 0:
            raise ScenarioError("timeout must be positive")
        if self.think_time < 0:
            raise ScenarioError("think_time must not be negative")
        if self.mode == "open":
            if not self.rates or any(not rate > 0 for rate in self.rates):
                raise ScenarioError("open mode needs a positive rate (requests per second)")
        elif self.rates:
            raise ScenarioError("a rate applies to open mode only")
        if self.reconnect and self.mode != "sse":
            raise ScenarioError("reconnect applies to sse mode only")
        for text in self.thresholds:
            try:
                parse_threshold(text)
            except ThresholdError as exc:
                raise ScenarioError(str(exc)) from None

    def with_target(self, target: str, allow_remote: bool = False) -> Scenario:
        """This scenario aimed at ``target`` (checked), each request's URL filled in."""
        base = check_target(target, allow_remote)
        requests = tuple(replace(spec, url=base + spec.path) for spec in self.requests)
        return replace(self, target=base, requests=requests)

    def checked(self, allow_remote: bool = False) -> Scenario:
        """This scenario with its own target checked and URLs filled in."""
        return self.with_target(self.target, allow_remote)

    def phases(self) -> list[tuple[int, float | None]]:
        """``(concurrency, rate)`` of each phase, in run order."""
        if self.mode == "open":
            return [(level, rate) for rate, level in itertools.product(self.rates, self.concurrency)]
        return [(level, None) for level in self.concurrency]

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description (for reports)."""
        return {
            "name": self.name,
            "target": self.target,
            "mode": self.mode,
            "concurrency": list(self.concurrency),
            "rates": list(self.rates),
            "duration": self.duration,
            "count": self.count,
            "timeout": self.timeout,
            "think_time": self.think_time,
            "thresholds": list(self.thresholds),
            "schedule_check": self.schedule_check,
            "strict": self.strict,
            "reconnect": self.reconnect,
            "requests": [
                {
                    "name": spec.name,
                    "method": spec.method,
                    "path": spec.path,
                    "weight": spec.weight,
                    "body_bytes": len(spec.body or b""),
                    "headers": dict(spec.headers),
                    "expect_status": sorted(spec.expect_status) if spec.expect_status else None,
                }
                for spec in self.requests
            ],
        }


class RequestPicker:
    """Pick requests at random in proportion to their weights (one picker per user).

    Example:
        >>> specs = (RequestSpec("a", weight=3), RequestSpec("b", weight=1))
        >>> picker = RequestPicker(specs, seed=1)
        >>> picks = [picker.pick().name for _ in range(4000)]
        >>> 0.7 < picks.count("a") / 4000 < 0.8
        True
    """

    __slots__ = ("_cumulative", "_random", "_specs", "_total")

    def __init__(self, specs: Sequence[RequestSpec], seed: int | None = None) -> None:
        self._specs = tuple(specs)
        self._cumulative = list(itertools.accumulate(spec.weight for spec in self._specs))
        self._total = self._cumulative[-1]
        self._random = random.Random(seed)

    def pick(self) -> RequestSpec:
        """The next request to send."""
        if len(self._specs) == 1:
            return self._specs[0]
        point = self._random.random() * self._total
        return self._specs[bisect.bisect_right(self._cumulative, point)]


# -- parsing ------------------------------------------------------------------------------------


def _number_list(value: Any, key: str, kind: type[int] | type[float]) -> tuple[Any, ...]:
    values = value if isinstance(value, list) else [value]
    result = []
    for item in values:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            raise ScenarioError(f"{key} must be a number or a list of numbers, not {item!r}")
        if kind is int and not float(item).is_integer():
            raise ScenarioError(f"{key} must be whole numbers, not {item!r}")
        result.append(kind(item))
    return tuple(result)


def _headers(value: Any, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, (str, int)) for v in value.values()):
        raise ScenarioError(f"{where}: headers must be a table of strings")
    return {str(name): str(v) for name, v in value.items()}


def _request_spec(raw: Mapping[str, Any], index: int, common_headers: Mapping[str, str]) -> RequestSpec:
    where = f"request #{index + 1}"
    unknown = set(raw) - _REQUEST_KEYS
    if unknown:
        raise ScenarioError(f"{where}: unknown keys {sorted(unknown)}")
    method = str(raw.get("method", "GET")).upper()
    if not method.isalpha():
        raise ScenarioError(f"{where}: invalid method {method!r}")
    path = str(raw.get("path", "/"))
    if not path.startswith("/"):
        raise ScenarioError(f"{where}: path must start with '/', not {path!r}")
    headers = {**common_headers, **_headers(raw.get("headers"), where)}
    body: bytes | None = None
    if "json" in raw and "body" in raw:
        raise ScenarioError(f"{where}: give either body or json, not both")
    if "json" in raw:
        body = json.dumps(raw["json"], separators=(",", ":"), ensure_ascii=False).encode()
        if not any(name.lower() == "content-type" for name in headers):
            headers["Content-Type"] = "application/json"
    elif "body" in raw:
        if not isinstance(raw["body"], str):
            raise ScenarioError(f"{where}: body must be a string (use json = ... for structured data)")
        body = raw["body"].encode()
    weight = raw.get("weight", 1)
    if isinstance(weight, bool) or not isinstance(weight, int) or weight < 1:
        raise ScenarioError(f"{where}: weight must be a positive integer")
    expect: frozenset[int] | None = None
    if "expect_status" in raw:
        expect = frozenset(_number_list(raw["expect_status"], "expect_status", int))
    return RequestSpec(
        name=str(raw.get("name") or f"{method} {path}"),
        method=method,
        path=path,
        body=body,
        headers=headers,
        weight=weight,
        expect_status=expect,
    )


def scenario_from_mapping(data: Mapping[str, Any], default_name: str = "scenario") -> Scenario:
    """Build a :class:`Scenario` from parsed TOML (or any mapping of the same shape).

    Raises:
        ScenarioError: unknown keys, wrong types, or an unbounded run.
    """
    unknown = set(data) - _SCENARIO_KEYS
    if unknown:
        raise ScenarioError(f"unknown scenario keys {sorted(unknown)}")
    raw_requests = data.get("request")
    if not isinstance(raw_requests, list) or not raw_requests:
        raise ScenarioError("a scenario needs at least one [[request]] table")
    common = _headers(data.get("headers"), "scenario")
    requests = tuple(
        _request_spec(cast(Mapping[str, Any], raw), index, common) for index, raw in enumerate(raw_requests)
    )
    duration = data.get("duration")
    count = data.get("count")
    mode = str(data.get("mode", "closed"))
    if duration is None and (count is None or mode == "sse"):
        duration = DEFAULT_DURATION
    if mode not in MODES:
        raise ScenarioError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
    seed = data.get("seed")
    return Scenario(
        name=str(data.get("name", default_name)),
        target=str(data.get("target", "http://127.0.0.1:8080")),
        mode=mode,
        requests=requests,
        concurrency=_number_list(data.get("concurrency", 10), "concurrency", int),
        rates=_number_list(data["rate"], "rate", float) if "rate" in data else (),
        duration=None if duration is None else _number_list(duration, "duration", float)[0],
        count=None if count is None else _number_list(count, "count", int)[0],
        timeout=_number_list(data.get("timeout", DEFAULT_TIMEOUT), "timeout", float)[0],
        think_time=_number_list(data.get("think_time", 0.0), "think_time", float)[0],
        seed=None if seed is None else int(seed),
        thresholds=_string_list(data.get("thresholds", []), "thresholds"),
        schedule_check=_flag(data.get("schedule_check", True), "schedule_check"),
        strict=_flag(data.get("strict", False), "strict"),
        reconnect=_flag(data.get("reconnect", False), "reconnect"),
    )


def _string_list(value: Any, key: str) -> tuple[str, ...]:
    values = value if isinstance(value, list) else [value]
    if not all(isinstance(item, str) for item in values):
        raise ScenarioError(f"{key} must be a string or a list of strings")
    return tuple(values)


def _flag(value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ScenarioError(f"{key} must be true or false, not {value!r}")
    return value


def parse_scenario(text: str, default_name: str = "scenario") -> Scenario:
    """Parse a TOML scenario.

    Raises:
        ScenarioError: invalid TOML or an invalid scenario.
    """
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"invalid TOML: {exc}") from None
    return scenario_from_mapping(data, default_name)


def load_scenario(path: str | Path) -> Scenario:
    """Read and parse a TOML scenario file (its stem is the default name).

    Raises:
        ScenarioError: invalid file contents.
        OSError: the file cannot be read.
    """
    path = Path(path)
    try:
        return parse_scenario(path.read_text(encoding="utf-8"), default_name=path.stem)
    except ScenarioError as exc:
        raise ScenarioError(f"{path}: {exc}") from None
