"""A reusable wake-up flag for tasks on the flowno loop, and re-exports of ``interrupt``/``cancel``.

flowno's ``Event.set()`` is a command that only a running task can yield, so a timer callback or a
close hook cannot wake anyone with it, and every flowno ``Event`` waited on stays in the loop's
waiter table. :class:`Wakeup` is set by a plain call and leaves nothing behind; the loop editing it
needs lives in :mod:`flowno_io.io.flowno_compat`.
"""

from __future__ import annotations

from .flowno_compat import cancel, interrupt, park, wake

__all__ = ["Wakeup", "cancel", "interrupt"]


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
        wake(self)

    def clear(self) -> None:
        """Clear the flag without waiting."""
        self._set = False

    async def wait(self) -> None:
        """Wait until the flag is set, then clear it."""
        if not self._set:
            await park(self)
        self._set = False
