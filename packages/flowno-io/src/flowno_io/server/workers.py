"""``run()``: serve an ``HttpServer`` in this process, or in N forked worker processes.

With ``workers=N > 1`` the parent process only supervises:

* it binds the address with ``SO_REUSEPORT`` *without listening* (so ``port=0`` resolves to one
  port, and the port stays reserved while workers come and go), then forks N workers;
* each worker binds its own ``SO_REUSEPORT`` socket to that port and runs its own flowno
  ``EventLoop``; the kernel spreads new connections over the workers' sockets;
* a worker that dies is restarted (after a back-off when it dies young, so a crash loop does
  not spin) in the dead one's slot: each worker knows its number ``0..N-1`` and ``N``
  (:func:`worker_slot`), so work split over the workers (a timer's phase, a shard) survives a
  restart;
* SIGTERM/SIGINT to the parent is forwarded as SIGTERM (each worker closes gracefully); a second
  one is forwarded again (workers exit at once); a third, or the ``stop_timeout`` passing, kills them.

Workers live in their own process group, so a terminal's Ctrl-C reaches only the parent (which
forwards it once), and they hold one end of a socket pair whose other end only the parent holds:
when the parent dies, even by SIGKILL, every worker sees EOF and shuts down gracefully.

flowno keeps one module-global ``epoll`` selector created at import time, which a forked child
would share with its parent and siblings (each would receive the others' events), so every worker
replaces it with a fresh one before starting its loop.
"""

from __future__ import annotations

import logging
import os
import select
import signal
import socket as _socket
import sys
import time
from collections.abc import Callable
from types import FrameType
from typing import NamedTuple

from flowno import SocketHandle, spawn

from ..io.flowno_compat import EventLoop, reset_selector_after_fork
from ..io.socket_stream import wait_readable
from .server import HttpServer

__all__ = ["DEFAULT_STOP_TIMEOUT", "WorkerSlot", "run", "worker_slot"]

logger = logging.getLogger("flowno_io.workers")

#: Seconds the parent waits, after forwarding SIGTERM, before it kills the workers still running
#: (the servers' own grace period, 10 s by default, plus margin).
DEFAULT_STOP_TIMEOUT = 30.0
#: Longest pause before restarting a worker that keeps dying young.
MAX_RESTART_DELAY = 5.0
#: A worker that lived less than this many seconds "died young" (its restart is delayed).
_YOUNG = 1.0

App = HttpServer | Callable[[], HttpServer]


class WorkerSlot(NamedTuple):
    """Which of :func:`run`'s workers this process is: ``number`` in ``0..workers-1``, of ``workers``."""

    number: int
    workers: int


_slot = WorkerSlot(0, 1)


def worker_slot() -> WorkerSlot:
    """This process's slot among :func:`run`'s workers; ``(0, 1)`` outside ``workers > 1``.

    Each forked worker gets its own number, and a worker restarted after a death takes the dead
    one's number, so the numbers in use are always ``0..workers-1``. Set before the app factory is
    called in the worker, so the factory may read it.

    Example (each worker ticks on its own phase of a 5 s period, not all at once):
        >>> from flowno_io import worker_slot
        >>> number, workers = worker_slot()
        >>> offset = number * 5.0 / workers
        >>> (number, workers, offset)
        (0, 1, 0.0)
    """
    return _slot


