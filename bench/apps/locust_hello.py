"""The Locust side of the load-generator scenario: ``FastHttpUser``s in a closed loop on ``GET /``.

Run by ``bench/_loadgen.py`` as one headless Locust process on the load core. Counting starts
when every user has been spawned and lasts ``BENCH_LOCUST_SECONDS``; then this file stops the
run itself (Locust's ``--run-time`` is counted on gevent's clock, which on a busy machine can
still read the time from before the slow start-up, so the run may end at once). The counts and
this process's CPU time over that window go as one JSON line to the file named by
``BENCH_LOCUST_OUT`` (Locust owns stdout and stderr).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import gevent
from locust import constant, events, task
from locust.contrib.fasthttp import FastHttpUser
from locust.env import Environment

_window: dict[str, float] = {}
_counts = {"requests": 0, "failures": 0}


class HelloUser(FastHttpUser):
    """One user: ``GET /`` again as soon as the previous answer is in (no think time)."""

    wait_time = constant(0)

    @task
    def hello(self) -> None:
        """The hello request; a non-2xx status counts as a failure (Locust's default)."""
        self.client.get("/")


@events.request.add_listener
def _count(exception: BaseException | None = None, **_: Any) -> None:
    if "started" in _window:
        _counts["requests"] += 1
        if exception is not None:
            _counts["failures"] += 1


def _cpu() -> float:
    times = os.times()
    return times.user + times.system


_environment: list[Environment] = []


@events.init.add_listener
def _keep(environment: Environment, **_: Any) -> None:
    _environment.append(environment)


def _stop_after(seconds: float) -> None:
    gevent.sleep(seconds)
    runner = _environment[0].runner if _environment else None
    if runner is not None:
        runner.quit()


@events.spawning_complete.add_listener
def _start(user_count: int, **_: Any) -> None:
    _window["started"], _window["cpu"] = time.monotonic(), _cpu()
    seconds = float(os.environ.get("BENCH_LOCUST_SECONDS", "0"))
    if seconds > 0:
        gevent.spawn(_stop_after, seconds)


@events.test_stop.add_listener
def _stop(**_: Any) -> None:
    if "started" not in _window or "seconds" in _window:
        return
    _window["seconds"] = time.monotonic() - _window["started"]
    _window["cpu_seconds"] = _cpu() - _window["cpu"]
    out = os.environ.get("BENCH_LOCUST_OUT")
    if out:
        record = {**_counts, "seconds": _window["seconds"], "cpu_seconds": _window["cpu_seconds"]}
        with open(out, "w", encoding="utf-8") as file:
            file.write(json.dumps(record) + "\n")
