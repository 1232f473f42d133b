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

A poll reports every registered socket, waited on or not: its waiter's ``ready`` flag records
the edge until its connection clears it (before each ``recv``). A connection whose flag is not
set has had nothing arrive that a poll saw since its last ``recv``, and anything that arrived
unseen is an edge the next poll reports: it can wait without looking at its socket first (no
``poll`` syscall after each send). Edges are never dropped, so a wait that starts late (a task
that let others run between its look and its wait) misses nothing either.

A lone waiter whose last wait was short (``SHORT_WAIT``: a server on this host) first polls
without waiting for up to ``SPIN_SECONDS`` while the loop has nothing else to run
(``Poller.spin``): on this 2-core machine a process woken from sleep takes ~60 µs to run again,
more than such an answer takes (one task's GETs went from ~6,000 to ~8,300-9,300 per second).
A slower answer turns spinning off until waits are short again.

Timeouts work as for ``SocketStream``: a timer shuts the socket down, which makes it ready.
"""

from __future__ import annotations

import select
from time import perf_counter

from .._errors import ClosedResourceError
from ..io.flowno_compat import park, park_command
from ..io.poller import EDGE, HANGUP, READABLE, Poller
from ..io.wakeup import Wakeup

__all__ = ["Reactor", "ReadWaiter"]

_EVENTS = READABLE | HANGUP | EDGE
#: Events that report a state that stays (errors are reported whether asked for or not).
_ENDS = HANGUP | select.EPOLLERR
_MAX_EVENTS = 1024
#: A lone waiter whose last wait in the loop lasted less than this (an answer from this host or
#: next to it, plus the wake-up) first polls without waiting for up to ``SPIN_SECONDS`` while the
#: loop has nothing else to run (``Poller.spin``): waking a process costs more than such an
#: answer takes. An answer slower than that turns it off again, so a distant server costs at
#: most one spin.
SHORT_WAIT = 150e-6
SPIN_SECONDS = 50e-6


class ReadWaiter:
    """The wait state of one socket: its wakeup and whether a poll saw it become ready."""

    __slots__ = ("ended", "fd", "park_command", "ready", "wakeup")

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.wakeup = Wakeup()
        self.park_command = park_command(self.wakeup)  # (made once: a wait per response)
        #: A poll reported the socket (bytes, the end, an error or a shutdown) since its owner
        #: last cleared this (which it does before each ``recv``). May be stale: a ``recv``
        #: after the edge may have taken what it announced.
        self.ready = False
        #: A poll saw the end of the stream, an error or a shutdown. Unlike bytes, that state
        #: stays and announces itself once: a ``recv`` returning the bytes that came before it
        #: leaves it unread, with no edge to come. Its owner then reads without waiting.
        self.ended = False


class Reactor:
    """A private epoll for the sockets of one connection pool (plain TCP only)."""

    def __init__(self) -> None:
        self._poller = Poller()
        self._registered: dict[int, ReadWaiter] = {}
        self._waiting: dict[int, ReadWaiter] = {}
        self._leader: ReadWaiter | None = None
        # The waiter woken to lead next, until it leads or leaves: the other waiters a dispatch
        # woke then do not wake it again as they leave (one wake-up per dispatch, not one each).
        self._successor: ReadWaiter | None = None
        self._closing = False
        self._spin = False  # the last wait was short: spin before the next

    def register(self, fd: int) -> ReadWaiter:
        """Watch ``fd`` (until it is closed: closing removes it from the epoll; then :meth:`forget`)."""
        self._poller.register(fd, _EVENTS)
        waiter = self._registered[fd] = ReadWaiter(fd)
        return waiter

    def forget(self, waiter: ReadWaiter) -> None:
        """The socket of ``waiter`` was closed (its descriptor may be reused)."""
        if self._registered.get(waiter.fd) is waiter:
            del self._registered[waiter.fd]

    async def wait_readable(self, waiter: ReadWaiter) -> None:
        """Return once ``waiter.ready`` is set (at once if it is); the caller clears it, then
        reads (and waits again on ``EAGAIN``: the flag may be stale)."""
        if waiter.ready:
            return
        if self._closing and self._poller.closed:
            raise ClosedResourceError("the client was closed")
        waiting = self._waiting
        waiting[waiter.fd] = waiter
        try:
            while not waiter.ready:
                if self._leader is None:
                    self._leader = waiter
                    self._successor = None
                    events = None
                    try:
                        if self._spin and len(waiting) == 1:
                            events = self._poller.spin(SPIN_SECONDS, _MAX_EVENTS)
                        if not events:
                            started = perf_counter()
                            await self._poller.wait()
                            self._spin = perf_counter() - started < SHORT_WAIT
                            events = None
                    finally:
                        self._leader = None
                    self._dispatch(waiter, events)
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

    def _dispatch(self, leader: ReadWaiter, ready: list[tuple[int, int]] | None = None) -> None:
        registered = self._registered
        waiting = self._waiting
        for fd, events in self._poller.ready(_MAX_EVENTS) if ready is None else ready:
            waiter = waiting.pop(fd, None)
            if waiter is not None:
                if waiter is not leader:
                    waiter.wakeup.set()
            else:
                waiter = registered.get(fd)  # (the flags are kept for its connection's next read)
                if waiter is None:
                    continue
            waiter.ready = True
            if events & _ENDS:
                waiter.ended = True

    def close(self) -> None:
        """Close the epoll now, or when the leader leaves (sockets must be shut down first)."""
        self._closing = True
        if self._leader is None and not self._waiting:
            self._poller.close()
