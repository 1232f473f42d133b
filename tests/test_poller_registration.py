"""A ``Poller``'s descriptor stays in the loop's selector across waits (``KeptReadable``).

On ``flowno_io.EventLoop`` the first ``Poller.wait()`` registers the poller's epoll with flowno's
selector and later waits reuse that registration (the same selector key: no ``epoll_ctl``). It
leaves the selector when the poller is closed (before its descriptor is, so a new socket that gets
the same number can be waited on), when it is reported ready while nobody waits for it (a
level-triggered registration would otherwise end every poll at once: the loop would spin), and when
the loop's run ends (another loop may run next). On flowno's own loop a wait registers and
unregisters as before. Cancelling a task parked on a poller, with either style, leaves nothing
behind, also when the wake-up was already queued.
"""

from __future__ import annotations

import os
import socket
import time
from typing import Any

import flowno
import pytest
from flowno import spawn
from flowno.core.event_loop.selectors import sel
from helpers import HANG_TIMEOUT, runnable, until, until_parked

import flowno_io
from flowno_io import cancel, sleep
from flowno_io.io.flowno_compat import (
    KEPT_MISSES,
    KeptReadable,
    TaskCancelled,
    reset_selector_after_fork,
    wait_readable,
)
from flowno_io.io.flowno_compat import handle_of as flowno_handle
from flowno_io.io.poller import READABLE, Poller

LOOPS = {"flowno": flowno.EventLoop, "flowno_io": flowno_io.EventLoop}


def _key(poller: Poller) -> Any:
    """The selector key of the poller's epoll, or None when it is not registered."""
    for key in sel.get_map().values():
        if key.fileobj is poller._epoll:
            return key
    return None


class CountingLoop(flowno_io.EventLoop):  # type: ignore[misc]
    """flowno_io's loop counting the times it saw a kept descriptor ready."""

    reports = 0

    def _kept_ready(self, kept: KeptReadable) -> None:
        self.reports += 1
        super()._kept_ready(kept)


async def _until_queued(task: Any) -> None:
    """Yield with ``sleep(0)`` (this task stays queued ahead of a waiter the loop wakes) until
    ``task`` is in the ready queue."""
    deadline = time.monotonic() + HANG_TIMEOUT
    while not runnable(task):
        assert time.monotonic() < deadline, "the task was never woken"
        await sleep(0)


def test_waits_on_flowno_io_loop_reuse_one_registration() -> None:
    keys: list[Any] = []
    woken = 0

    async def waiter(poller: Poller) -> None:
        nonlocal woken
        for _ in range(50):
            await poller.wait()
            poller.consume_pokes()
            woken += 1
            keys.append(_key(poller))

    async def main() -> None:
        poller = Poller(wakeable=True)
        task = await spawn(waiter(poller))
        for index in range(50):
            await until_parked(task)
            poller.poke()
            await until(lambda index=index: woken == index + 1)
        await task.join()
        poller.close()
        assert _key(poller) is None  # closing took it out

    flowno_io.EventLoop().run_until_complete(main(), join=True)
    assert woken == 50
    assert keys[0] is not None and isinstance(keys[0].data, KeptReadable)
    assert all(key is keys[0] for key in keys)  # one registration, never made again


def test_waits_on_flownos_loop_register_per_wait_and_leave_nothing() -> None:
    seen: list[Any] = []

    async def waiter(poller: Poller) -> None:
        for _ in range(3):
            await poller.wait()
            poller.consume_pokes()
            seen.append(_key(poller))

    async def main() -> None:
        poller = Poller(wakeable=True)
        task = await spawn(waiter(poller))
        for index in range(3):
            await until_parked(task)
            poller.poke()
            await until(lambda index=index: len(seen) == index + 1)
        await task.join()
        poller.close()

    flowno.EventLoop().run_until_complete(main(), join=True)
    assert seen == [None, None, None]  # unregistered by flowno's loop on every wake-up


