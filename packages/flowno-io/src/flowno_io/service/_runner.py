"""Running a service from the command line: options, logging, then :func:`flowno_io.run`.

* ``--host``/``--port`` (env ``<PREFIX>_HOST``/``<PREFIX>_PORT`` as fallbacks); ``--port 0`` picks a
  free port. Once the socket listens, one machine-readable line goes to stdout:
  ``listening on http://127.0.0.1:PORT``.
* ``--workers N``: ``flowno_io.run`` forks N worker processes sharing the port (``SO_REUSEPORT``),
  restarts a worker that dies, and forwards SIGTERM/SIGINT to them.
* SIGTERM or SIGINT: stop accepting, let in-flight requests finish (event streams end at once,
  chat completions run to their end) within the server's grace period, then exit 0. A second
  signal exits at once. The first one logs both: how long the service waits, and that a second
  Ctrl-C forces the exit.
* Service log lines go to stderr; access-log lines (one JSON object each) to stdout.

This module is the same in ``echo_service`` and ``stream_service``.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import HttpServer, run

__all__ = ["ServiceOptions", "add_service_arguments", "options_from", "run_service"]

logger = logging.getLogger(__name__)


@dataclass
class ServiceOptions:
    """The options every service takes (its own options live in ``extra``)."""

    host: str
    port: int
    workers: int
    log_level: str
    access_log: bool
    extra: dict[str, Any]


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
    """Add ``--host --port --workers --log-level --access-log`` to ``parser``."""
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
        help=f"worker processes sharing the port (env {env_prefix}_WORKERS; default 1)",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get(f"{env_prefix}_LOG_LEVEL") or "info",
        choices=["debug", "info", "warning", "error"],
        help="log level of the service's own messages, on stderr (default info)",
    )
    parser.add_argument(
        "--access-log",
        action=argparse.BooleanOptionalAction,
        default=_env_flag(f"{env_prefix}_ACCESS_LOG"),
        help=f"one JSON line per request on stdout (env {env_prefix}_ACCESS_LOG=1; default off)",
    )


def options_from(args: argparse.Namespace, extra: dict[str, Any]) -> ServiceOptions:
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
        extra=extra,
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


def announce_stop(server: HttpServer) -> None:
    """Log, as a stop begins, how long in-flight requests may take and how to stop at once."""
    logger.warning(
        "stopping: waiting up to %g s for in-flight requests to finish (%d connections open); "
        "press Ctrl-C again (or send a second SIGTERM) to exit at once",
        server.shutdown_grace,
        server.open_connections,
    )


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run_service(
    service: str, options: ServiceOptions, build_server: Callable[[ServiceOptions], HttpServer]
) -> int:
    """Serve until SIGTERM/SIGINT; the process exit code.

    Args:
        service: the service name (for log lines and the access logger).
        options: parsed options.
        build_server: makes the (not yet bound) server with its routes; called in each worker.
    """
    configure_logging(service, options.log_level)
    raise_fd_limit()

    def announce(port: int) -> None:
        print(f"listening on {_url(options.host, port)}", flush=True)

    def build() -> HttpServer:
        server = build_server(options)
        # Runs when close() begins (the first SIGINT/SIGTERM), as streaming responses' callbacks do.
        server._close_callbacks.add(lambda: announce_stop(server))
        return server

    try:
        code = run(
            build,
            workers=options.workers,
            host=options.host,
            port=options.port,
            on_ready=announce,
        )
    except OSError as exc:
        logger.error("cannot listen on %s:%s: %s", options.host, options.port, exc)
        return 1
    logger.info("stopped")
    return code
