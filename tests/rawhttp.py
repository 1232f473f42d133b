"""Raw-socket helpers for tests."""

from __future__ import annotations

import socket
import time


def read_until_closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Everything the peer sends until it closes (fails the test on timeout)."""
    sock.settimeout(timeout)
    chunks = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
    else:
        raise AssertionError("peer did not close the connection in time")
    return b"".join(chunks)


def read_response(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """One Content-Length-framed response (head + body) from a keep-alive connection."""
    sock.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError(f"closed before a full head: {data!r}")
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise AssertionError("closed before the full body")
        body += chunk
    assert len(body) == length, "more bytes than Content-Length (pipelining leak)"
    return head + b"\r\n\r\n" + body


def status_of(response: bytes) -> int:
    """The status code of a raw response."""
    return int(response.split(b" ", 2)[1])


def read_responses(sock: socket.socket, count: int, timeout: float = 5.0) -> list[bytes]:
    """``count`` Content-Length-framed responses, however the bytes are split across reads."""
    sock.settimeout(timeout)
    buffer = b""
    responses: list[bytes] = []
    while len(responses) < count:
        head_end = buffer.find(b"\r\n\r\n")
        if head_end >= 0:
            head = buffer[:head_end]
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            end = head_end + 4 + length
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
