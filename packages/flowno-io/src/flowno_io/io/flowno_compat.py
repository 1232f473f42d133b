"""Every use of flowno's internals, in one place, checked at import time.

flowno-io runs on the stock ``flowno.EventLoop`` (never patched). Its public API (``spawn``,
``sleep``, ``Event``, ``SocketHandle``, ``EventLoop``) is not enough for an HTTP library: waiting
for a socket without flowno's blocking ``recv``, waking a task from a plain callback, interrupting a
parked task, and sleeping without the equal-deadline crash all need its commands and its
bookkeeping. Those uses live here and nowhere else; ``docs/flowno-upstream.md`` says why each is
needed, with a reproducer, and ``tests/test_flowno_limits.py`` asserts each limit still holds.

**Cancel-safe waits.** flowno's ``TaskHandle.cancel()`` throws ``TaskCancelled`` into a task but
leaves its records behind: its selector registration (the next wait on that fd raises
``KeyError: ... is already registered``, which kills the loop), its place in
``waiting_on_network``, its sleep-heap entry (which later resumes it spuriously) and its place in a
waiter set (which keeps ``run_until_complete`` from ever returning). Every wait below removes its
own records when anything is thrown into it, so cancelling a task at any flowno-io await point
leaves the loop consistent. A wake-up that reached the ready queue before the cancel was handled
is such a record too: the wait drops it, or the task would be resumed a second time.

**Descriptors kept registered.** flowno registers a socket with its selector for every wait and
unregisters it on wake-up (two ``epoll_ctl`` per wait). A :class:`KeptReadable` (what a
:class:`~flowno_io.io.poller.Poller` waits on) stays registered across waits on
:class:`EventLoop`, which wakes the tasks parked on it; on flowno's own loop it waits as any socket.

**A loop that polls once per batch.** :class:`EventLoop` replaces flowno's run loop (same
semantics, see the method) so that while tasks are ready the selector is polled once per batch of
at most ``MAX_STEPS_BETWEEN_POLLS`` task steps, not before every step.

**Sleeps that never tie.** flowno pushes ``(end_time, task)`` on a heap with no tie-breaker; two
equal deadlines make the heap compare two coroutines (``TypeError: '<' not supported between
instances of 'coroutine' and 'coroutine'``), which kills the loop. :func:`sleep` gives every
deadline it pushes a value no other pending flowno-io sleep has; :class:`EventLoop` (a subclass,
not a patch) breaks ties for every sleep, including plain ``flowno.sleep``.

Call everything here on the loop's thread only.
"""

from __future__ import annotations

import heapq
import importlib.metadata
import itertools
import math
import selectors
import threading
from collections.abc import Generator
from timeit import default_timer as _flowno_clock
from types import coroutine
from typing import Any

import flowno
from flowno import SocketHandle
from flowno.core.event_loop import event_loop as _flowno_loop
from flowno.core.event_loop.commands import (
    EventWaitCommand,
    SleepCommand,
    SocketAcceptCommand,
    SocketRecvCommand,
    SocketSendCommand,
)
from flowno.core.event_loop.event_loop import _current_task, current_task
from flowno.core.event_loop.instrumentation import (
    InstrumentationMetadata,
    ReadySocketInstrumentationMetadata,
    _instrument_stack,
    get_current_instrument,
)
from flowno.core.event_loop.selectors import sel
from flowno.core.event_loop.tasks import TaskCancelled, TaskHandle

__all__ = [
    "FLOWNO_VERSION",
    "TESTED_FLOWNO_VERSIONS",
    "EventLoop",
    "KeptReadable",
    "TaskCancelled",
    "TaskHandle",
    "cancel",
    "current_loop",
    "current_task",
    "handle_of",
    "interrupt",
    "loop_is_idle",
    "park",
    "park_command",
    "reset_selector_after_fork",
    "running_loop",
    "sleep",
    "sleep_until",
    "wait_kept",
    "wait_readable",
    "wait_writable",
    "wake",
]

