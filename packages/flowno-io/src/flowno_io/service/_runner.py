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
* Service log lines go to stderr; access-log lines (one JSON object each) to stdout, including
  the errors the server answers before any handler (400/413/431/505).
* ``--cors-origin ORIGIN`` (repeatable, ``*`` for any): CORS for browser pages on those origins.
* ``--certfile CERT --keyfile KEY``: serve HTTPS (the listening line then says ``https://``).
* HTTP/2 besides HTTP/1.1 (on by default; ``--no-http2`` turns it off): negotiated by ALPN over
  HTTPS, and by prior knowledge (the HTTP/2 preface) on cleartext.
* Observability, each on by default: ``--metrics`` (Prometheus ``GET /metrics``; with
  ``--workers N`` over 1 in prometheus_client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``
  or a new temporary directory), ``--tracing`` (W3C ``traceparent`` read or started, carried by
  the handlers' ``HttpClient`` calls, ``trace_id`` in access-log lines), ``--server-timing``
  (``Server-Timing: app;dur=<ms>`` on every response). ``--no-metrics`` etc. turn one off.

This module is the same in ``echo_service`` and ``stream_service``.
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import HttpServer, run
from ..io.tls_stream import server_context
from ..server.access_log import AccessLogMiddleware
from ..server.cors import CORSMiddleware
from ..server.metrics import enable_metrics, use_multiprocess_dir
from ..server.tracing import ObservabilityMiddleware

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
    #: Origins whose pages may call the service (``--cors-origin``); empty: no CORS.
    cors_origins: list[str] = field(default_factory=list)
    #: PEM certificate (chain) and key files: serve HTTPS (``--certfile``/``--keyfile``).
    certfile: str | None = None
    keyfile: str | None = None
    #: Prometheus ``GET /metrics`` (``--metrics``), W3C trace context (``--tracing``),
    #: ``Server-Timing`` (``--server-timing``).
    metrics: bool = True
    tracing: bool = True
    server_timing: bool = True
    #: HTTP/2 besides HTTP/1.1 (``--http2``, default on; ``--no-http2``): ALPN ``h2`` over TLS,
    #: prior knowledge on cleartext.
    http2: bool = True


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
    parser.add_argument(
        "--cors-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="let pages on ORIGIN (scheme://host[:port], or '*') call the service; repeatable",
    )
    for name, what in (
        ("metrics", "Prometheus metrics at GET /metrics"),
        ("tracing", "W3C traceparent read (or started) and carried by the handlers' client calls"),
        ("server-timing", "a Server-Timing: app;dur=<ms> header on every response"),
        ("http2", "HTTP/2: by ALPN with --certfile, by prior knowledge on cleartext"),
    ):
        parser.add_argument(
            f"--{name}", action=argparse.BooleanOptionalAction, default=True, help=f"{what} (default on)"
        )
    parser.add_argument("--certfile", help="PEM certificate (chain): serve HTTPS")
    parser.add_argument("--keyfile", help="PEM private key of --certfile (default: in --certfile)")


def options_from(args: argparse.Namespace, extra: dict[str, Any]) -> ServiceOptions:
    """The common options of a parsed command line, plus the service's own.

    Raises:
        SystemExit: an option is out of range.
    """
    if not 0 <= args.port <= 65535:
        raise SystemExit(f"--port must be within 0-65535, not {args.port}")
    if args.workers < 1:
        raise SystemExit(f"--workers must be at least 1, not {args.workers}")
    try:
        CORSMiddleware(getattr(args, "cors_origin", None) or [])
    except ValueError as exc:
        raise SystemExit(f"--cors-origin: {exc}") from None
    certfile, keyfile = getattr(args, "certfile", None), getattr(args, "keyfile", None)
    if keyfile and not certfile:
        raise SystemExit("--keyfile needs --certfile")
    if certfile:
        try:
            server_context(certfile, keyfile)
        except (OSError, ValueError) as exc:
            raise SystemExit(f"--certfile/--keyfile: {exc}") from None
    return ServiceOptions(
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=args.access_log,
        extra=extra,
        cors_origins=list(getattr(args, "cors_origin", None) or []),
        certfile=certfile,
        keyfile=keyfile,
        metrics=getattr(args, "metrics", True),
        tracing=getattr(args, "tracing", True),
        server_timing=getattr(args, "server_timing", True),
        http2=getattr(args, "http2", True),
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


def _install_middleware(server: HttpServer, service: str, options: ServiceOptions) -> HttpServer:
    """Metrics, tracing, CORS, Server-Timing and HTTPS when asked (outermost first); the access log
    of the errors the server answers before any handler."""
    if options.metrics or options.tracing or options.server_timing:  # one middleware for the three
        metrics = enable_metrics(server, add_middleware=False) if options.metrics else None
        server.add_middleware(
            ObservabilityMiddleware(
                metrics, tracing=options.tracing, server_timing="app" if options.server_timing else None
            )
        )
    if options.cors_origins:
        server.add_middleware(CORSMiddleware(options.cors_origins, allow_methods=["GET", "POST"]))
    if options.access_log:  # the route table logs handled requests; this adds the server's answers
        server.add_error_hook(AccessLogMiddleware(f"{service}.access", service=service).on_error)
    server.http2 = options.http2
    if options.certfile:
        server.use_tls(server_context(options.certfile, options.keyfile))
    return server


def _url(host: str, port: int, scheme: str = "http") -> str:
    return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"


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
    if options.metrics and options.workers > 1:
        use_multiprocess_dir()  # before the fork and before prometheus_client is imported

    def announce(port: int) -> None:
        scheme = "https" if options.certfile else "http"
        print(f"listening on {_url(options.host, port, scheme)}", flush=True)

    def build() -> HttpServer:
        server = _install_middleware(build_server(options), service, options)
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
