"""The echo service: requests echoed back as JSON or raw, delays, sized bodies, chosen statuses.

Run it with ``python -m echo_service --host 127.0.0.1 --port 8080`` (see ``__main__.py``), or
build the server in code with :func:`build_server`.
"""

from .app import MAX_BYTES, MAX_DELAY_MS, build_server

__all__ = ["MAX_BYTES", "MAX_DELAY_MS", "build_server"]