#: flowno releases this module was written against and tested with (the dependency is ``<0.2``).
TESTED_FLOWNO_VERSIONS = ("0.1.19",)
FLOWNO_VERSION = importlib.metadata.version("flowno")


def _check_structure() -> None:
    """Fail at import, naming what changed, if flowno's loop no longer looks as this module assumes."""
    loop = flowno.EventLoop()
    try:
        expected = {
            "tasks": "deque",
            "sleeping": "list",
            "waiting_on_network": "list",
            "event_waiters": "defaultdict",
            "condition_waiters": "defaultdict",
            "lock_waiters": "defaultdict",
            "watching_task": "defaultdict",
            "finished": "dict",
            "exceptions": "dict",
        }
        missing = [
            f"EventLoop.{name} ({kind})"
            for name, kind in expected.items()
            if type(getattr(loop, name, None)).__name__ != kind
        ]
        if type(getattr(loop, "_exit_requested", None)).__name__ != "tuple":
            missing.append("EventLoop._exit_requested (tuple)")
        for name in ("_wakeup_reader", "_debug_max_wait_time", "_loop_thread"):
            if not hasattr(loop, name):
                missing.append(f"EventLoop.{name}")
        for name in (
            "_handle_command",
            "cancel",
            "has_living_tasks",
            "_run_event_loop_core",
            "_on_task_before_send",
            "_on_task_after_send",
            "_on_task_before_throw",
            "_on_task_after_throw",
            "_on_task_completed",
            "_on_task_error",
            "_on_task_cancelled",
        ):
            if not callable(getattr(loop, name, None)):
                missing.append(f"EventLoop.{name}()")
        if not hasattr(_flowno_loop, "_current_event_loop"):
            missing.append("flowno.core.event_loop.event_loop._current_event_loop")
        if type(_current_task).__name__ != "ContextVar":
            missing.append("flowno.core.event_loop.event_loop._current_task (ContextVar)")
        for name in ("get_map", "unregister", "register"):
            if not callable(getattr(sel, name, None)):
                missing.append(f"selectors.sel.{name}()")
        if not hasattr(SleepCommand(0.0), "end_time"):
            missing.append("SleepCommand.end_time")
        if missing:
            raise ImportError(
                f"flowno_io cannot run on flowno {FLOWNO_VERSION}: its event loop changed "
                f"({', '.join(missing)}); flowno_io is tested with flowno {', '.join(TESTED_FLOWNO_VERSIONS)}"
            )
    finally:
        loop._wakeup_reader.close()
        loop._wakeup_writer.close()


_check_structure()


def current_loop() -> Any:
    """The running flowno ``EventLoop``, or ``None`` outside one."""
    return flowno.current_event_loop()


def loop_is_idle() -> bool:
    """True when the running loop has no task ready to run and no sleeper due: what it would do
    next is wait in its selector (``False`` outside a loop)."""
    loop = flowno.current_event_loop()
    if loop is None or loop.tasks:
        return False
    sleeping = loop.sleeping
    return not (sleeping and sleeping[0][0] <= _flowno_clock())


def running_loop(what: str) -> Any:
    """The running flowno ``EventLoop``; a clear ``RuntimeError`` naming ``what`` outside one."""
    loop = flowno.current_event_loop()
    if loop is None:
        raise RuntimeError(
            f"{what} must run inside a flowno event loop: start it with "
            "flowno.EventLoop().run_until_complete(main()) (asyncio and other loops cannot run it)"
        )
    return loop


def handle_of(fileobj: Any) -> SocketHandle:
    """A flowno handle for anything with a ``fileno()`` (a socket, or an ``epoll`` object)."""
    return SocketHandle(fileobj)


# -- cancel-safe waits --------------------------------------------------------------------------


def _forget_network_wait(loop: Any, task: Any) -> None:
    """Remove ``task``'s selector registration and its ``waiting_on_network`` entry, if any."""
    if loop is None:
        return
    waiting = loop.waiting_on_network
    if any(entry is task for entry in waiting):
        waiting[:] = [entry for entry in waiting if entry is not task]
        for key in list(sel.get_map().values()):
            if getattr(key.data, "_task", None) is task:
                sel.unregister(key.fileobj)


