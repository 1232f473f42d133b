"""Shared fixtures: servers on 127.0.0.1 with ephemeral ports, always shut down."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from client_servers import RawServer

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


@pytest.fixture
def raw_server() -> Iterator[Callable[..., RawServer]]:
    """Start ``RawServer`` s (``raw_server(script, **options)``); every one is stopped after the
    test, and a script's unexpected exception fails it."""
    servers: list[RawServer] = []

    def start(script: Callable[[socket.socket, int], None], **options: Any) -> RawServer:
        raw = RawServer(script, **options).start()
        servers.append(raw)
        return raw

    yield start
    for raw in servers:
        raw.stop()
    for raw in servers:
        assert not raw.errors, raw.errors
