"""Timers on the flowno loop: firing, re-arming, disarming, compaction, and the clock task's exit."""

from __future__ import annotations

import time

from flowno import Event, EventLoop
from helpers import HANG_TIMEOUT, until

from flowno_io.io.clock import COMPACT_SLACK, LINGER, get_clock

#: Float rounding slack for "never before the deadline" (a timer fires at or after it).
ROUNDING = 1e-6


def run(coro) -> object:  # type: ignore[no-untyped-def]
    return EventLoop().run_until_complete(coro, join=True)


def test_timer_fires_once_at_its_deadline() -> None:
    fired: list[float] = []

    async def main() -> None:
        start = time.monotonic()
        timer = get_clock().timer(lambda: fired.append(time.monotonic() - start))
        await timer.arm(0.1)
        await until(lambda: fired, message="the timer never fired")
        assert timer.deadline is None and get_clock().armed == 0  # nothing left to fire again

    run(main())  # the clock task runs on until it exits: a second firing would be recorded
    assert len(fired) == 1
    assert 0.1 - ROUNDING <= fired[0] < HANG_TIMEOUT  # never early; late only by the load


def test_rearming_later_postpones_and_earlier_advances() -> None:
    fired: dict[str, float] = {}
    order: list[str] = []

    def record(name: str, start: float) -> None:
        fired.setdefault(name, time.monotonic() - start)
        order.append(name)

    async def main() -> None:
        start = time.monotonic()
        later = get_clock().timer(lambda: record("later", start))
        earlier = get_clock().timer(lambda: record("earlier", start))
        await later.arm(0.05)
        await later.arm(0.3)  # moved later: must not fire at 0.05
        await earlier.arm(1.0)
        await earlier.arm(0.1)  # moved earlier: must fire at 0.1, not 1.0
        await until(lambda: len(order) == 2, message=lambda: f"fired so far: {order}")

    run(main())
    assert fired["later"] >= 0.3 - ROUNDING
    # Deadlines 0.1 and 0.3 fire in that order however late the loop runs; had the move to 0.1
    # been lost, "earlier" would fire at 1.0, after "later".
    assert order == ["earlier", "later"]
    assert fired["earlier"] >= 0.1 - ROUNDING


def test_disarmed_timer_does_not_fire() -> None:
    fired: list[str] = []

    async def main() -> None:
        timer = get_clock().timer(lambda: fired.append("x"))
        await timer.arm(0.05)
        timer.disarm()

    started = time.monotonic()
    run(main())  # returns once the clock task exits: LINGER (0.25 s) after the disarm
    assert time.monotonic() - started >= 0.05, "the clock ran past the old deadline"
    assert fired == []


def test_callback_returning_an_event_gets_it_set() -> None:
    async def main() -> bool:
        event = Event()
        await get_clock().timer(lambda: event).arm(0.05)
        await event.wait()
        return event.is_set()

    assert run(main()) is True


def test_disarmed_timers_do_not_pile_up_in_the_heap() -> None:
    async def main() -> int:
        clock = get_clock()
        keep = clock.timer(lambda: None)
        await keep.arm(60)
        for _ in range(20_000):  # a connection closed long before its idle deadline, 20,000 times
            timer = clock.timer(lambda: None)
            await timer.arm(60)
            timer.disarm()
        size = len(clock._heap)
        keep.disarm()
        return size

    assert run(main()) <= 2 + COMPACT_SLACK + 1


def test_clock_task_exits_when_nothing_is_armed() -> None:
    async def main() -> None:
        await get_clock().timer(lambda: None).arm(0.01)

    started = time.monotonic()
    run(main())  # returns only when every task, the clock's included, has finished
    # It lingers LINGER seconds with nothing armed, then exits (had it not, run() would hang).
    assert 0.01 + LINGER - ROUNDING <= time.monotonic() - started < HANG_TIMEOUT