def run(
    app: App,
    *,
    workers: int = 1,
    host: str | None = None,
    port: int | None = None,
    on_ready: Callable[[int], object] | None = None,
    stop_timeout: float = DEFAULT_STOP_TIMEOUT,
) -> int:
    """Serve ``app`` until SIGTERM/SIGINT (or until its server is closed); the exit code.

    Args:
        app: an :class:`HttpServer`, or a function that makes one (called in each worker, so
            per-process resources are created after the fork).
        workers: processes serving the port; ``1`` serves in this process (no fork). Each
            worker knows its slot (:func:`worker_slot`).
        host: address to bind (default: the server's own, or ``127.0.0.1`` for a factory).
        port: port to bind, ``0`` for any free one (default: the server's own, or 8080).
        on_ready: called with the bound port once every worker listens.
        stop_timeout: seconds the parent lets workers shut down before it kills them.

    Returns:
        0 after a clean shutdown; 1 when a worker had to be killed.

    Raises:
        ValueError: ``workers < 1``.
        OSError: the address cannot be bound.

    Example (in a script; blocks until SIGTERM):
        ``run(lambda: HttpServer(routes=ROUTES), workers=4, port=8000)``
    """
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    if isinstance(app, HttpServer):
        host = app.host if host is None else host
        port = app.port if port is None else port
    host = "127.0.0.1" if host is None else host
    port = 8080 if port is None else port
    if workers == 1:
        server = _make_server(app, host, port, reuse_port=False)
        if on_ready is not None:
            on_ready(server.port)
        EventLoop().run_until_complete(server.serve(), join=True, wait_for_spawned_tasks=False)
        return 0
    return _Supervisor(app, host, port, workers, on_ready, stop_timeout).run()


def _make_server(app: App, host: str, port: int, *, reuse_port: bool) -> HttpServer:
    server = app if isinstance(app, HttpServer) else app()
    server.host = host
    server.port = port
    server.reuse_port = reuse_port or server.reuse_port
    server.bind()
    return server


def _reset_flowno_selector() -> None:
    """Give this (forked) process its own flowno selector instead of the parent's ``epoll``."""
    reset_selector_after_fork()


