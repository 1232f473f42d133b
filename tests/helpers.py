"""Shared test helpers: waiting for a state, reading raw HTTP from a socket, test certificates.

Waiting: tests never sleep to synchronise. They wait for the state itself (a log line, a counter,
a socket state) with :func:`wait_for`, whose timeout only bounds a hang: it is generous, so a busy
machine slows a test down instead of failing it.

Raw reads: every reader takes a ``timeout`` (seconds of silence allowed per ``recv``) and fails the
test with what it has read so far when the peer closes early.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = [
    "HANG_TIMEOUT",
    "connection_closed_by_peer",
    "has_unread_data",
    "make_certificate",
    "read_all",
    "read_exactly",
    "read_head",
    "read_response",
    "read_responses",
    "read_until",
    "read_until_closed",
    "runnable",
    "status_of",
    "until",
    "until_parked",
    "wait_for",
]

#: Seconds a test waits for a state before declaring a hang (bounds a hang; never a measurement).
HANG_TIMEOUT = 20.0


def wait_for(
    predicate: Callable[[], object],
    timeout: float = HANG_TIMEOUT,
    message: str | Callable[[], str] = "condition not met",
    *,
    interval: float = 0.005,
) -> float:
    """Poll ``predicate`` until it is true; the seconds it took.

    Args:
        predicate: the state to wait for.
        timeout: seconds before failing the test (a hang bound, not a measurement).
        message: the failure message, or a function making it (to show the state at that time).
        interval: seconds between polls.

    Raises:
        AssertionError: ``predicate`` was still false after ``timeout`` seconds.
    """
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            text = message() if callable(message) else message
            raise AssertionError(f"{text} (waited {timeout} s)")
        time.sleep(interval)
    return time.monotonic() - start


async def until(
    predicate: Callable[[], object],
    timeout: float = HANG_TIMEOUT,
    message: str | Callable[[], str] = "condition not met",
) -> float:
    """:func:`wait_for` for code on a flowno loop: polls between ``flowno_io.sleep`` calls."""
    from flowno_io import sleep

    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            text = message() if callable(message) else message
            raise AssertionError(f"{text} (waited {timeout} s)")
        await sleep(0.005)
    return time.monotonic() - start


def runnable(task: Any) -> bool:
    """True while the flowno ``task`` (a ``TaskHandle``) is queued to run: not parked, not finished."""
    from flowno_io.io.flowno_compat import current_loop

    return any(entry[0] is task.raw_task for entry in current_loop().tasks)


async def until_parked(task: Any) -> None:
    """Yield until ``task``, spawned on the running loop, has run up to a wait that parks it.

    Deterministic: the loop runs tasks in FIFO order, so each ``sleep(0)`` lets ``task`` run one
    step; once it is no longer queued it is parked (or finished).
    """
    from flowno_io import sleep

    while runnable(task):
        await sleep(0)


# -- raw reads --------------------------------------------------------------------------------


def read_until_closed(sock: socket.socket, timeout: float = HANG_TIMEOUT) -> bytes:
    """Everything the peer sends until it closes; a reset counts as the end.

    Raises:
        AssertionError: the peer still had not closed after ``timeout`` seconds.
    """
    sock.settimeout(timeout)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        except TimeoutError:
            continue  # the loop condition ends it
        if not data:
            break
        chunks.append(data)
    else:
        raise AssertionError(f"peer did not close the connection in time; got {b''.join(chunks)[-200:]!r}")
    return b"".join(chunks)


# One name, one behaviour: read_all is read_until_closed (kept for the streaming tests' wording).
def read_all(sock: socket.socket, already: bytes = b"", timeout: float = HANG_TIMEOUT) -> bytes:
    """``already`` plus everything until the peer closes (a reset counts as the end)."""
    return already + read_until_closed(sock, timeout)


def _peek(sock: socket.socket) -> bytes | None:
    """One byte peeked without waiting; ``None`` when nothing is there (an error counts as b"")."""
    timeout = sock.gettimeout()
    sock.settimeout(0.0)  # a socket with a timeout would wait for readability first
    try:
        return sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return None
    except OSError:
        return b""
    finally:
        sock.settimeout(timeout)


def connection_closed_by_peer(sock: socket.socket) -> bool:
    """Without waiting or consuming: has the peer closed (or reset) this connection?

    Unread data says no (the end comes after it). The socket's blocking mode is left as it was.
    """
    return _peek(sock) == b""


def has_unread_data(sock: socket.socket) -> bool:
    """Without waiting or consuming: are bytes waiting to be read?"""
    return bool(_peek(sock))


def read_head(
    sock: socket.socket, timeout: float = HANG_TIMEOUT, *, already: bytes = b""
) -> tuple[bytes, bytes]:
    """The response head (without the blank line) and whatever body bytes came with it.

    ``already``: bytes of it read before (they come first).
    """
    sock.settimeout(timeout)
    data = already
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed before a full head: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def read_exactly(
    sock: socket.socket, count: int, already: bytes = b"", timeout: float = HANG_TIMEOUT
) -> bytes:
    """``count`` bytes (fails if the peer closes first)."""
    sock.settimeout(timeout)
    data = already
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            raise AssertionError(f"closed after {len(data)} of {count} bytes: {data[-200:]!r}")
        data += chunk
    return data


def read_until(
    sock: socket.socket, marker: bytes, already: bytes = b"", timeout: float = HANG_TIMEOUT
) -> bytes:
    """Bytes up to the first ``marker`` that ends a read, or later (what arrived with it included)."""
    sock.settimeout(timeout)
    data = bytearray(already)
    while marker not in data[-(65536 + len(marker)) :]:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed before {marker!r}: {bytes(data[-200:])!r}")
        data += chunk
    return bytes(data)


def _content_length(head: bytes) -> int:
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return length


def read_response(sock: socket.socket, timeout: float = HANG_TIMEOUT, *, already: bytes = b"") -> bytes:
    """One Content-Length-framed response (head + body) from a keep-alive connection.

    ``already``: bytes of it read before (they come first).
    """
    head, body = read_head(sock, timeout, already=already)
    length = _content_length(head)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError("closed before the full body")
        body += chunk
    assert len(body) == length, "more bytes than Content-Length (pipelining leak)"
    return head + b"\r\n\r\n" + body


def read_responses(sock: socket.socket, count: int, timeout: float = HANG_TIMEOUT) -> list[bytes]:
    """``count`` Content-Length-framed responses, however the bytes are split across reads."""
    sock.settimeout(timeout)
    buffer = b""
    responses: list[bytes] = []
    while len(responses) < count:
        head_end = buffer.find(b"\r\n\r\n")
        if head_end >= 0:
            end = head_end + 4 + _content_length(buffer[:head_end])
            if len(buffer) >= end:
                responses.append(buffer[:end])
                buffer = buffer[end:]
                continue
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed after {len(responses)} of {count} responses")
        buffer += chunk
    assert buffer == b"", f"unexpected bytes after {count} responses: {buffer[:100]!r}"
    return responses


def status_of(response: bytes) -> int:
    """The status code of a raw response."""
    return int(response.split(b" ", 2)[1])


# -- TLS ----------------------------------------------------------------------------------------


def make_certificate(directory: Path, name: str, subject_alt_names: str) -> tuple[Path, Path]:
    """A self-signed certificate and its key, made by the ``openssl`` command (valid one day)."""
    cert, key = directory / f"{name}.pem", directory / f"{name}.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", f"/CN={name}",
            "-addext", f"subjectAltName={subject_alt_names}",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key
