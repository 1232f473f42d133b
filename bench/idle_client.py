"""Hold ``--count`` idle keep-alive connections to a server, for the idle-connections scenario.

Each connection sends one ``GET /`` and reads its response (so the server has served it and now
keeps it alive, idle), then stays silent. The program prints ``ready <open>`` once every
connection is established, then waits until its standard input closes; then it checks how many
connections the server still had open (a closed one reads EOF) and prints one JSON line::

    {"opened": ..., "still_open": ..., "failed": ...}

Connections are opened in waves of ``--wave`` so the server's listen backlog never overflows.
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import sys
import time


def _read_response(sock: socket.socket, deadline: float) -> bool:
    """Read one small response with a Content-Length body; True when it is a 200."""
    data = b""
    while (remaining := deadline - time.monotonic()) > 0:
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            return False
        if not chunk:
            return False
        data += chunk
        head_end = data.find(b"\r\n\r\n")
        if head_end < 0:
            continue
        head = data[:head_end].lower()
        marker = head.find(b"content-length:")
        if marker < 0:
            return data.startswith(b"HTTP/1.1 200")
        length = int(head[marker + 15 :].split(b"\r\n", 1)[0])
        if len(data) >= head_end + 4 + length:
            return data.startswith(b"HTTP/1.1 200")
    return False


def open_idle(port: int, count: int, wave: int) -> tuple[list[socket.socket], int]:
    """Open ``count`` connections that each served one request; returns (sockets, failures)."""
    request = f"GET / HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    sockets: list[socket.socket] = []
    failed = 0
    while len(sockets) + failed < count:
        batch: list[socket.socket] = []
        for _ in range(min(wave, count - len(sockets) - failed)):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                sock.connect(("127.0.0.1", port))
                sock.sendall(request)
            except OSError:
                sock.close()
                failed += 1
                continue
            batch.append(sock)
        deadline = time.monotonic() + 10.0
        for sock in batch:
            if _read_response(sock, deadline):
                sock.setblocking(False)
                sockets.append(sock)
            else:
                sock.close()
                failed += 1
    return sockets, failed


def count_still_open(sockets: list[socket.socket]) -> int:
    """Connections the server has not closed (a closed one is readable and reads EOF or an error)."""
    still_open = 0
    poller = select.poll()
    by_fd = {sock.fileno(): sock for sock in sockets}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    readable = {fd for fd, _ in poller.poll(0)}
    for fd, sock in by_fd.items():
        if fd not in readable:
            still_open += 1
            continue
        try:
            if sock.recv(1, socket.MSG_PEEK):
                still_open += 1  # unexpected bytes, but open
        except OSError:
            pass
    return still_open


def main() -> None:
    """Open the connections, report, wait for stdin to close, report again."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--count", type=int, default=10_000)
    parser.add_argument("--wave", type=int, default=200)
    args = parser.parse_args()
    sockets, failed = open_idle(args.port, args.count, args.wave)
    print(f"ready {len(sockets)}", flush=True)
    sys.stdin.read()  # until the harness closes our stdin
    result = {"opened": len(sockets), "still_open": count_still_open(sockets), "failed": failed}
    print(json.dumps(result), flush=True)
    for sock in sockets:
        sock.close()


if __name__ == "__main__":
    main()
