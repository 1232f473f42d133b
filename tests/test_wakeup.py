"""Wakeup and interrupt(): they edit flowno's loop bookkeeping, so check every structure they touch.

Each test interrupts a task parked on one kind of wait, then checks that no record of the task is
left behind (nothing would resume it later) and that it can wait on something else afterwards
without a spurious wake-up.
"""

from __future__ import annotations

import socket
from typing import Any

import pytest
from flowno import Condition, Event, EventLoop, Lock, SocketHandle, sleep, spawn
from flowno.core.event_loop.selectors import sel
from helpers import until_parked

from flowno_io.io.socket_stream import wait_readable
from flowno_io.io.wakeup import Wakeup, interrupt


class Stop(Exception):
    pass


def _references(loop: Any, task: Any, allowed: object = None) -> list[str]:
    """Where the loop still holds ``task`` as a waiter (other than on ``allowed``)."""
    found = []
    if any(entry[0] is task for entry in loop.tasks):
        found.append("tasks")
    if any(entry[1] is task for entry in loop.sleeping):
        found.append("sleeping")
    if any(waiting is task for waiting in loop.waiting_on_network):
        found.append("waiting_on_network")
    if any(getattr(key.data, "_task", None) is task for key in sel.get_map().values()):
        found.append("selector")
    for name in ("event_waiters", "condition_waiters", "lock_waiters", "watching_task"):
        if any(task in waiters for key, waiters in getattr(loop, name).items() if key is not allowed):
            found.append(name)
    return found


def _run_interrupt_case(park: Any) -> list[str]:
    """Park a task with ``park()``, interrupt it, let it wait on a Wakeup; return what it saw."""
    loop = EventLoop()
    seen: list[str] = []
    after = Wakeup()

    async def victim() -> None:
        try:
            await park()
            seen.append("resumed normally")
        except Stop:
            seen.append("interrupted")
        await after.wait()  # a stale record would resume it here early
        seen.append("woken by wakeup")

    async def main() -> None:
        task = await spawn(victim())
        await until_parked(task)
        assert interrupt(task.raw_task, Stop())
        await until_parked(task)  # now waiting on ``after``
        seen.append("refs:" + ",".join(_references(loop, task.raw_task, allowed=after)))
        await sleep(0.05)  # long enough for a short stale sleep to fire
        after.set()
        await task.join()

    loop.run_until_complete(main(), join=True)
    return seen


def test_interrupt_sleeping_task() -> None:
    async def park() -> None:
        await sleep(0.04)  # would fire during the check window if left in the heap

    assert _run_interrupt_case(park) == ["interrupted", "refs:", "woken by wakeup"]


def test_interrupt_task_waiting_on_event() -> None:
    event = Event()

    async def park() -> None:
        await event.wait()

    assert _run_interrupt_case(park) == ["interrupted", "refs:", "woken by wakeup"]


def test_interrupt_task_waiting_on_lock_and_condition() -> None:
    lock = Lock()
    condition = Condition()

    async def park_lock() -> None:
        await lock.acquire()  # the holder below never releases
        await lock.acquire()

    async def park_condition() -> None:
        await condition.lock.acquire()
        await condition.wait()  # releases the lock while waiting (no release after the interrupt)

    assert _run_interrupt_case(park_lock) == ["interrupted", "refs:", "woken by wakeup"]
    assert _run_interrupt_case(park_condition) == ["interrupted", "refs:", "woken by wakeup"]


def test_interrupt_task_waiting_on_join() -> None:
    release = Wakeup()

    async def child_task() -> None:
        await release.wait()

    async def park() -> None:
        child = await spawn(child_task())
        try:
            await child.join()
        finally:
            release.set()  # let the child end, so the loop can

    assert _run_interrupt_case(park) == ["interrupted", "refs:", "woken by wakeup"]


def test_interrupt_socket_wait_frees_the_registration() -> None:
    left, right = socket.socketpair()
    right.setblocking(False)
    handle = SocketHandle(right)

    async def park() -> None:
        await wait_readable(handle)

    try:
        assert _run_interrupt_case(park) == ["interrupted", "refs:", "woken by wakeup"]
        assert right not in [key.fileobj for key in sel.get_map().values()]

        async def wait_again() -> bytes:  # the same socket can be waited on again (no KeyError)
            left.send(b"x")
            await wait_readable(handle)
            return right.recv(1)

        assert EventLoop().run_until_complete(wait_again(), join=True) == b"x"
    finally:
        left.close()
        right.close()


def test_interrupt_refuses_finished_and_running_tasks() -> None:
    results: list[bool] = []

    async def done() -> None:
        return None

    async def main() -> None:
        from flowno.core.event_loop.event_loop import current_task

        task = await spawn(done())
        await task.join()
        results.append(interrupt(task.raw_task, Stop()))
        results.append(interrupt(current_task(), Stop()))

    EventLoop().run_until_complete(main(), join=True)
    assert results == [False, False]
    assert interrupt(object(), Stop()) is False  # no loop running


def test_wakeup_is_level_triggered_and_leaves_no_waiter_entry() -> None:
    loop = EventLoop()
    wakeup = Wakeup()
    order: list[str] = []

    async def waiter() -> None:
        await wakeup.wait()
        order.append("first")
        await wakeup.wait()
        order.append("second")

    async def main() -> None:
        wakeup.set()  # before anyone waits: the first wait returns at once
        task = await spawn(waiter())
        await until_parked(task)  # in its second wait
        assert order == ["first"]
        assert not wakeup.is_set
        wakeup.set()
        await task.join()
        assert wakeup not in loop.event_waiters

    loop.run_until_complete(main(), join=True)
    assert order == ["first", "second"]


@pytest.mark.parametrize("count", [1, 50])
def test_wakeup_set_wakes_many_waiters_in_one_step(count: int) -> None:
    wakeups = [Wakeup() for _ in range(count)]
    woken: list[int] = []

    async def waiter(n: int) -> None:
        await wakeups[n].wait()
        woken.append(n)

    async def main() -> None:
        tasks = [await spawn(waiter(n)) for n in range(count)]
        for task in tasks:
            await until_parked(task)
        for wakeup in wakeups:
            wakeup.set()
        for task in tasks:
            await task.join()

    EventLoop().run_until_complete(main(), join=True)
    assert sorted(woken) == list(range(count))
