"""Helpers shared by the locustfiles: service URLs, the loopback guard, an SSE reader, event reports.

Not a locustfile itself (locust skips files starting with ``_`` when given a directory); the
locustfiles import it by name, as locust puts their directory on ``sys.path`` while loading them.
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Iterator
from typing import Any, Protocol
from urllib.parse import urlsplit

from locust import events
from locust.env import Environment

#: Base URL of the echo service (``ECHO_URL``; ``make loadtest`` sets it).
ECHO_URL = os.environ.get("ECHO_URL", "http://127.0.0.1:8080")
#: Base URL of the stream service (``STREAM_URL``).
STREAM_URL = os.environ.get("STREAM_URL", "http://127.0.0.1:8081")
#: Set ``LOADTEST_ALLOW_REMOTE=1`` to aim these users at a host that is not a loopback address.
ALLOW_REMOTE = os.environ.get("LOADTEST_ALLOW_REMOTE", "") == "1"


def is_loopback_url(url: str) -> bool:
    """True when ``url``'s host is ``localhost`` or a loopback address."""
    host = urlsplit(url).hostname or ""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@events.init.add_listener  # type: ignore[untyped-decorator]  # locust's hooks are unannotated
def refuse_remote_hosts(environment: Environment, **_kwargs: Any) -> None:
    """Stop at start-up when a user class (or ``--host``) points beyond this machine."""
    hosts = [environment.host] if environment.host else []
    hosts += [user_class.host for user_class in environment.user_classes if user_class.host]
    remote = sorted({host for host in hosts if not is_loopback_url(host)})
    if remote and not ALLOW_REMOTE:
        raise SystemExit(
            f"refusing to load-test {', '.join(remote)}: not a loopback address "
            "(set LOADTEST_ALLOW_REMOTE=1 to override)"
        )


class LineStream(Protocol):
    """What :func:`iter_sse_data` reads: geventhttpclient's response stream."""

    def readline(self, sep: bytes = b"\r\n") -> bytes: ...


def iter_sse_data(stream: LineStream) -> Iterator[str]:
    """Yield each Server-Sent Event's data as soon as its blank line arrives.

    Lines are read with ``readline`` (which returns as soon as a line is complete, unlike
    ``read(n)``, which waits for ``n`` bytes). Comments and fields other than ``data`` are skipped.
    """
    data: list[str] = []
    while True:
        line = stream.readline(b"\n")
        if not line:
            if data:
                yield "\n".join(data)
            return
        text = line.decode("utf-8", "replace").rstrip("\r\n")
        if not text:
            if data:
                yield "\n".join(data)
                data = []
            continue
        name, _, value = text.partition(":")
        if name == "data":
            data.append(value[1:] if value.startswith(" ") else value)


def report(
    environment: Environment,
    request_type: str,
    name: str,
    started: float,
    seconds: float,
    length: int = 0,
    exception: BaseException | None = None,
) -> None:
    """Fire one request event: ``seconds`` becomes the response time (ms) in Locust's stats."""
    environment.events.request.fire(  # type: ignore[no-untyped-call]
        request_type=request_type,
        name=name,
        response_time=seconds * 1000.0,
        response_length=length,
        exception=exception,
        context={},
        start_time=started,
        url=None,
    )


def now() -> tuple[float, float]:
    """``(wall clock, perf counter)``: the first for Locust's start times, the second for durations."""
    return time.time(), time.perf_counter()