def _forget_wakeups(loop: Any, task: Any, thrown: BaseException) -> None:
    """Drop ``task``'s entries from the ready queue: it is being resumed with ``thrown`` now.

    A task parked in one wait is resumed once; any other entry is a wake-up of the wait it is
    leaving (the socket became ready, or an event was set, after ``TaskHandle.cancel()`` queued
    the exception but before it was thrown). Left there, it would resume the task inside its next
    wait, or after it ended (``RuntimeError: cannot reuse already awaited coroutine``).
    ``GeneratorExit`` (a coroutine closed by the garbage collector, possibly while another task
    runs) is left alone.
    """
    if loop is None or isinstance(thrown, GeneratorExit):
        return
    ready = loop.tasks
    if any(entry[0] is task for entry in ready):
        kept = [entry for entry in ready if entry[0] is not task]
        ready.clear()
        ready.extend(kept)


@coroutine
def _wait_socket(command: Any) -> Generator[Any, None, None]:
    try:
        yield command
    except BaseException as exc:
        loop, task = flowno.current_event_loop(), current_task()
        _forget_network_wait(loop, task)
        _forget_wakeups(loop, task, exc)
        raise


def wait_readable(handle: SocketHandle) -> Any:
    """Park the current task until ``handle`` is readable (or has an error or EOF); cancel-safe."""
    return _wait_socket(SocketRecvCommand(handle))


def wait_writable(handle: SocketHandle) -> Any:
    """Park the current task until ``handle`` is writable (or has an error); cancel-safe."""
    return _wait_socket(SocketSendCommand(handle))


# -- descriptors kept registered across waits ------------------------------------------------------

#: Reports of a kept descriptor's readiness with no task parked on it (nor one woken and yet to
#: run) tolerated before it leaves the selector: its level-triggered registration would otherwise
#: end every later poll at once while nobody waits for it. One lets a task that is about to wait
#: again (a reactor's next leader, a task between two waits) keep it.
KEPT_MISSES = 1

#: Bumped by :func:`reset_selector_after_fork`: registrations of an older epoch are gone.
_selector_epoch = 0


class KeptReadable:
    """A descriptor that stays in the loop's selector, for reading, across the waits on it.

    flowno registers a descriptor with its selector for every wait and unregisters it on wake-up
    (``docs/flowno-upstream.md`` §3). That is two ``epoll_ctl`` per wait, and for an ``epoll``
    descriptor (a :class:`~flowno_io.io.poller.Poller`) each ``EPOLL_CTL_ADD`` makes the kernel
    check every descriptor inside it for loops: ~0.5 ms of CPU per wait for a poller holding
    10,000 sockets (``bench/experiments/poller_wait_cost.py``). :func:`wait_kept` on
    :class:`EventLoop` registers it (level-triggered) at the first wait and leaves it there: when
    it is ready the loop wakes the tasks parked on it (as ``wake`` does for a flag). It leaves the
    selector when it is reported ready while nobody waits for it (``KEPT_MISSES``), when
    :meth:`release` is called (before its descriptor is closed), or when the loop's run ends. On
    another loop (flowno's own), :func:`wait_kept` waits as :func:`wait_readable` does,
    registering and unregistering per wait.

    The object is also what the selector's entry carries as its ``data``: flowno's loop skips an
    entry whose ``_command`` is ``None`` (its own wake-up socket's), and a loop treats any object
    with a ``_set`` as an event to park on (here never set: a wait always parks).
    """

    __slots__ = ("_command", "_set", "_task", "epoch", "fileobj", "handle", "loop", "misses", "park", "woken")

    def __init__(self, fileobj: Any) -> None:
        """Args:
        fileobj: what to watch (anything with ``fileno()``; the selector holds it while
            registered, so its descriptor cannot be closed and reused under the entry).
        """
        self.fileobj = fileobj
        self.handle = SocketHandle(fileobj)  # (for the per-wait path on other loops)
        self._command = None
        self._task = None
        self._set = False
        self.park = EventWaitCommand(event=self)
        #: The loop whose selector holds the registration (``None``: not registered).
        self.loop: Any = None
        self.epoch = -1
        #: True from the wake-up of the parked tasks until one of them runs again.
        self.woken = False
        self.misses = 0

    def release(self) -> None:
        """Leave the selector (call before closing the descriptor); nothing if not registered."""
        loop = self.loop
        if loop is None:
            return
        self.loop = None
        loop._kept.discard(self)
        if self.epoch == _selector_epoch:
            try:
                key = sel.get_map()[self.fileobj]
            except (KeyError, ValueError):  # (not there, or closed and not there)
                return
            if key.data is self:
                sel.unregister(self.fileobj)