def test_closing_a_registered_poller_frees_its_number_for_a_socket_wait() -> None:
    """The selector must not keep the closed epoll: a socket given the same descriptor number
    would hit ``KeyError: ... is already registered`` on its first wait, killing the loop."""
    result: list[bytes] = []

    async def main() -> None:
        poller = Poller(wakeable=True)
        poller.poke()
        await poller.wait()  # registered, and kept
        number = poller.fileno()
        poller.close()
        left, right = socket.socketpair()
        if number not in (left.fileno(), right.fileno()):
            # (The kernel gave the pair other numbers: put one end on the freed number itself.)
            os.dup2(left.fileno(), number)
            left.close()
            left = socket.socket(fileno=number)
        try:
            reused = left if left.fileno() == number else right
            other = right if reused is left else left
            reused.setblocking(False)
            other.send(b"x")
            await wait_readable(flowno_handle(reused))
            result.append(reused.recv(1))
        finally:
            left.close()
            right.close()

    flowno_io.EventLoop().run_until_complete(main(), join=True)
    assert result == [b"x"]


def test_a_kept_poller_that_nobody_waits_for_leaves_the_selector_instead_of_spinning() -> None:
    loop = CountingLoop()
    state: dict[str, Any] = {}

    async def main() -> None:
        poller = Poller(wakeable=True)
        poller.poke()
        await poller.wait()  # registered; the poke is not consumed: the epoll stays readable
        reports = loop.reports
        await sleep(0.2)  # nobody waits on the poller meanwhile
        state["reports"] = loop.reports - reports
        state["key"] = _key(poller)
        await poller.wait()  # registered again, and still readable: returns at once
        state["again"] = _key(poller) is not None
        poller.close()

    loop.run_until_complete(main(), join=True)
    # The reports tolerated before the drop, then none: kept, it would be reported on every
    # poll of a loop that no longer blocks (thousands in 0.2 s).
    assert state["reports"] == KEPT_MISSES + 1, state
    assert state["key"] is None
    assert state["again"] is True


def test_a_readiness_seen_before_the_woken_task_runs_keeps_the_registration() -> None:
    """Many ready tasks: the loop looks at its sockets again before the woken waiter runs, and
    sees the poller still readable; that is no reason to drop it."""
    keys: list[Any] = []
    running = True

    async def busy() -> None:
        while running:
            await sleep(0)

    async def waiter(poller: Poller) -> None:
        for _ in range(20):
            await poller.wait()
            poller.consume_pokes()
            keys.append(_key(poller))

    async def main() -> None:
        nonlocal running
        poller = Poller(wakeable=True)
        busy_tasks = [
            await spawn(busy()) for _ in range(3 * flowno_io.io.flowno_compat.MAX_STEPS_BETWEEN_POLLS)
        ]
        task = await spawn(waiter(poller))
        for index in range(20):
            await until_parked(task)
            poller.poke()
            await until(lambda index=index: len(keys) == index + 1)
        await task.join()
        running = False
        for busy_task in busy_tasks:
            await busy_task.join()
        poller.close()

    flowno_io.EventLoop().run_until_complete(main(), join=True)
    assert len(keys) == 20
    assert all(key is keys[0] is not None for key in keys)


def test_several_pollers_wake_only_their_own_waiters() -> None:
    order: list[str] = []

    async def waiter(name: str, poller: Poller, rounds: int) -> None:
        for _ in range(rounds):
            await poller.wait()
            poller.consume_pokes()
            order.append(name)

    async def main() -> None:
        pollers = {name: Poller(wakeable=True) for name in "abc"}
        tasks = {name: await spawn(waiter(name, poller, 2)) for name, poller in pollers.items()}
        for index, name in enumerate("cabbac"):
            for task in tasks.values():
                await until_parked(task)
            pollers[name].poke()
            await until(lambda index=index: len(order) == index + 1)
        for task in tasks.values():
            await task.join()
        assert all(_key(poller) is not None for poller in pollers.values())
        for poller in pollers.values():
            poller.close()
        assert all(_key(poller) is None for poller in pollers.values())

    flowno_io.EventLoop().run_until_complete(main(), join=True)
    assert order == list("cabbac")


