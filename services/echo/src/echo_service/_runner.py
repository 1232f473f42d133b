"""Running a service from the command line: options, logging, signals, worker processes.

* ``--host``/``--port`` (env ``<PREFIX>_HOST``/``<PREFIX>_PORT`` as fallbacks); ``--port 0`` picks a
  free port. Once the socket listens, one machine-readable line goes to stdout:
  ``listening on http://127.0.0.1:PORT``.
* SIGTERM or SIGINT: stop accepting, let in-flight requests finish (streams end at their next
  event) for at most ``--graceful-timeout`` seconds, then exit 0. The same signal arriving again
  within half a second (one Ctrl-C seen by a process and forwarded by its parent) is ignored;
  a later one exits at once.
* ``--workers N`` (N > 1): this process binds the socket and supervises N worker processes that
  share it (each a fresh interpreter running one event loop, as flowno keeps one selector per
  process). Signals are forwarded; the supervisor exits when every worker has. A worker whose
  supervisor dies gets SIGTERM (Linux ``PR_SET_PDEATHSIG``).

This module is the same in ``echo_service`` and ``stream_service``.
"""

from __future__ import annotations

import argparse
import ctypes
import logging
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from flowno import EventLoop, SocketHandle, spawn

from flowno_io import HttpServer

__all__ = ["DEFAULT_GRACEFUL_TIMEOUT", "ServiceOptions", "add_service_arguments", "run_service"]

logger = logging.getLogger(__name__)

#: Seconds a shutdown waits for in-flight requests and streams before the process exits anyway.
DEFAULT_GRACEFUL_TIMEOUT = 10.0
#: A repeat of the shutdown signal within this many seconds is the same Ctrl-C, not a second one.
_REPEAT_SIGNAL_WINDOW = 0.5
_PR_SET_PDEATHSIG = 1


@dataclass
class ServiceOptions:
    """The options every service takes (its own options live in ``extra``)."""

    host: str
    port: int
    workers: int
    log_level: str
    access_log: bool
    graceful_timeout: float
    listen_fd: int | None
    extra: dict[str, Any]
    #: The command-line arguments, repeated to worker processes.
    argv: list[str]


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise SystemExit(f"{name} must be an integer, not {value!r}") from None


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes", "on")


def add_service_arguments(parser: argparse.ArgumentParser, env_prefix: str, default_port: int) -> None:
    """Add ``--host --port --workers --log-level --access-log --graceful-timeout`` to ``parser``."""
    parser.add_argument(
        "--host",
        default=os.environ.get(f"{env_prefix}_HOST") or "127.0.0.1",
        help=f"address to bind (env {env_prefix}_HOST; default 127.0.0.1)",
    )
    parser.add_argument(
        "--port",
        type=int,
        default=_env_int(f"{env_prefix}_PORT", default_port),
        help=f"port to bind, 0 for any free one (env {env_prefix}_PORT; default {default_port})",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=_env_int(f"{env_prefix}_WORKERS", 1),
        help=f"worker processes sharing the socket (env {env_prefix}_WORKERS; default 1)",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get(f"{env_prefix}_LOG_LEVEL") or "info",
        choices=["debug", "info", "warning", "error"],
        help="log level of the service's own messages (default info)",
    )
    parser.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=_env_flag(f"{env_prefix}_ACCESS_LOG"),
        help=f"one JSON line per request on stdout (env {env_prefix}_ACCESS_LOG=1; default off)",
    )
    parser.add_argument(
        "--graceful-timeout",
        type=float,
        default=DEFAULT_GRACEFUL_TIMEOUT,
        help=f"seconds to let in-flight requests finish on SIGTERM (default {DEFAULT_GRACEFUL_TIMEOUT:g})",
    )
    parser.add_argument("--listen-fd", type=int, default=None, help=argparse.SUPPRESS)


def options_from(args: argparse.Namespace, extra: dict[str, Any], argv: list[str]) -> ServiceOptions:
    """The common options of a parsed command line, plus the service's own.

    Raises:
        SystemExit: an option is out of range.
    """
    if not 0 <= args.port <= 65535:
        raise SystemExit(f"--port must be within 0-65535, not {args.port}")
    if args.workers < 1:
        raise SystemExit(f"--workers must be at least 1, not {args.workers}")
    return ServiceOptions(
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=args.access_log,
        graceful_timeout=args.graceful_timeout,
        listen_fd=args.listen_fd,
        extra=extra,
        argv=argv,
    )