@coroutine
def wait_kept(kept: KeptReadable) -> Generator[Any, None, None]:
    """Park the current task until ``kept`` may be readable; cancel-safe.

    On :class:`EventLoop` the first wait registers ``kept`` with the selector and later waits cost
    no system call; on another loop, the same as :func:`wait_readable` on ``kept.handle``.
    Wake-ups may be spurious (a readiness seen just as the task stopped waiting).
    """
    loop = _flowno_loop._current_event_loop
    if not isinstance(loop, EventLoop):
        kept.release()  # (registered by a flowno_io loop this one runs inside: flowno would clash)
        yield from _wait_socket(SocketRecvCommand(kept.handle))
        return
    if kept.loop is not loop or kept.epoch != _selector_epoch:
        loop._keep(kept)
    kept.misses = 0
    try:
        yield kept.park  # (a park on ``kept``; the loop wakes it: ``EventLoop._kept_ready``)
    except BaseException as exc:
        _forget_event_wait(kept, exc)
        raise
    finally:
        kept.woken = False


def park_command(flag: Any) -> Any:
    """The loop command of :func:`park` on ``flag``, to make once and pass to every park on it."""
    return EventWaitCommand(event=flag)


@coroutine
def park(flag: Any, command: Any = None) -> Generator[Any, None, None]:
    """Park the current task until :func:`wake` is called on ``flag`` (an object with ``_set``).

    The loop treats any object with a ``_set`` attribute as an event: it parks the task in
    ``loop.event_waiters[flag]`` unless the flag is already set. Cancel-safe. ``command``:
    ``park_command(flag)``, kept by a caller that parks on the same flag again and again (the
    loop only reads it), else one is made.
    """
    try:
        yield EventWaitCommand(event=flag) if command is None else command
    except BaseException as exc:
        _forget_event_wait(flag, exc)
        raise


def _forget_event_wait(flag: Any, thrown: BaseException) -> None:
    """Remove the current task's place among ``flag``'s waiters, and its other wake-ups."""
    loop, task = flowno.current_event_loop(), current_task()
    if loop is not None:
        waiters = loop.event_waiters.get(flag)
        if waiters is not None:
            waiters.discard(task)
            if not waiters:
                del loop.event_waiters[flag]
    _forget_wakeups(loop, task, thrown)


def wake(flag: Any) -> None:
    """Make every task parked on ``flag`` runnable, without awaiting (what ``Event.set`` does).

    flowno's own ``Condition.notify_all_nowait`` edits the waiter table the same way. The entry is
    removed, not left empty, so a reusable flag leaves nothing behind in the loop.
    """
    loop = flowno.current_event_loop()
    if loop is None:
        return
    waiters = loop.event_waiters.pop(flag, None)
    if waiters:
        tasks = loop.tasks
        for task in waiters:
            tasks.append((task, None, None))


# -- sleeping -------------------------------------------------------------------------------------

#: Deadlines of flowno-io sleeps now on the loop's sleep heap (flowno's clock, seconds).
_pending_deadlines: set[float] = set()


