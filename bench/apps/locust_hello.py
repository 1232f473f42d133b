"""The Locust side of the load-generator scenario: ``FastHttpUser``s in a closed loop on ``GET /``.

Run by ``bench/_loadgen.py`` as one headless Locust process on the load core. Counting starts
when every user has been spawned and stops at the end of the run; the counts and this process's
CPU time over that window go as one JSON line to the file named by ``BENCH_LOCUST_OUT`` (Locust
owns stdout and stderr).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from locust import constant, events, task
from locust.contrib.fasthttp import FastHttpUser

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


@events.spawning_complete.add_listener
def _start(user_count: int, **_: Any) -> None:
    _window["started"], _window["cpu"] = time.monotonic(), _cpu()


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
