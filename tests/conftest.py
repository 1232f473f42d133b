"""Shared fixtures: servers on 127.0.0.1 with ephemeral ports, always shut down."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from flowno_io import HttpServer
from flowno_io.testing import ServerThread


@pytest.fixture
def serve() -> Iterator[Callable[[HttpServer], str]]:
    """Start servers in background threads; every one is stopped after the test."""
    threads: list[ServerThread] = []

    def start(server: HttpServer) -> str:
        thread = ServerThread(server)
        threads.append(thread)
        return thread.start()

    yield start
    for thread in reversed(threads):
        thread.stop()