class _Supervisor:
    """The parent of the worker processes."""

    def __init__(
        self,
        app: App,
        host: str,
        port: int,
        workers: int,
        on_ready: Callable[[int], object] | None,
        stop_timeout: float,
    ) -> None:
        self.app = app
        self.host = host
        self.workers = workers
        self.on_ready = on_ready
        self.stop_timeout = stop_timeout
        self.reservation = _reserve(host, port)
        self.port: int = self.reservation.getsockname()[1]
        # Workers report "listening" on this pair; its parent end closing tells them the parent died.
        self.parent_end, self.worker_end = _socket.socketpair()
        self.parent_end.setblocking(False)
        self.signal_r, self.signal_w = _socket.socketpair()
        self.signal_r.setblocking(False)
        self.signal_w.setblocking(False)
        self.children: dict[int, tuple[float, int]] = {}  # pid -> (start time, slot number)
        self.signals: list[int] = []
        self.young_deaths = 0
        self.restart_at: list[tuple[float, int]] = []  # (when, slot number) of the dead workers
        self.ready = 0
        self.announced = False
        self.exit_code = 0

    def run(self) -> int:
        previous = {
            signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD)
        }
        previous_wakeup = signal.set_wakeup_fd(self.signal_w.fileno())
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._on_signal)
        signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # wakes select() via the wakeup fd
        try:
            for index in range(self.workers):
                self._spawn(index)
            self._supervise()
        finally:
            signal.set_wakeup_fd(previous_wakeup)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            for sock in (self.reservation, self.parent_end, self.worker_end, self.signal_r, self.signal_w):
                sock.close()
        return self.exit_code

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals.append(signum)

    def _spawn(self, index: int) -> None:
        pid = os.fork()
        if pid == 0:  # the worker
            code = 1
            try:
                code = self._worker_main(index)
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
            except BaseException:
                logger.exception("worker %d failed", os.getpid())
            finally:
                logging.shutdown()
                for stream in (sys.stdout, sys.stderr):
                    try:
                        stream.flush()
                    except (OSError, ValueError):
                        pass
                os._exit(code)
        self.children[pid] = (time.monotonic(), index)
        logger.info("worker %d started in slot %d", pid, index)

    def _worker_main(self, index: int) -> int:
        global _slot
        _slot = WorkerSlot(index, self.workers)
        os.setpgid(0, 0)
        signal.set_wakeup_fd(-1)
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGCHLD):
            signal.signal(signum, signal.SIG_DFL)
        for sock in (self.reservation, self.parent_end, self.signal_r, self.signal_w):
            sock.close()
        _reset_flowno_selector()
        server = _make_server(self.app, self.host, self.port, reuse_port=True)
        lifeline = self.worker_end
        lifeline.send(b"R")  # listening: connections queue in the backlog from now on
        EventLoop().run_until_complete(
            _serve_worker(server, lifeline), join=True, wait_for_spawned_tasks=False
        )
        return 0

    def _supervise(self) -> None:
        stopping_since: float | None = None
        forwarded = 0
        while True:
            self._reap(stopping_since is not None)
            now = time.monotonic()
            while self.signals:
                self.signals.pop(0)
                if stopping_since is None:
                    stopping_since = now
                    logger.info("shutting down %d workers", len(self.children))
                forwarded += 1
                self._signal_children(signal.SIGTERM if forwarded <= 2 else signal.SIGKILL)
            if stopping_since is not None:
                if not self.children:
                    return
                if now - stopping_since > self.stop_timeout:
                    logger.error("workers %s did not stop in time: killing them", sorted(self.children))
                    self.exit_code = 1
                    self._signal_children(signal.SIGKILL)
                    stopping_since = now - self.stop_timeout + 1.0  # reap, then re-kill after 1 s
            else:
                for due in [due for due in self.restart_at if due[0] <= now]:
                    self.restart_at.remove(due)
                    self._spawn(due[1])
            self._read_ready()
            timeout = 0.5
            if self.restart_at and stopping_since is None:
                timeout = max(0.0, min(timeout, min(self.restart_at)[0] - now))
            try:
                select.select([self.signal_r, self.parent_end], [], [], timeout)
            except InterruptedError:
                pass
            try:
                while self.signal_r.recv(4096):
                    pass
            except BlockingIOError:
                pass

    def _read_ready(self) -> None:
        try:
            while True:
                data = self.parent_end.recv(4096)
                if not data:
                    break
                self.ready += data.count(b"R")
        except BlockingIOError:
            pass
        if not self.announced and self.ready >= self.workers:
            self.announced = True
            logger.info("%d workers serving http://%s:%d", self.workers, self.host, self.port)
            if self.on_ready is not None:
                self.on_ready(self.port)

    def _reap(self, stopping: bool) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is None:
                continue
            started, index = child
            code = os.waitstatus_to_exitcode(status)
            if stopping:
                logger.info("worker %d exited (%d)", pid, code)
                continue
            lived = time.monotonic() - started
            self.young_deaths = self.young_deaths + 1 if lived < _YOUNG else 0
            delay = 0.0 if not self.young_deaths else min(MAX_RESTART_DELAY, 0.1 * 2**self.young_deaths)
            message = "worker %d (slot %d) died (%d) after %.1f s: restarting in %.1f s"
            logger.warning(message, pid, index, code, lived, delay)
            self.restart_at.append((time.monotonic() + delay, index))

    def _signal_children(self, signum: int) -> None:
        for pid in list(self.children):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass


def _reserve(host: str, port: int) -> _socket.socket:
    family, type_, proto, _, address = _socket.getaddrinfo(
        host, port, type=_socket.SOCK_STREAM, flags=_socket.AI_PASSIVE
    )[0]
    sock = _socket.socket(family, type_, proto)
    try:
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
        sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEPORT, 1)
        sock.bind(address)  # no listen(): the kernel gives it no connections
    except BaseException:
        sock.close()
        raise
    return sock


async def _serve_worker(server: HttpServer, lifeline: _socket.socket) -> None:
    await spawn(_watch_parent(server, lifeline))
    await server.serve()


async def _watch_parent(server: HttpServer, lifeline: _socket.socket) -> None:
    """Close the server gracefully when the parent process goes away (EOF on the lifeline)."""
    lifeline.setblocking(False)
    handle = SocketHandle(lifeline)
    while True:
        await wait_readable(handle)
        try:
            data = lifeline.recv(64)
        except BlockingIOError:
            continue
        except OSError:
            data = b""
        if not data:
            break
    if not server.closing:
        logger.warning("parent process gone: closing worker %d", os.getpid())
        await server.close()