@coroutine
def sleep_until(end_time: float) -> Generator[Any, None, None]:
    """Sleep until ``end_time`` on flowno's clock (``timeit.default_timer``); cancel-safe.

    A deadline another flowno-io sleep already has is moved to the next representable float (a
    fraction of a nanosecond later), so two of these sleeps never tie on flowno's heap. A deadline
    already past only yields to the other ready tasks (flowno queues the task again at once).
    """
    pending = _pending_deadlines
    on_heap = end_time > _flowno_clock()
    if on_heap:
        while end_time in pending:
            end_time = math.nextafter(end_time, math.inf)
        pending.add(end_time)
    try:
        yield SleepCommand(end_time)
    except BaseException as exc:
        loop = flowno.current_event_loop()
        task = current_task()
        if loop is not None and any(entry[1] is task for entry in loop.sleeping):
            loop.sleeping[:] = [entry for entry in loop.sleeping if entry[1] is not task]
            heapq.heapify(loop.sleeping)
        _forget_wakeups(loop, task, exc)  # (a past deadline queued the task again: that entry)
        raise
    finally:
        if on_heap:
            pending.discard(end_time)


async def sleep(seconds: float) -> None:
    """Sleep ``seconds`` without the equal-deadline crash of ``flowno.sleep``; cancel-safe.

    ``sleep(0)`` yields to the other ready tasks. Use it instead of ``flowno.sleep`` in handlers
    that pace output, delay, or poll: see the module docstring for the crash it avoids.

    Example:
        >>> from flowno_io import sleep
        >>> from flowno import EventLoop
        >>> async def main():
        ...     await sleep(0.01)
        ...     return "rested"
        >>> EventLoop().run_until_complete(main(), join=True)
        'rested'
    """
    await sleep_until(_flowno_clock() + seconds)


#: Task steps the loop runs at most between two looks at the sockets and the sleepers while tasks
#: are ready (:class:`EventLoop`). flowno looks before every step; asyncio once per generation of
#: ready callbacks, however many. 32 keeps a look's cost (an ``epoll_wait`` and its list, ~3,000
#: instructions) under 100 per step, and a socket that became ready waits for 32 steps at most.
MAX_STEPS_BETWEEN_POLLS = 32

#: The socket commands whose ready-hook is a no-op without an instrument (any other is an error).
_SOCKET_COMMANDS = frozenset((SocketAcceptCommand, SocketRecvCommand, SocketSendCommand))


class _Deadline(float):
    """A sleep-heap time that never compares equal to another (ties broken by arrival order)."""

    __slots__ = ("seq",)
    seq: int

    def __new__(cls, value: float, seq: int) -> _Deadline:
        self = super().__new__(cls, value)
        self.seq = seq
        return self

    def __eq__(self, other: object) -> bool:
        return self is other

    def __hash__(self) -> int:
        return id(self)

    def __lt__(self, other: object) -> bool:
        if isinstance(other, _Deadline):
            a, b = float(self), float(other)
            return a < b or (a == b and self.seq < other.seq)
        return float(self) < other  # type: ignore[operator]


