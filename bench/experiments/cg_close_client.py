"""Send N hello requests with ``Connection: close``, a new connection each, 10 at a time: for
``cg_close.sh`` (what wrk does with ``-H 'Connection: close'``).

python cg_close_client.py N PORT
"""

from __future__ import annotations

import socket
import sys
import time

REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


def connect(port: int) -> socket.socket:
    """A connection to the server, retried while it starts (under valgrind: seconds)."""
    for _ in range(6000):  # 10 minutes: valgrind starts slowly on a busy machine
        try:
            return socket.create_connection(("127.0.0.1", port))
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"no server on port {port}")


def send_closing_hellos(count: int, port: int) -> None:
    """``count`` one-request connections, 10 open at a time; each answer read to the server's EOF."""
    connect(port).close()  # wait for the server (a connection without a request is not counted)
    for _ in range(count // 10):
        sockets = [socket.create_connection(("127.0.0.1", port)) for _ in range(10)]
        for sock in sockets:
            sock.settimeout(60)
            sock.sendall(REQUEST)
        for sock in sockets:
            received = b""
            while chunk := sock.recv(4096):
                received += chunk
            if not received.endswith(b"Hello, world!"):
                raise SystemExit(f"bad answer: {received!r}")
            sock.close()


if __name__ == "__main__":
    send_closing_hellos(int(sys.argv[1]), int(sys.argv[2]))
