"""Two kernel costs behind the optimization notes, measured on this machine.

1. Registering an ``epoll`` descriptor in another ``epoll`` (what flowno's selector does on
   every wait of ``HttpServer``'s driver, whose private epoll holds every idle connection): the
   kernel's loop check walks every descriptor of the inner epoll, so it costs O(its size).
2. One small ``send()`` per SSE event with ``TCP_NODELAY`` versus ten events per ``send()``.

Run: ``taskset -c 0 .venv/bin/python bench/experiments/kernel_costs.py`` (a few seconds).
"""

from __future__ import annotations

import resource
import select
import socket
import subprocess
import sys
import time


def nested_epoll_cost(fds: int, repeats: int = 2000) -> float:
    """Microseconds to register and unregister an epoll holding ``fds`` sockets in another epoll."""
    inner, outer = select.epoll(), select.epoll()
    pairs = [socket.socketpair() for _ in range(fds // 2)]
    try:
        for left, right in pairs:
            inner.register(left.fileno(), select.EPOLLIN)
            inner.register(right.fileno(), select.EPOLLIN)
        start = time.perf_counter()
        for _ in range(repeats):
            outer.register(inner.fileno(), select.EPOLLIN)
            outer.unregister(inner.fileno())
        return (time.perf_counter() - start) * 1e6 / repeats
    finally:
        for left, right in pairs:
            left.close()
            right.close()
        inner.close()
        outer.close()


def send_cost(events: int = 200_000) -> tuple[float, float]:
    """CPU µs per event: one 45-byte send each, and ten events per send (reader on CPU 1)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    reader_code = (
        f"import socket\ns = socket.create_connection(('127.0.0.1', {port}))\nwhile s.recv(1 << 20): pass"
    )
    reader = subprocess.Popen(["taskset", "-c", "1", sys.executable, "-c", reader_code])
    connection, _ = listener.accept()
    connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    event = b'1f\r\ndata: {"i":1,"token":"hello"}\n\n\r\n'
    start = time.process_time()
    for _ in range(events):
        connection.send(event)
    single = (time.process_time() - start) * 1e6 / events
    start = time.process_time()
    for _ in range(events // 10):
        connection.send(event * 10)
    batched = (time.process_time() - start) * 1e6 / events
    connection.close()
    listener.close()
    reader.wait(timeout=10)
    return single, batched


def main() -> None:
    """Print both measurements."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    for fds in (0, 100, 1000, 10_000):
        if fds + 64 > hard:
            break
        cost = nested_epoll_cost(fds)
        print(f"register+unregister an epoll holding {fds:>6,} fds in another epoll: {cost:8.1f} µs")
    single, batched = send_cost()
    print(f"CPU per SSE event, one send() each: {single:.2f} µs; ten events per send(): {batched:.2f} µs")


if __name__ == "__main__":
    main()
