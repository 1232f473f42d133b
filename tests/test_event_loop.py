"""``flowno_io.EventLoop`` handles the hot waits itself: it must leave the loop as flowno does.

The subclass handles ``EventWaitCommand`` (``park``), ``SleepCommand`` and ``SocketRecvCommand``
(``wait_readable``) by exact type, before flowno's chain of ``isinstance`` checks. Each scenario
here runs on flowno's own loop and on the subclass, and both must give the same results and end
with nothing left behind: no waiter entry, no task waiting on the network, no socket wait
registered in the selector.
"""

from __future__ import annotations

import socket
from typing import Any

import flowno
import pytest
from flowno import spawn
from flowno.core.event_loop.selectors import sel

import flowno_io
from flowno_io import cancel, sleep
from flowno_io.io.flowno_compat import TaskCancelled, handle_of, park, wait_readable, wake
from flowno_io.io.wakeup import Wakeup

LOOPS = {"flowno": flowno.EventLoop, "flowno_io": flowno_io.EventLoop}


def _leftovers(loop: Any) -> dict[str, int]:
    return {
        "event_waiters": sum(len(waiters) for waiters in loop.event_waiters.values()),
        "waiting_on_network": len(loop.waiting_on_network),
        # (every loop's own wake-up socket stays registered in flowno's global selector: skipped)
        "socket_waits": sum(1 for key in sel.get_map().values() if getattr(key.data, "_command", None)),
    }


@pytest.mark.parametrize("kind", list(LOOPS))
def test_park_wake_sleep_and_socket_waits_leave_nothing_behind(kind: str) -> None:
    loop = LOOPS[kind]()
    order: list[str] = []
    left, right = socket.socketpair()
    left.setblocking(False)

    async def parked(flag: Wakeup) -> None:
        await park(flag)
        order.append("woken")

    async def reader() -> None:
        await wait_readable(handle_of(left))
        order.append(f"read {left.recv(10)!r}")

    async def main() -> None:
        flag = Wakeup()
        task = await spawn(parked(flag))
        await sleep(0)  # a sleep already due only yields: the parked task runs first
        order.append("yielded")
        wake(flag)
        await task.join()
        read = await spawn(reader())
        await sleep(0.01)
        right.send(b"x")
        await read.join()
        victim = await spawn(reader())  # parked on a socket nobody writes to, then cancelled
        await sleep(0.01)
        cancel(victim)
        try:
            await victim.join()
        except TaskCancelled:
            order.append("cancelled")

    try:
        loop.run_until_complete(main(), join=True)
        assert order == ["yielded", "woken", "read b'x'", "cancelled"]
        assert _leftovers(loop) == {"event_waiters": 0, "waiting_on_network": 0, "socket_waits": 0}
    finally:
        left.close()
        right.close()


@pytest.mark.parametrize("kind", sorted(LOOPS))
def test_an_installed_instrument_sees_every_step(kind: str) -> None:
    """flowno_io.EventLoop skips the per-step instrument hooks only when no instrument is
    installed: with one, it sees each send before and after, as on flowno's own loop."""
    from flowno.core.event_loop.instrumentation import EventLoopInstrument

    class Counting(EventLoopInstrument):
        def __init__(self) -> None:
            self.before = 0
            self.after = 0

        def on_task_before_send(self, metadata: Any) -> None:
            self.before += 1

        def on_task_after_send(self, metadata: Any, command: Any) -> None:
            self.after += 1

    async def main() -> str:
        for _ in range(5):
            await sleep(0)
        return "done"

    counting = Counting()
    with counting:
        assert LOOPS[kind]().run_until_complete(main(), join=True) == "done"
    assert counting.before >= 6 and counting.after >= 5


def test_flownos_loop_leaves_its_wakeup_socket_in_the_selector_and_ours_does_not() -> None:
    """flowno registers a loop's wake-up socket at each run and never removes it (a second run
    raises ``KeyError``; once the loop is collected its closed peer makes the socket readable
    forever, and every later loop spins). ``flowno_io.EventLoop`` removes its own at the end of
    a run (``docs/flowno-upstream.md`` §14); this canary fails once flowno does too."""
    registered = {}
    for kind, make in LOOPS.items():
        loop = make()
        loop.run_until_complete(sleep(0))
        registered[kind] = any(key.fileobj is loop._wakeup_reader for key in sel.get_map().values())
        if registered[kind]:
            sel.unregister(loop._wakeup_reader)  # (left there, it would make later loops spin)
    assert registered == {"flowno": True, "flowno_io": False}


def test_a_flowno_io_loop_runs_again() -> None:
    loop = flowno_io.EventLoop()
    assert loop.run_until_complete(_answer(), join=True) == 42
    assert loop.run_until_complete(_answer(), join=True) == 42


async def _answer() -> int:
    await sleep(0)
    return 42