def configure_logging(service: str, level: str) -> None:
    """Service messages to stderr at ``level``; access-log lines (bare JSON) to stdout."""
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s [{service} pid=%(process)d] %(name)s: %(message)s",
    )
    access = logging.getLogger(f"{service}.access")
    access.setLevel(logging.INFO)
    access.propagate = False
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access.addHandler(handler)


def raise_fd_limit() -> None:
    """Raise the soft open-files limit to the hard one, so one process holds thousands of streams."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _announce(host: str, port: int) -> None:
    print(f"listening on {_url(host, port)}", flush=True)


def run_service(
    service: str,
    module: str,
    options: ServiceOptions,
    build_server: Callable[[ServiceOptions], HttpServer],
) -> int:
    """Run a service until SIGTERM/SIGINT; the process exit code.

    Args:
        service: the service name (for log lines).
        module: the module to run as ``python -m module`` for worker processes.
        options: parsed options.
        build_server: makes the (not yet bound) server with its routes.
    """
    configure_logging(service, options.log_level)
    raise_fd_limit()
    if options.workers > 1 and options.listen_fd is None:
        return _supervise(module, options)
    server = build_server(options)
    if options.listen_fd is not None:
        server.use_socket(socket.socket(fileno=options.listen_fd))
    else:
        try:
            server.bind()
        except OSError as exc:
            logger.error("cannot listen on %s:%s: %s", options.host, options.port, exc)
            return 1
        _announce(options.host, server.port)
    shutdown = _ShutdownSignal()
    loop = EventLoop()
    try:
        loop.run_until_complete(
            _serve_until_signalled(server, shutdown, options.graceful_timeout),
            join=True,
            wait_for_spawned_tasks=False,
        )
    finally:
        shutdown.close()
    logger.info("stopped")
    return 0


class _ShutdownSignal:
    """SIGTERM/SIGINT as bytes on a socket pair that a task on the event loop can wait on."""

    def __init__(self) -> None:
        self.reader, self.writer = socket.socketpair()
        self.reader.setblocking(False)
        self.writer.setblocking(False)
        self.first_at: float | None = None

    def install(self) -> None:
        """Take over SIGTERM and SIGINT (flowno's loop installs its own when it starts)."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        now = time.monotonic()
        if self.first_at is None:
            self.first_at = now
            try:
                self.writer.send(b"\0")
            except OSError:
                pass
        elif now - self.first_at > _REPEAT_SIGNAL_WINDOW:
            logger.warning("second %s: exiting now", signal.Signals(signum).name)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)

    def close(self) -> None:
        self.reader.close()
        self.writer.close()


async def _serve_until_signalled(server: HttpServer, shutdown: _ShutdownSignal, grace: float) -> None:
    shutdown.install()
    await spawn(server.serve())
    await SocketHandle(shutdown.reader).recv(16)
    logger.info("shutting down: %d connections open", server.open_connections)
    await server.close(grace)  # returns once every connection is done (forced after ``grace``)


# -- worker processes ---------------------------------------------------------------------------


def _bind_listener(host: str, port: int) -> socket.socket:
    family, type_, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, type_, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(1024)
    sock.set_inheritable(True)
    return sock


def _die_with_parent() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _supervise(module: str, options: ServiceOptions) -> int:
    try:
        listener = _bind_listener(options.host, options.port)
    except OSError as exc:
        logger.error("cannot listen on %s:%s: %s", options.host, options.port, exc)
        return 1
    port = listener.getsockname()[1]
    fd = str(listener.fileno())
    workers: list[subprocess.Popen[bytes]] = []
    stopping = False

    def forward(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.poll() is None:
                try:
                    worker.send_signal(signum)
                except OSError:
                    pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    for _ in range(options.workers):
        command = [sys.executable, "-m", module, *options.argv, "--workers", "1", "--listen-fd", fd]
        workers.append(
            subprocess.Popen(
                command, pass_fds=(listener.fileno(),), start_new_session=True, preexec_fn=_die_with_parent
            )
        )
    listener.close()  # the workers hold it now
    logger.info("%d workers: pids %s", len(workers), " ".join(str(w.pid) for w in workers))
    _announce(options.host, port)
    code = 0
    while any(worker.poll() is None for worker in workers):
        for worker in workers:
            status = worker.poll()
            if status is not None and status != 0 and not stopping:
                logger.error("worker %d exited with %d: stopping the others", worker.pid, status)
                code = 1
                forward(signal.SIGTERM, None)
        time.sleep(0.1)
    return code
