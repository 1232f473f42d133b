"""Every core: one scenario run by N generator processes at once, merged into one result.

Each process runs the whole scenario with its share of the load: concurrency levels, request
counts and arrival rates are divided between the processes (the remainder going to the first
ones), each with its own flowno loop and ``HttpClient``. A barrier lines the processes up
before every phase, so their phases run at the same time; the results come back over a queue
in the JSON form of :meth:`~loadtest.result.RunResult.to_dict` and are merged exactly
(:func:`~loadtest.result.merge_results`: histograms add bucket by bucket).

A phase cannot have less than one user per process, so the processes used are at most the
smallest concurrency level (and the smallest count).

Example:
    >>> from loadtest.scenario import RequestSpec, Scenario
    >>> spec = RequestSpec("GET /")
    >>> scenario = Scenario("s", "http://127.0.0.1:1", "open", (spec,), (10, 3), (900.0,), 1.0)
    >>> usable_processes(scenario, 4)
    3
    >>> [split_scenario(scenario, 3, number).concurrency for number in range(3)]
    [(4, 1), (3, 1), (3, 1)]
    >>> split_scenario(scenario, 3, 0).rates
    (300.0,)
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import threading
from dataclasses import replace
from typing import Any

from .result import RunResult, merge_results
from .scenario import Scenario

__all__ = ["ParallelRunError", "cpu_count", "run_in_processes", "split_scenario", "usable_processes"]

#: Seconds a process may wait at a phase barrier for the others, beyond the phase's own bound.
BARRIER_SLACK = 60.0
#: Seed spacing between processes, so their weighted request choices differ.
SEED_STRIDE = 7919


class ParallelRunError(RuntimeError):
    """A generator process failed (its error is in the message)."""


def cpu_count() -> int:
    """Cores this process may use (``auto``)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def usable_processes(scenario: Scenario, requested: int) -> int:
    """How many processes can share every phase: at most the smallest concurrency level and count."""
    limit = min(scenario.concurrency)
    if scenario.count is not None:
        limit = min(limit, scenario.count)
    return max(1, min(requested, limit))


def _share(total: int, processes: int, number: int) -> int:
    return total // processes + (1 if number < total % processes else 0)


def split_scenario(scenario: Scenario, processes: int, number: int) -> Scenario:
    """Process ``number``'s share (0-based) of ``scenario`` run by ``processes`` processes."""
    seed = scenario.seed if scenario.seed is not None else 0x10AD
    return replace(
        scenario,
        concurrency=tuple(_share(level, processes, number) for level in scenario.concurrency),
        rates=tuple(rate / processes for rate in scenario.rates),
        count=None if scenario.count is None else _share(scenario.count, processes, number),
        seed=seed + SEED_STRIDE * number,
    )


def _phase_bound(scenario: Scenario) -> float:
    """Seconds a phase can take at most (its duration plus a request timeout), or a count's guess."""
    duration = scenario.duration if scenario.duration is not None else 600.0
    return duration + scenario.timeout + BARRIER_SLACK


def _child(
    scenario: Scenario, barrier: Any, results: Any, number: int, local_address: str | None = None
) -> None:
    """One generator process: run the share, line up at each phase, send back the result."""
    from .runner import run_scenario

    bound = _phase_bound(scenario)
    options = {} if local_address is None else {"local_address": local_address}
    try:
        result = run_scenario(scenario, before_phase=lambda index: barrier.wait(bound), **options)
        results.put((number, result.to_dict(), None))
    except BaseException as exc:  # reported by the parent
        barrier.abort()
        results.put((number, None, f"{type(exc).__name__}: {exc}"))


def run_in_processes(scenario: Scenario, processes: int, source_addresses: tuple[str, ...] = ()) -> RunResult:
    """Run ``scenario`` split over ``processes`` generator processes; the merged result.

    ``source_addresses``: process N binds its connections to the N-th (round robin); none: the
    system's choice.

    Raises:
        ParallelRunError: a process failed or did not report in time.
    """
    processes = usable_processes(scenario, processes)
    context = multiprocessing.get_context("spawn")  # no fork: a flowno loop must not be copied
    barrier = context.Barrier(processes)
    results = context.Queue()
    workers = [
        context.Process(
            target=_child,
            args=(
                split_scenario(scenario, processes, number),
                barrier,
                results,
                number,
                source_addresses[number % len(source_addresses)] if source_addresses else None,
            ),
            name=f"loadtest-generator-{number}",
            daemon=True,
        )
        for number in range(processes)
    ]
    for worker in workers:
        worker.start()
    deadline = _phase_bound(scenario) * len(scenario.phases()) + BARRIER_SLACK
    collected: dict[int, dict[str, Any]] = {}
    errors: list[str] = []
    interrupted = threading.Event()
    try:
        while len(collected) + len(errors) < processes:
            try:
                number, data, error = results.get(timeout=deadline)
            except queue.Empty:
                raise ParallelRunError(
                    f"generator processes did not report within {deadline:.0f} s"
                ) from None
            except KeyboardInterrupt:
                interrupted.set()  # the processes got the signal too: they send their partial results
                deadline = BARRIER_SLACK
                continue
            if error is not None:
                errors.append(f"process {number}: {error}")
            else:
                collected[number] = data
    finally:
        for worker in workers:
            worker.join(BARRIER_SLACK)
            if worker.is_alive():
                worker.kill()
                worker.join()
    if errors:
        raise ParallelRunError("; ".join(errors))
    merged = merge_results([RunResult.from_dict(collected[number]) for number in sorted(collected)])
    merged.scenario = scenario  # the whole scenario: the phases' users and rates add up to it
    merged.interrupted = merged.interrupted or interrupted.is_set()
    return merged
