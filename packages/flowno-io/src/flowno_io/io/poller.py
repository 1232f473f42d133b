"""One poller: a private ``epoll`` that the flowno loop sees as a single descriptor.

flowno registers a socket with its selector for every wait and unregisters it on wake-up, and
wakes one task per ready socket (``docs/flowno-upstream.md`` §3). A component that waits for many
sockets at once (the server's idle keep-alive connections, the streaming responses watched for
disconnects, a client pool's responses) instead registers them once here, parks one task on the
poller's own descriptor, and on wake-up reads every ready socket with a non-blocking poll: one loop
wake-up serves them all. The server driver, the stream monitor and the client reactor all use it.

On :class:`flowno_io.EventLoop` the poller's own descriptor also stays registered with the loop's
selector from one wait to the next: registering an epoll inside another makes the kernel check
every descriptor inside it for loops (~50 ns each), which flowno's per-wait registration paid on
every wait. :meth:`close` takes it out first.

:meth:`Poller.poke` wakes the parked task from plain code (a close hook, a timer callback), through
a socket pair registered in the epoll.

Linux only (``select.epoll``), as the rest of the server.

Example:
    >>> import socket
    >>> from flowno_io.io.flowno_compat import EventLoop
    >>> a, b = socket.socketpair()
    >>> async def main():
    ...     poller = Poller()
    ...     poller.register(b.fileno(), READABLE)
    ...     a.send(b"x")
    ...     await poller.wait()
    ...     ready = poller.ready()
    ...     poller.close()
    ...     return [fd == b.fileno() for fd, _ in ready]
    >>> EventLoop().run_until_complete(main(), join=True)
    [True]
"""

from __future__ import annotations

import select
import socket as _socket
from collections.abc import Awaitable
from time import perf_counter

from .flowno_compat import KeptReadable, loop_is_idle, wait_kept

__all__ = ["EDGE", "HANGUP", "READABLE", "WRITABLE", "Poller"]

READABLE = select.EPOLLIN
WRITABLE = select.EPOLLOUT
#: The peer closed its side or reset (incoming bytes alone do not raise these).
HANGUP = select.EPOLLRDHUP | select.EPOLLHUP
EDGE = select.EPOLLET
#: Ready sockets read per poll at most (the rest are reported by the next poll).
MAX_EVENTS = 1024


class Poller:
    """A private epoll plus the flowno handle a task parks on to wait for any of its sockets."""

    __slots__ = ("_epoll", "_kept", "_wake_reader", "_wake_writer")

    def __init__(self, *, wakeable: bool = False) -> None:
        """Args:
        wakeable: also make :meth:`poke` work (a socket pair registered in the epoll).
        """
        self._epoll = select.epoll()
        self._kept = KeptReadable(self._epoll)
        self._wake_reader: _socket.socket | None = None
        self._wake_writer: _socket.socket | None = None
        if wakeable:
            self._wake_reader, self._wake_writer = _socket.socketpair()
            self._wake_reader.setblocking(False)
            self._wake_writer.setblocking(False)
            self._epoll.register(self._wake_reader.fileno(), select.EPOLLIN)

    def register(self, fd: int, events: int) -> None:
        """Watch ``fd`` for ``events`` (re-registering replaces the events)."""
        try:
            self._epoll.register(fd, events)
        except FileExistsError:
            self._epoll.modify(fd, events)

    def modify(self, fd: int, events: int) -> None:
        """Change the events watched for ``fd`` (which must be registered)."""
        self._epoll.modify(fd, events)

    def unregister(self, fd: int) -> None:
        """Stop watching ``fd`` (nothing happens if it is not watched, or already closed)."""
        try:
            self._epoll.unregister(fd)
        except (OSError, ValueError):
            pass

    def ready(self, max_events: int = MAX_EVENTS) -> list[tuple[int, int]]:
        """The watched sockets ready now, ``(fd, event mask)``, without waiting.

        With ``wakeable=True`` a :meth:`poke` shows up as :attr:`wake_fd`: pass that to
        :meth:`consume_pokes` (it is not filtered out here, to keep the hot path a bare poll).
        """
        try:
            return self._epoll.poll(0, max_events)
        except InterruptedError:
            return []

    def spin(self, seconds: float, max_events: int = MAX_EVENTS) -> list[tuple[int, int]]:
        """:meth:`ready`, again and again for up to ``seconds`` while the loop has nothing else
        to run: the first events found, or ``[]``.

        For a task that expects an answer within microseconds (a server on this host): on a
        machine whose idle cores sleep, waking the process costs more than the answer takes
        (~60 µs per wake-up here; ``bench/experiments/NOTES.md``, round six). Returns at once
        when another task is ready or a sleeper is due, so it only burns time the loop would
        have spent waiting.
        """
        deadline = perf_counter() + seconds
        poll = self._epoll.poll
        while True:
            try:
                events = poll(0, max_events)
            except InterruptedError:
                events = []
            if events or perf_counter() >= deadline or not loop_is_idle():
                return events

    @property
    def wake_fd(self) -> int:
        """The descriptor :meth:`ready` reports after a :meth:`poke` (-1 when not wakeable)."""
        return self._wake_reader.fileno() if self._wake_reader is not None else -1

    def consume_pokes(self) -> None:
        """Drop the pending pokes (call when :meth:`ready` reported :attr:`wake_fd`)."""
        reader = self._wake_reader
        if reader is not None:
            try:
                while reader.recv(4096):
                    pass
            except OSError:
                pass

    def wait(self) -> Awaitable[None]:
        """Park the current task until a watched socket may be ready (or :meth:`poke`): ``await``
        it (the wait itself, returned without a coroutine of its own around it).

        On :class:`flowno_io.EventLoop` the epoll stays registered with the loop's selector
        between waits (:class:`~flowno_io.io.flowno_compat.KeptReadable`), so a wait costs no
        ``epoll_ctl``; on flowno's own loop each wait registers and unregisters it. Cancel-safe.
        """
        return wait_kept(self._kept)

    def poke(self) -> None:
        """Wake the task parked in :meth:`wait`, from plain code (only with ``wakeable=True``)."""
        writer = self._wake_writer
        if writer is not None:
            try:
                writer.send(b"\0")
            except OSError:
                pass  # the buffer is full of wake-ups already

    def fileno(self) -> int:
        """The epoll's descriptor."""
        return self._epoll.fileno()

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return bool(self._epoll.closed)

    def close(self) -> None:
        """Close the epoll and the wake-up pair (never while a task is parked in :meth:`wait`)."""
        self._kept.release()  # first: the loop's selector must not keep a closed (reusable) fd
        self._epoll.close()
        for sock in (self._wake_reader, self._wake_writer):
            if sock is not None:
                sock.close()
