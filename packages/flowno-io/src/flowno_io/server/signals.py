"""SIGINT/SIGTERM → a graceful ``HttpServer.close()``; a second signal → exit at once.

flowno's ``run_until_complete`` installs handlers that only log (SIGTERM is then ignored). When
``HttpServer.serve()`` runs on the main thread and finds those handlers (or the defaults) in
place, it installs the ones here for as long as it serves; handlers someone else installed (an
application's own) are left alone.

A signal handler runs between bytecodes of the main thread, usually while the loop sleeps in
``epoll_wait``, and cannot wake a flowno task. So it only writes a byte to a socket pair; a task
parked on the other end calls ``server.close()`` (stop accepting, finish in-flight requests, end
event streams, force-close the rest after the grace period). A second signal raises
``SystemExit(128 + signum)`` from the handler, which unwinds the loop and ends the process.
"""

from __future__ import annotations

import logging
import signal
import socket as _socket
import threading
from types import FrameType
from typing import TYPE_CHECKING, Any

from flowno import SocketHandle, spawn

from ..io.socket_stream import wait_readable

if TYPE_CHECKING:
    from .server import HttpServer

__all__ = ["SHUTDOWN_SIGNALS", "ShutdownSignals"]

logger = logging.getLogger("flowno_io.server")

#: The signals that shut a server down.
SHUTDOWN_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_STOP = b"\0"  # written by uninstall(): the watcher task exits without closing the server


def _replaceable(handler: Any) -> bool:
    """True for the default handlers and flowno's logging ones; False for an application's own."""
    if handler in (signal.SIG_DFL, signal.default_int_handler, None):
        return True
    return str(getattr(handler, "__qualname__", "")).startswith("EventLoop._install_signal_handlers")


class ShutdownSignals:
    """SIGINT/SIGTERM handlers that close one server gracefully (see the module docstring)."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.received = 0
        self._previous: dict[int, Any] = {}
        self._reader, self._writer = _socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)

    @classmethod
    async def install(cls, server: HttpServer) -> ShutdownSignals | None:
        """Take over SIGINT/SIGTERM for ``server`` and start the task that closes it.

        Returns:
            ``None`` (installing nothing) off the main thread, or when an application installed
            its own handlers for both signals.
        """
        if threading.current_thread() is not threading.main_thread():
            return None
        signums = [signum for signum in SHUTDOWN_SIGNALS if _replaceable(signal.getsignal(signum))]
        if not signums:
            return None
        self = cls(server)
        for signum in signums:
            self._previous[signum] = signal.signal(signum, self._on_signal)
        await spawn(self._watch())
        return self

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.received += 1
        if self.received > 1:
            self._restore()
            logger.warning("second %s: exiting now", signal.Signals(signum).name)
            raise SystemExit(128 + signum)
        try:
            self._writer.send(bytes([signum]))
        except OSError:
            pass

    async def _watch(self) -> None:
        handle = SocketHandle(self._reader)
        try:
            while True:
                await wait_readable(handle)
                try:
                    data = self._reader.recv(64)
                except BlockingIOError:
                    continue
                except OSError:
                    return
                if not data or _STOP in data:
                    return
                name = signal.Signals(data[0]).name
                logger.info("%s: closing (%d connections open)", name, self.server.open_connections)
                await self.server.close()
                return
        finally:
            self._reader.close()
            self._writer.close()

    def _restore(self) -> None:
        for signum, previous in self._previous.items():
            try:
                signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
            except (ValueError, OSError):
                pass
        self._previous.clear()

    def uninstall(self) -> None:
        """Give the signals back to their previous handlers and let the watcher task end."""
        self._restore()
        try:
            self._writer.send(_STOP)
        except OSError:
            pass  # already closed by the watcher
