"""``python -m echo_service``: run the echo service.

Example:
    python -m echo_service --port 0 --access-log
    # stdout: listening on http://127.0.0.1:41234
"""

from __future__ import annotations

import argparse
import sys

from flowno_io import HttpServer
from flowno_io.service import ServiceOptions, add_service_arguments, options_from, run_service

from .app import build_server

__all__ = ["main"]


def _build(options: ServiceOptions) -> HttpServer:
    return build_server(options.host, options.port, access_log=options.access_log)


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and serve until SIGTERM/SIGINT; the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m echo_service", description="The echo service (flowno-io HttpServer)."
    )
    add_service_arguments(parser, "ECHO", 8080)
    options = options_from(parser.parse_args(argv), {})
    return run_service("echo_service", options, _build)


if __name__ == "__main__":
    sys.exit(main())
