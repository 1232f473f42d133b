"""Send N hello requests over 10 keep-alive connections (10 in flight): for ``cg_server.sh``."""

from __future__ import annotations

import socket
import sys
import time

count, port = int(sys.argv[1]), int(sys.argv[2])
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