@pytest.mark.parametrize("kind", sorted(LOOPS))
@pytest.mark.parametrize(
    ("style", "woken"),
    # (Not flowno's ``TaskHandle.cancel()`` of a task whose wake-up is already queued: flowno runs
    # that step first, the race of flowno-upstream §12 that ``flowno_io.cancel`` exists for.)
    [("handle", False), ("flowno_io", False), ("flowno_io", True)],
    ids=["handle-parked", "flowno_io-parked", "flowno_io-wake-queued"],
)
def test_cancelling_a_task_parked_on_a_poller_leaves_it_usable(kind: str, style: str, woken: bool) -> None:
    loop = LOOPS[kind]()
    outcome: list[str] = []

    async def waiter(poller: Poller) -> None:
        await poller.wait()
        outcome.append("woken")

    async def main() -> None:
        poller = Poller(wakeable=True)
        victim = await spawn(waiter(poller))
        await until_parked(victim)
        if woken:  # the wake-up reaches the ready queue before the cancel is handled
            poller.poke()
            await _until_queued(victim)
        if style == "handle":
            victim.cancel()
        else:
            cancel(victim)
        try:
            await victim.join()
        except TaskCancelled:
            outcome.append("cancelled")
        assert not any(loop.event_waiters.values())
        assert not loop.waiting_on_network
        poller.consume_pokes()
        follower = await spawn(waiter(poller))  # the poller still works for another task
        await until_parked(follower)
        poller.poke()
        await follower.join()
        poller.close()
        assert _key(poller) is None

    loop.run_until_complete(main(), join=True)
    assert outcome == ["cancelled", "woken"]
    assert not any(loop.event_waiters.values())


def test_the_loop_releases_its_registrations_when_its_run_ends() -> None:
    """A poller kept by one run can be waited on by the next loop, flowno's own included
    (flowno registering an fd that is still in the selector raises ``KeyError``)."""
    poller = Poller(wakeable=True)

    async def wait_once() -> str:
        poller.poke()
        await poller.wait()
        poller.consume_pokes()
        return "woken"

    try:
        assert flowno_io.EventLoop().run_until_complete(wait_once(), join=True) == "woken"
        assert _key(poller) is None
        assert flowno.EventLoop().run_until_complete(wait_once(), join=True) == "woken"
        assert flowno_io.EventLoop().run_until_complete(wait_once(), join=True) == "woken"
        assert _key(poller) is None
    finally:
        poller.close()


def test_a_poller_registered_with_listened_sockets_wakes_on_data() -> None:
    """The whole path: a socket inside the poller becomes readable; the parked task wakes."""
    left, right = socket.socketpair()
    right.setblocking(False)
    got: list[bytes] = []

    async def reader(poller: Poller) -> None:
        for _ in range(5):
            while not poller.ready():
                await poller.wait()
            got.append(right.recv(10))

    async def main() -> None:
        poller = Poller()
        poller.register(right.fileno(), READABLE)
        task = await spawn(reader(poller))
        for index in range(5):
            await until_parked(task)
            left.send(b"%d" % index)
            await until(lambda index=index: len(got) == index + 1)
        await task.join()
        poller.close()

    try:
        flowno_io.EventLoop().run_until_complete(main(), join=True)
    finally:
        left.close()
        right.close()
    assert got == [b"0", b"1", b"2", b"3", b"4"]


def test_a_poller_waits_again_after_the_selector_is_replaced_as_after_a_fork() -> None:
    """A forked worker replaces flowno's selector (``reset_selector_after_fork``): registrations
    made before are gone with the old epoll, and the next wait must register again."""
    woken: list[str] = []

    async def waiter(poller: Poller) -> None:
        await poller.wait()
        woken.append("again")

    async def main() -> None:
        poller = Poller(wakeable=True)
        poller.poke()
        await poller.wait()  # registered, and kept
        poller.consume_pokes()
        reset_selector_after_fork()  # (the loop's own wake-up socket goes too: not needed here)
        task = await spawn(waiter(poller))
        try:
            await until_parked(task)
            poller.poke()
            await until(lambda: woken == ["again"], message="the poller was not registered again")
        finally:
            cancel(task)
            poller.close()

    flowno_io.EventLoop().run_until_complete(main(), join=True)
