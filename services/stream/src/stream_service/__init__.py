"""The stream service: Server-Sent Events, a shared ticker, and OpenAI-compatible token streams.

Run it with ``python -m stream_service --host 127.0.0.1 --port 8081`` (see ``__main__.py``), or
build the server in code with :func:`build_server`.
"""

from .app import DEFAULT_TICKER_INTERVAL, DEFAULT_TOKENS_PER_SECOND, build_server

__all__ = ["DEFAULT_TICKER_INTERVAL", "DEFAULT_TOKENS_PER_SECOND", "build_server"]
