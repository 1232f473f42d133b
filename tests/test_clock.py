"""Timers on the flowno loop: firing, re-arming, disarming, compaction, and the clock task's exit."""

from __future__ import annotations

import time

from flowno import Event, EventLoop, sleep

from flowno_io.io.clock import COMPACT_SLACK, LINGER, TICK, get_clock


def run(coro) -> object:  # type: ignore[no-untyped-def]
    return EventLoop().run_until_complete(coro, join=True)


def test_timer_fires_once_at_its_deadline() -> None:
    fired: list[float] = []

    async def main() -> None:
        start = time.monotonic()
        timer = get_clock().timer(lambda: fired.append(time.monotonic() - start))
        await timer.arm(0.1)
        await sleep(0.4)

    run(main())
    assert len(fired) == 1
    assert 0.09 <= fired[0] <= 0.1 + TICK + 0.1


def test_rearming_later_postpones_and_earlier_advances() -> None:
    fired: dict[str, float] = {}

    async def main() -> None:
        start = time.monotonic()
        later = get_clock().timer(lambda: fired.setdefault("later", time.monotonic() - start))
        earlier = get_clock().timer(lambda: fired.setdefault("earlier", time.monotonic() - start))
        await later.arm(0.05)
        await later.arm(0.3)  # moved later: must not fire at 0.05
        await earlier.arm(1.0)
        await earlier.arm(0.1)  # moved earlier: must fire at ~0.1, not 1.0
        await sleep(0.6)

    run(main())
    assert fired["later"] >= 0.29
    assert fired["earlier"] < 0.3


def test_disarmed_timer_does_not_fire() -> None:
    fired: list[str] = []

    async def main() -> None:
        timer = get_clock().timer(lambda: fired.append("x"))
        await timer.arm(0.05)
        timer.disarm()
        await sleep(0.2)

    run(main())
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
    assert time.monotonic() - started < 0.01 + LINGER + 2 * TICK + 0.3
