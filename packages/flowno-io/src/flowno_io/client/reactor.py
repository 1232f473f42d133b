"""Waiting for many client sockets with one flowno wait: the pool's Poller and a leader task.

Every flowno socket wait registers the socket with the loop's selector, polls it, and unregisters
it, and the loop wakes one task per poll. With many connections waiting for responses at once
that is one loop round trip and two ``epoll_ctl`` per response. Here each plain-TCP connection
is registered once (edge-triggered) in an epoll of the pool's own; a task that must wait parks on
a :class:`~flowno_io._wakeup.Wakeup`, and one of the waiting tasks, the *leader*, parks on the
epoll's descriptor in the flowno loop. When it wakes it polls the epoll without blocking and sets
the wakeups of every ready socket: one loop wake-up serves all the responses that arrived.

No task is spawned: when the leader's own socket is ready and others still wait, it makes one of
them the leader before it returns. When nobody waits, nothing is parked, so
``EventLoop.run_until_complete`` can finish.

Timeouts work as for ``SocketStream``: a timer shuts the socket down, which makes it ready.
"""

from __future__ import annotations

from .._errors import ClosedResourceError
from ..io.flowno_compat import park, park_command
from ..io.poller import EDGE, HANGUP, READABLE, Poller
from ..io.wakeup import Wakeup

__all__ = ["Reactor", "ReadWaiter"]

_EVENTS = READABLE | HANGUP | EDGE
_MAX_EVENTS = 1024


class ReadWaiter:
    """The wait state of one socket: its wakeup and why it was woken."""

    __slots__ = ("fd", "park_command", "ready", "wakeup")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.wakeup = Wakeup()
        self.park_command = park_command(self.wakeup)  # (made once: a wait per response)
        self.ready = False  # the socket is readable (or closed, or shut down)


class Reactor:
    """A private epoll for the sockets of one connection pool (plain TCP only)."""

    def __init__(self) -> None:
        self._poller = Poller()
        self._waiting: dict[int, ReadWaiter] = {}
        self._leader: ReadWaiter | None = None
        # The waiter woken to lead next, until it leads or leaves: the other waiters a dispatch
        # woke then do not wake it again as they leave (one wake-up per dispatch, not one each).
        self._successor: ReadWaiter | None = None
        self._closing = False

    def register(self, fd: int) -> ReadWaiter:
        """Watch ``fd`` (until it is closed: closing removes it from the epoll)."""
        self._poller.register(fd, _EVENTS)
        return ReadWaiter(fd)

    async def wait_readable(self, waiter: ReadWaiter) -> None:
        """Return once the socket of ``waiter`` may be readable (call after ``EAGAIN``).

        Wake-ups may be spurious: the caller tries its ``recv`` again and waits again on ``EAGAIN``.
        """
        if self._closing and self._poller.closed:
            raise ClosedResourceError("the client was closed")
        waiting = self._waiting
        waiting[waiter.fd] = waiter
        waiter.ready = False
        try:
            while not waiter.ready:
                if self._leader is None:
                    self._leader = waiter
                    self._successor = None
                    try:
                        await self._poller.wait()
                    finally:
                        self._leader = None
                    self._dispatch(waiter)
                else:
                    # Our socket is ready, or we are to lead. (Wakeup.wait inlined: a coroutine
                    # less on the path where most requests wait.)
                    wakeup = waiter.wakeup
                    if not wakeup.is_set:
                        await park(wakeup, waiter.park_command)
                    wakeup.clear()
        finally:
            if waiting.get(waiter.fd) is waiter:
                del waiting[waiter.fd]
            if self._successor is waiter:
                self._successor = None
            if self._leader is None:
                if waiting:
                    if self._successor is None:
                        # Someone must keep watching the epoll: wake a waiter to lead.
                        successor = self._successor = next(iter(waiting.values()))
                        successor.wakeup.set()
                elif self._closing:
                    self._poller.close()

    def _dispatch(self, leader: ReadWaiter) -> None:
        waiting = self._waiting
        for fd, _ in self._poller.ready(_MAX_EVENTS):
            waiter = waiting.pop(fd, None)
            if waiter is not None:
                waiter.ready = True
                if waiter is not leader:
                    waiter.wakeup.set()

    def close(self) -> None:
        """Close the epoll now, or when the leader leaves (sockets must be shut down first)."""
        self._closing = True
        if self._leader is None and not self._waiting:
            self._poller.close()