class EventLoop(flowno.EventLoop):  # type: ignore[misc]
    """flowno's ``EventLoop`` whose sleep heap never compares two tasks, and that looks at its
    sockets once per batch of task steps instead of before every step.

    A subclass, not a patch: it handles ``SleepCommand`` itself, pushing a time that breaks ties by
    arrival order; handles the commands of the hot waits (``EventWaitCommand``: every :func:`park`;
    ``SocketRecvCommand``: every :func:`wait_readable`) as flowno does, but first; and leaves every
    other command to flowno. Its run loop is flowno's with one change: while tasks are ready it
    polls the selector (and wakes due sleepers) after each batch of at most
    ``MAX_STEPS_BETWEEN_POLLS`` steps, not before each step. It wakes the tasks parked on a
    :class:`KeptReadable` (a descriptor it keeps in the selector across waits: every ``Poller``),
    and when its run ends it takes those and its own wake-up socket out of flowno's process-wide
    selector (flowno leaves the latter there: ``docs/flowno-upstream.md`` §14), so it can run
    again. Use it where code you do not control calls ``flowno.sleep`` at high rates;
    :func:`flowno_io.run` uses it.

    Example:
        >>> from flowno_io import EventLoop
        >>> from flowno import sleep as flowno_sleep, spawn
        >>> async def pacer():
        ...     for _ in range(100):
        ...         await flowno_sleep(0.0001)
        >>> async def main():
        ...     tasks = [await spawn(pacer()) for _ in range(20)]
        ...     for task in tasks:
        ...         await task.join()
        ...     return "no crash"
        >>> EventLoop().run_until_complete(main(), join=True)
        'no crash'
    """

    _sleep_seq = itertools.count()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: The :class:`KeptReadable` descriptors this loop registered with the selector.
        self._kept: set[KeptReadable] = set()

    def _keep(self, kept: KeptReadable) -> None:
        """Register ``kept`` with the selector for this loop (moving it from another loop's)."""
        kept.release()
        sel.register(kept.fileobj, selectors.EVENT_READ, kept)
        kept.loop = self
        kept.epoch = _selector_epoch
        kept.woken = False
        self._kept.add(kept)

    def _kept_ready(self, kept: KeptReadable) -> None:
        """``kept`` is readable: wake its waiters, or drop it if nobody waits (``KEPT_MISSES``)."""
        if kept.loop is not self:
            return  # another loop's, seen through the process-wide selector (§4): its own
        waiters = self.event_waiters.pop(kept, None)
        if waiters:
            kept.woken = True
            kept.misses = 0
            tasks = self.tasks
            for task in waiters:
                tasks.append((task, None, None))
        elif not kept.woken:
            kept.misses += 1
            if kept.misses > KEPT_MISSES:
                kept.release()

    def _handle_command(self, current_task_packet: Any, command: Any) -> bool:
        # The commands of every wait on the hot paths are handled here as flowno handles them, but
        # by exact type: flowno's chain tests its ABC-based command classes with ``isinstance`` one
        # after the other (seven failing tests before an event wait, five before a socket wait).
        kind = type(command)
        task = current_task_packet[0]
        if kind is EventWaitCommand:
            if command.event._set:
                self.tasks.append((task, None, None))
            else:
                self.event_waiters[command.event].add(task)
            return True
        if kind is SleepCommand:
            if command.end_time > _flowno_clock():
                heapq.heappush(self.sleeping, (_Deadline(command.end_time, next(self._sleep_seq)), task))
            else:
                self.tasks.append((task, None, None))  # a sleep already due only yields
            return True
        if kind is SocketRecvCommand:
            metadata = InstrumentationMetadata(_task=task, _command=command, socket_handle=command.handle)
            get_current_instrument().on_socket_recv_start(metadata)
            self.waiting_on_network.append(task)
            sel.register(command.handle.socket, selectors.EVENT_READ, metadata)
            return True
        return bool(super()._handle_command(current_task_packet, command))

    # flowno calls these two hooks around every step of every task; its own build a metadata object
    # and call the current instrument even when none is installed (~9k instructions per request
    # of the load generator). They are the hooks it documents for subclasses; the instruments are
    # still told when one is installed (``with instrument:``).

    def _on_task_before_send(self, task: Any, value: Any) -> None:
        if _instrument_stack.get():
            super()._on_task_before_send(task, value)

    def _on_task_after_send(self, task: Any, value: Any, command: Any) -> None:
        if _instrument_stack.get():
            super()._on_task_after_send(task, value, command)

    # -- the loop itself -------------------------------------------------------------------------
    #
    # flowno's ``_run_event_loop_core``, with the same semantics (the order of the ready queue,
    # sleeps, joins, cancellations, task errors, ``ExitCommand``, the cross-thread wake-up, the
    # instrument hooks) but with one look at the sockets and the sleepers per batch of task steps
    # instead of one before every step. flowno calls ``sel.select(0)`` (an ``epoll_wait`` plus a
    # list of keys) on every turn while tasks are ready; here a batch is the tasks ready at the
    # last look, at most ``MAX_STEPS_BETWEEN_POLLS`` of them (asyncio's loop runs the callbacks
    # ready at its last poll, with no cap), so a socket that becomes ready waits for at most that
    # many task steps, and a task that yields forever still lets I/O in after every step when it
    # runs alone (``tests/test_event_loop_fairness.py``).

    def _run_event_loop_core(
        self,
        root_task: Any,
        join: bool = False,
        wait_for_spawned_tasks: bool = True,
        _debug_max_wait_time: float | None = None,
    ) -> Any:
        # flowno's ``current_event_loop()`` reads this module global; its loop sets it the same way.
        _flowno_loop._current_event_loop = self
        wakeup_metadata = InstrumentationMetadata(_task=None, _command=None, socket_handle=None)
        try:
            self._debug_max_wait_time = _debug_max_wait_time
            self._loop_thread = threading.current_thread()
            self._exit_requested = (False, None, None)
            tasks = self.tasks
            tasks.append((root_task, None, None))
            sel.register(self._wakeup_reader, selectors.EVENT_READ, wakeup_metadata)
            cls = type(self)
            # A subclass overriding the send hooks gets them called on every step, as on flowno.
            send_hooks = (
                cls._on_task_before_send is not EventLoop._on_task_before_send
                or cls._on_task_after_send is not EventLoop._on_task_after_send
            )
            handle_command = self._handle_command
            set_current, reset_current = _current_task.set, _current_task.reset
            instruments = _instrument_stack.get
            watching = self.watching_task
            budget = 0  # task steps left before the next look at the sockets and the sleepers
            while True:
                if not tasks and not self.has_living_tasks():
                    break
                exit_requested, exit_value, exit_exception = self._exit_requested
                if exit_requested:
                    if exit_exception is not None:
                        raise exit_exception
                    return exit_value if join else None
                if budget <= 0 or not tasks:
                    self._poll_ready()
                    budget = min(len(tasks), MAX_STEPS_BETWEEN_POLLS)
                    if not budget:
                        continue
                budget -= 1
                packet = tasks.popleft()
                task, value, thrown = packet
                token = set_current(task)
                try:
                    if thrown is not None:
                        self._on_task_before_throw(task, thrown)
                        command = task.throw(thrown)
                        self._on_task_after_throw(task, thrown, command)
                    elif send_hooks or instruments():
                        self._on_task_before_send(task, value)
                        command = task.send(value)
                        self._on_task_after_send(task, value, command)
                    else:
                        command = task.send(value)
                except StopIteration as stop:
                    returned = stop.value
                    self.finished[task] = returned
                    self._on_task_completed(task, returned)
                    for watcher in watching.pop(task, ()):
                        tasks.append((watcher, returned, None))
                    if task is root_task and not wait_for_spawned_tasks:
                        return returned if join else None
                except Exception as error:
                    if isinstance(error, TaskCancelled):
                        self.cancelled.add(task)
                        self.exceptions[task] = error
                        self._on_task_cancelled(task, error)
                    else:
                        _flowno_loop.logger.exception(f"Task {task} raised an exception: {error}")
                        self.exceptions[task] = error
                        self._on_task_error(task, error)
                    for watcher in watching.pop(task, ()):
                        tasks.append((watcher, None, error))
                    if task is root_task and not wait_for_spawned_tasks:
                        if join:
                            raise
                        return None
                else:
                    handle_command(packet, command)
                finally:
                    reset_current(token)
            if join and root_task in self.finished:
                return self.finished[root_task]
            if join and root_task in self.exceptions:
                raise self.exceptions[root_task]
            if join:
                raise RuntimeError("Event loop exited without completing the root task.")
            return None
        finally:
            # Leave nothing in flowno's process-wide selector: another loop may run next, and one
            # that polls a registration nobody handles spins (``docs/flowno-upstream.md`` §14).
            for kept in list(self._kept):
                kept.release()
            try:
                key = sel.get_map()[self._wakeup_reader]
            except (KeyError, ValueError):
                pass
            else:
                if key.data is wakeup_metadata:
                    sel.unregister(self._wakeup_reader)
            _flowno_loop._current_event_loop = None

    def _poll_ready(self) -> None:
        """Queue the tasks whose sockets are ready and whose sleeps are over (flowno's rules).

        Waits only when no task is ready: until the first sleeper is due, or (with none)
        indefinitely (at most ``_debug_max_wait_time``, if set).
        """
        sleeping = self.sleeping
        if self.tasks:
            timeout: float | None = 0
        elif sleeping:
            timeout = sleeping[0][0] - _flowno_clock()
            if self._debug_max_wait_time is not None and timeout > self._debug_max_wait_time:
                _flowno_loop.logger.error(
                    f"Sleeping task timeout {timeout} exceeds max wait time {self._debug_max_wait_time}."
                )
                timeout = self._debug_max_wait_time
        else:
            timeout = self._debug_max_wait_time
        ready = sel.select(timeout)
        if ready:
            self._queue_network_ready(ready)
        if sleeping:
            now = _flowno_clock()
            tasks = self.tasks
            while sleeping and sleeping[0][0] <= now:
                tasks.append((heapq.heappop(sleeping)[1], None, None))

    def _queue_network_ready(self, ready: list[Any]) -> None:
        """Queue the task of each ready socket and forget its wait, as flowno's loop does."""
        wakeup_reader = self._wakeup_reader
        instrumented = bool(_instrument_stack.get())
        for key, _mask in ready:
            if key.fileobj == wakeup_reader:
                try:
                    wakeup_reader.recv(1024)  # (a task queued from another thread)
                except OSError:
                    pass
                continue
            data = key.data
            command = data._command
            if command is None:
                if type(data) is KeptReadable:
                    self._kept_ready(data)
                continue
            if instrumented or type(command) not in _SOCKET_COMMANDS:
                instrument = get_current_instrument()
                if isinstance(command, SocketAcceptCommand):
                    hook = instrument.on_socket_accept_ready
                elif isinstance(command, SocketRecvCommand):
                    hook = instrument.on_socket_recv_ready
                elif isinstance(command, SocketSendCommand):
                    hook = instrument.on_socket_send_ready
                else:
                    raise ValueError(f"Unknown selector command data type: {type(command)}")
                hook(ReadySocketInstrumentationMetadata.from_instrumentation_metadata(data))
            self.tasks.append((data._task, None, None))
            sel.unregister(key.fileobj)
            self.waiting_on_network.remove(data._task)


