"""Waking and interrupting parked tasks from plain code, on flowno 0.1.19's loop.

Flowno cannot do either by itself: ``Event.set()`` is a command that only a running task can
yield (so a timer callback or a close hook cannot wake anyone), and ``TaskHandle.cancel()``
leaves the task's records behind (its sleep-heap entry, its selector registration, its place in
a waiter set), which later resume it spuriously or keep its socket registered so that the next
wait on that fd raises ``KeyError``.

:class:`Wakeup` and :func:`interrupt` do these two things by editing the loop's bookkeeping
directly, as flowno's own ``Condition.notify_all_nowait`` does. They depend on the internals of
flowno 0.1.x (the dependency is pinned ``<0.2``); ``tests/test_wakeup.py`` checks each structure.
Call them only on the loop's thread.
"""

from __future__ import annotations

import heapq
from collections.abc import Generator
from types import coroutine
from typing import Any

from flowno import current_event_loop
from flowno.core.event_loop.commands import EventWaitCommand
from flowno.core.event_loop.event_loop import current_task
from flowno.core.event_loop.selectors import sel

__all__ = ["Wakeup", "interrupt"]


@coroutine
def _park(wakeup: Wakeup) -> Generator[Any, None, None]:
    # The loop treats any object with a ``_set`` flag as an event: it parks the task in
    # ``loop.event_waiters[wakeup]`` unless the flag is already set.
    yield EventWaitCommand(event=wakeup)


class Wakeup:
    """A flag that one task waits on and any code on the loop thread sets without awaiting.

    It is level-triggered: a :meth:`set` before :meth:`wait` makes the wait return at once, and
    every wait clears the flag. Unlike a flowno ``Event`` it is reusable and leaves no entry in
    the loop's waiter table behind.

    Example:
        >>> from flowno import EventLoop, spawn
        >>> wakeup = Wakeup()
        >>> async def waiter():
        ...     await wakeup.wait()
        ...     return "woken"
        >>> async def main():
        ...     task = await spawn(waiter())
        ...     wakeup.set()  # a plain call: usable in timer callbacks and close hooks
        ...     return await task.join()
        >>> EventLoop().run_until_complete(main(), join=True)
        'woken'
    """

    __slots__ = ("__weakref__", "_set")

    def __init__(self) -> None:
        self._set = False

    @property
    def is_set(self) -> bool:
        """True while set and not yet consumed by a :meth:`wait`."""
        return self._set

    def set(self) -> None:
        """Set the flag and make the waiting task (if any) runnable."""
        self._set = True
        loop = current_event_loop()
        if loop is None:
            return
        waiters = loop.event_waiters.pop(self, None)
        if waiters:
            loop.tasks.extend((task, None, None) for task in waiters)

    def clear(self) -> None:
        """Clear the flag without waiting."""
        self._set = False

    async def wait(self) -> None:
        """Wait until the flag is set, then clear it."""
        if not self._set:
            await _park(self)
        self._set = False


def interrupt(task: Any, exception: Exception) -> bool:
    """Throw ``exception`` into the parked ``task`` after removing every record that would resume it.

    The task resumes with ``exception`` raised at its ``await`` (its ``finally`` blocks run), and
    nothing left in the loop resumes it again later, so it may go on to wait for other things.

    Args:
        task: the raw coroutine of a flowno task (``TaskHandle.raw_task``, or ``current_task()``
            captured inside it).
        exception: what to raise in it (flowno's ``TaskCancelled`` or a subclass suits cleanup code).

    Returns:
        False (doing nothing) when no loop runs, when ``task`` is the running task itself, or when
        it has already finished.

    Example:
        >>> from flowno import EventLoop, sleep, spawn
        >>> async def sleeper():
        ...     try:
        ...         await sleep(3600)
        ...     except LookupError:
        ...         return "interrupted"
        >>> async def main():
        ...     task = await spawn(sleeper())
        ...     await sleep(0)
        ...     interrupt(task.raw_task, LookupError())
        ...     return await task.join()
        >>> EventLoop().run_until_complete(main(), join=True)  # returns at once, not in an hour
        'interrupted'
    """
    loop = current_event_loop()
    if loop is None or task is current_task() or task in loop.finished or task in loop.exceptions:
        return False
    if any(entry[0] is task for entry in loop.tasks):
        kept = [entry for entry in loop.tasks if entry[0] is not task]
        loop.tasks.clear()
        loop.tasks.extend(kept)
    sleeping = loop.sleeping
    if any(entry[1] is task for entry in sleeping):
        sleeping[:] = [entry for entry in sleeping if entry[1] is not task]
        heapq.heapify(sleeping)
    if any(waiting is task for waiting in loop.waiting_on_network):
        loop.waiting_on_network[:] = [waiting for waiting in loop.waiting_on_network if waiting is not task]
        for key in list(sel.get_map().values()):
            if getattr(key.data, "_task", None) is task:
                sel.unregister(key.fileobj)
    for table in (loop.event_waiters, loop.condition_waiters, loop.lock_waiters, loop.watching_task):
        for key, waiters in list(table.items()):
            if task in waiters:
                waiters.remove(task)
            if not waiters:
                del table[key]  # also drops the empty entries flowno leaves behind
    loop.tasks.append((task, None, exception))
    return True
