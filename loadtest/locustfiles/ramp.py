"""A ramp: echo users rising in steps, holding, then falling, by a ``LoadTestShape``.

The stages scale with ``RAMP_SECONDS`` (total length, default 60) and ``RAMP_USERS`` (peak,
default 50), so the same shape fits a quick check and a long soak. The shape ends the run.

    ECHO_URL=http://127.0.0.1:8080 RAMP_SECONDS=20 locust -f loadtest/locustfiles/ramp.py --headless
"""

from __future__ import annotations

import os

from echo import EchoUser
from locust import LoadTestShape

__all__ = ["EchoUser", "StepRampShape"]


class StepRampShape(LoadTestShape):
    """Up to the peak in four steps, hold, then down to a quarter, then stop.

    Stages as (fraction of the run, fraction of the peak users).
    """

    total_seconds = float(os.environ.get("RAMP_SECONDS", "60"))
    peak_users = int(os.environ.get("RAMP_USERS", "50"))
    stages = ((0.15, 0.25), (0.30, 0.5), (0.45, 0.75), (0.60, 1.0), (0.85, 1.0), (1.0, 0.25))

    def tick(self) -> tuple[int, float] | None:
        """``(users, spawn rate)`` for the current moment, or ``None`` to end the run."""
        run_time: float = self.get_run_time()  # type: ignore[no-untyped-call]
        for end, share in self.stages:
            if run_time < end * self.total_seconds:
                users = max(1, round(share * self.peak_users))
                return users, max(1.0, self.peak_users / 4)
        return None