def reset_selector_after_fork() -> None:
    """Give a forked process its own flowno selector instead of the parent's ``epoll``.

    flowno keeps one module-global selector; after ``fork()`` parent and child would share the
    kernel object, each seeing the other's registrations (``docs/flowno-upstream.md`` §10).
    """
    global _selector_epoch
    sel.close()  # closes only this process's descriptor of the shared epoll
    sel.__init__()  # a fresh epoll, same object (flowno's modules hold it)
    _selector_epoch += 1  # (the kept registrations went with the old one)


# -- interrupting ---------------------------------------------------------------------------------


def interrupt(task: Any, exception: BaseException) -> bool:
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
        >>> from flowno import EventLoop, spawn
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
    loop = flowno.current_event_loop()
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
    _forget_network_wait(loop, task)
    for table in (loop.event_waiters, loop.condition_waiters, loop.lock_waiters, loop.watching_task):
        for key, waiters in list(table.items()):
            if task in waiters:
                waiters.remove(task)
            if not waiters:
                del table[key]  # also drops the empty entries flowno leaves behind
    loop.tasks.append((task, None, exception))
    return True


def cancel(task: TaskHandle[Any] | Any) -> bool:
    """Cancel a flowno task safely: :func:`interrupt` with flowno's ``TaskCancelled``.

    Equivalent to ``TaskHandle.cancel()`` but leaves no record behind even when the task is parked
    on something other than a flowno-io wait (a plain ``flowno.sleep``, a ``flowno.Event``).
    Returns False when the task has already finished (or is the running task).
    """
    raw = task.raw_task if isinstance(task, TaskHandle) else task
    loop = flowno.current_event_loop()
    return interrupt(raw, TaskCancelled(TaskHandle(loop, raw)))
