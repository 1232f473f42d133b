"""Load-test orchestrator on ``flowno_io.HttpClient``, running on one flowno event loop.

Modules, from the bottom up: :mod:`~loadtest.histogram` (fixed-memory log-linear latency
histogram, coordinated-omission back-fill), :mod:`~loadtest.stats` (what a phase measures, event
ids), :mod:`~loadtest.schedule` (open-loop arrival times), :mod:`~loadtest.thresholds` (k6-style
pass/fail checks), :mod:`~loadtest.scenario` (TOML scenarios, loopback-only targets),
:mod:`~loadtest.result` (phase and run results, the generator self-check, exact merging),
:mod:`~loadtest.runner` (closed-loop, open-loop and SSE users), :mod:`~loadtest.parallel`
(``--processes``), :mod:`~loadtest.report`, :mod:`~loadtest.html_report` and
:mod:`~loadtest.index_page` (JSON, CSV, HTML, the index page), :mod:`~loadtest.cli`
(``python -m loadtest``); :mod:`~loadtest.testing` (a scripted server for tests).
"""

from .histogram import LogLinearHistogram
from .result import PhaseResult, RunResult, merge_results
from .runner import run_scenario, run_scenario_async
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
    "merge_results",
    "run_scenario",
    "run_scenario_async",
]
