"""The equal-deadline crash of flowno's sleep heap, and the two ways flowno-io avoids it.

flowno pushes ``(end_time, task)`` on its sleep heap; two entries with the same ``end_time`` make
``heapq`` compare the two coroutines, which raises ``TypeError`` inside the loop and kills it.
The stream service died this way under 200 concurrent chat streams (issue 11). Here the tie is
made on purpose, so the crash is deterministic rather than a matter of load.
"""

from __future__ import annotations

from collections.abc import Generator
from timeit import default_timer
from types import coroutine
from typing import Any

import flowno
import pytest
from flowno import spawn
from flowno.core.event_loop.commands import SleepCommand

import flowno_io
from flowno_io.io.flowno_compat import sleep_until


@coroutine
def _raw_sleep_until(end_time: float) -> Generator[Any, None, None]:
    yield SleepCommand(end_time)  # what flowno.sleep yields, with a deadline we choose


def _tied_sleepers(sleep_at: Any, count: int = 3) -> Any:
    async def main() -> list[int]:
        # Far enough ahead that every sleeper is on the heap before it is due, even when other
        # programs hold the CPU for a while (a deadline already past is not pushed: no tie).
        deadline = default_timer() + 0.5
        woke: list[int] = []

        async def sleeper(n: int) -> None:
            await sleep_at(deadline)
            woke.append(n)

        tasks = [await spawn(sleeper(n)) for n in range(count)]
        for task in tasks:
            await task.join()
        return sorted(woke)

    return main()


def test_stock_loop_crashes_when_two_sleeps_share_a_deadline() -> None:
    with pytest.raises(TypeError, match="'<' not supported between instances of 'coroutine'"):
        flowno.EventLoop().run_until_complete(_tied_sleepers(_raw_sleep_until), join=True)


def test_flowno_io_sleep_survives_tied_deadlines_on_the_stock_loop() -> None:
    woke = flowno.EventLoop().run_until_complete(_tied_sleepers(sleep_until, 50), join=True)
    assert woke == list(range(50))


def test_flowno_io_event_loop_survives_tied_plain_flowno_sleeps() -> None:
    woke = flowno_io.EventLoop().run_until_complete(_tied_sleepers(_raw_sleep_until, 50), join=True)
    assert woke == list(range(50))


def test_event_loop_wakes_sleepers_in_deadline_order_then_arrival_order() -> None:
    async def main() -> list[str]:
        now = default_timer()
        order: list[str] = []

        async def sleeper(name: str, at: float) -> None:
            await _raw_sleep_until(at)
            order.append(name)

        # Deadlines far enough ahead that all four are pending on the heap even on a loaded machine.
        tasks = [
            await spawn(sleeper("late", now + 1.2)),
            await spawn(sleeper("tie-1", now + 1.1)),
            await spawn(sleeper("tie-2", now + 1.1)),
            await spawn(sleeper("early", now + 1.0)),
        ]
        for task in tasks:
            await task.join()
        return order

    assert flowno_io.EventLoop().run_until_complete(main(), join=True) == ["early", "tie-1", "tie-2", "late"]


def test_many_pacing_sleepers_run_to_completion_on_the_stock_loop() -> None:
    """Hundreds of tasks pacing with flowno_io.sleep (the chat stream's pattern) finish cleanly."""

    async def pacer(steps: int) -> int:
        for _ in range(steps):
            await flowno_io.sleep(0.0005)
        return steps

    async def main() -> int:
        tasks = [await spawn(pacer(40)) for _ in range(300)]
        return sum([await task.join() for task in tasks])

    assert flowno.EventLoop().run_until_complete(main(), join=True) == 300 * 40
