"""Run ``wrk`` pinned to the load CPU and read its results.

Every run gets a small generated Lua script: the request (method, body, headers) as static
``wrk.*`` settings — no per-request Lua, so wrk's own cost stays at its minimum — and a ``done()``
hook that prints the summary as one JSON line, which is parsed here instead of wrk's human output.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass

from _procs import LOAD_CPU, pinned

_MARK = "BENCH_JSON "

#: Appended to every script: prints wrk's summary as JSON (latencies in microseconds).
REPORTER_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,'
    .. '"write":%d,"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(99), latency.max))
end
"""


@dataclass(frozen=True)
class WrkResult:
    """One wrk run."""

    requests: int
    seconds: float
    errors: dict[str, int]
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        """Completed requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0


def request_script(
    method: str = "GET", body: str | None = None, headers: Mapping[str, str] | None = None
) -> str:
    """The Lua script for one request shape, with the JSON reporter."""
    lines = [f'wrk.method = "{method}"']
    if body is not None:
        if "]==]" in body:
            raise ValueError("the body may not contain ']==]'")
        lines.append(f"wrk.body = [==[{body}]==]")
    for name, value in (headers or {}).items():
        lines.append(f'wrk.headers["{name}"] = "{value}"')
    return "\n".join(lines) + "\n" + REPORTER_LUA


def parse_report(output: str) -> WrkResult:
    """The :class:`WrkResult` from wrk's output (the ``BENCH_JSON`` line the reporter printed).

    Raises:
        ValueError: no report line (wrk failed before the end).
    """
    for line in output.splitlines():
        if line.startswith(_MARK):
            data = json.loads(line[len(_MARK) :])
            errors = {key: int(data[key]) for key in ("connect", "read", "write", "status", "timeout")}
            return WrkResult(
                requests=int(data["requests"]),
                seconds=data["duration_us"] / 1e6,
                errors=errors,
                p50_ms=data["p50_us"] / 1000,
                p99_ms=data["p99_us"] / 1000,
            )
    raise ValueError(f"no wrk report in its output:\n{output[-2000:]}")


def run_wrk(
    url: str,
    *,
    connections: int,
    duration: float,
    method: str = "GET",
    body: str | None = None,
    headers: Mapping[str, str] | None = None,
    threads: int = 1,
) -> WrkResult:
    """Run wrk against ``url`` on the load CPU for ``duration`` seconds; wait for it to finish."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="bench-wrk-") as script:
        script.write(request_script(method, body, headers))
        script.flush()
        argv = pinned(
            LOAD_CPU,
            [
                "wrk",
                f"-t{threads}",
                f"-c{connections}",
                f"-d{max(1, round(duration))}s",
                "--timeout",
                "5s",
                "-s",
                script.name,
                url,
            ],
        )
        completed = subprocess.run(
            argv, capture_output=True, text=True, timeout=duration + 30, check=False, start_new_session=True
        )
    if completed.returncode != 0:
        raise RuntimeError(f"wrk failed ({completed.returncode}): {completed.stderr.strip()}")
    return parse_report(completed.stdout)


def ensure_wrk_present() -> None:
    """Fail early, with the fix, when wrk is not installed.

    Raises:
        RuntimeError: ``wrk`` is not on PATH.
    """
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed: run `bash bench/ensure_wrk.sh` (apt-get install -y wrk)")
