"""Send N hello requests over 10 keep-alive connections (10 in flight): for ``cg_server.sh``.

python cg_hello_client.py N PORT
"""

from __future__ import annotations

import socket
import sys
import time


def send_hellos(count: int, port: int) -> None:
    """``count`` hello requests, 10 at a time over 10 connections; each answer read to its end."""
    for _ in range(1200):
        try:
            sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(10)]
            break
        except OSError:
            time.sleep(0.1)
    request = b"GET / HTTP/1.1\r\nHost: t\r\n\r\n"
    for sock in sockets:
        sock.settimeout(60)
    for _ in range(count // 10):
        for sock in sockets:
            sock.sendall(request)
        for sock in sockets:
            received = b""
            while not received.endswith(b"Hello, world!"):
                chunk = sock.recv(4096)
                if not chunk:
                    break
                received += chunk


if __name__ == "__main__":
    send_hellos(int(sys.argv[1]), int(sys.argv[2]))
