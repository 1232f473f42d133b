"""Load-test orchestrator on ``flowno_io.HttpClient``, running on one flowno event loop.

Modules, from the bottom up: :mod:`~loadtest.histogram` (fixed-memory log-linear latency
histogram), :mod:`~loadtest.stats` (what a phase measures), :mod:`~loadtest.schedule` (open-loop
arrival times), :mod:`~loadtest.scenario` (TOML scenarios, loopback-only targets),
:mod:`~loadtest.runner` (closed-loop, open-loop and SSE users), :mod:`~loadtest.report` and
:mod:`~loadtest.html_report` (JSON, CSV, HTML), :mod:`~loadtest.cli` (``python -m loadtest``).
"""

from .histogram import LogLinearHistogram
from .runner import PhaseResult, RunResult, run_scenario, run_scenario_async
from .scenario import RemoteTargetError, RequestSpec, Scenario, ScenarioError, check_target, load_scenario

__all__ = [
    "LogLinearHistogram",
    "PhaseResult",
    "RemoteTargetError",
    "RequestSpec",
    "RunResult",
    "Scenario",
    "ScenarioError",
    "check_target",
    "load_scenario",
    "run_scenario",
    "run_scenario_async",
]
