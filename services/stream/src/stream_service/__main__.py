"""``python -m stream_service``: run the stream service.

Example:
    python -m stream_service --port 0 --tokens-per-second 100 --ticker-interval-ms 500
    # stdout: listening on http://127.0.0.1:41235
"""

from __future__ import annotations

import argparse
import os
import resource
import sys

from flowno_io import HttpServer
from flowno_io.service import ServiceOptions, add_service_arguments, options_from, run_service

from .app import DEFAULT_TICKER_INTERVAL, DEFAULT_TOKENS_PER_SECOND, build_server

__all__ = ["FD_SPARE", "main"]

#: Open files a server process needs besides its connections (listener, epolls, pipes, logs).
FD_SPARE = 64


def _build(options: ServiceOptions) -> HttpServer:
    return build_server(
        options.host,
        options.port,
        access_log=options.access_log,
        tokens_per_second=options.extra["tokens_per_second"],
        ticker_interval=options.extra["ticker_interval_ms"] / 1000,
        max_connections=options.extra["max_connections"],
    )


def _max_connections(parser: argparse.ArgumentParser, wanted: int | None) -> int:
    """Connections one process may hold: ``wanted``, or all the hard open-files limit allows (the
    runner raises the soft limit to it); a clear error when the hard limit is too low."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    allowed = 1_000_000 if hard == resource.RLIM_INFINITY else hard - FD_SPARE
    if wanted is None:
        return max(16, allowed)
    if wanted > allowed:
        parser.error(
            f"--max-connections {wanted} needs {wanted + FD_SPARE} open files, but the hard limit "
            f"(ulimit -Hn) is {hard}: raise it, or serve from more processes (--workers)"
        )
    return wanted


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and serve until SIGTERM/SIGINT; the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m stream_service",
        description="The stream service: SSE, a shared ticker, OpenAI-style token streams.",
    )
    add_service_arguments(parser, "STREAM", 8081)
    parser.add_argument(
        "--tokens-per-second",
        type=float,
        default=float(os.environ.get("STREAM_TOKENS_PER_SECOND") or DEFAULT_TOKENS_PER_SECOND),
        help="pace of chat completions, tokens per second "
        f"(env STREAM_TOKENS_PER_SECOND; default {DEFAULT_TOKENS_PER_SECOND:g})",
    )
    parser.add_argument(
        "--ticker-interval-ms",
        type=float,
        default=DEFAULT_TICKER_INTERVAL * 1000,
        help=f"milliseconds between /ticker ticks (default {DEFAULT_TICKER_INTERVAL * 1000:g})",
    )
    parser.add_argument(
        "--max-connections",
        type=int,
        default=None,
        help="connections (live streams) per process (default: all the open-files limit allows)",
    )
    args = parser.parse_args(argv)
    if args.max_connections is not None and args.max_connections < 1:
        parser.error("--max-connections must be at least 1")
    max_connections = _max_connections(parser, args.max_connections)
    if not 0 < args.tokens_per_second <= 1_000_000:
        parser.error("--tokens-per-second must be within (0, 1000000]")
    if not 1 <= args.ticker_interval_ms <= 3_600_000:
        parser.error("--ticker-interval-ms must be within 1-3600000")
    extra = {
        "tokens_per_second": args.tokens_per_second,
        "ticker_interval_ms": args.ticker_interval_ms,
        "max_connections": max_connections,
    }
    options = options_from(args, extra)
    return run_service("stream_service", options, _build)


if __name__ == "__main__":
    sys.exit(main())
