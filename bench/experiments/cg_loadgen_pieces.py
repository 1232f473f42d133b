"""One piece of the load generator's per-request work, run N times, for callgrind::

    python cg_loadgen_pieces.py PIECE N
    SCRIPT=bench/experiments/cg_loadgen_pieces.py bench/experiments/cg_pieces.sh "PIECE..."

Pieces: ``traceparent`` (the ids of a trace the client starts for a request), ``record`` (the
generator's stats of one response), ``head`` (the client's request head for a GET that starts a
trace: the cached plain head and the ``traceparent`` line), ``parse`` (a connection's
``ResponseParser`` reading nginx's hello answer, reused; ``parse-new``: a new parser for each),
``response`` (``ClientResponse._of``),
``wake`` (a task parked and woken through a ``Wakeup`` on ``flowno_io.EventLoop``, while the
waking task yields: two loop steps and the park/wake bookkeeping), ``yield`` (one task yielding:
one loop step), ``timer`` (a read deadline set and disarmed), ``sendrecv``
(a socket pair's send + poll + recv of the hello: the syscall wrappers), ``empty`` (the loop).
"""

from __future__ import annotations

import select
import socket
import sys
from typing import Any

from flowno import spawn

from flowno_io import EventLoop, HttpClient
from flowno_io.client.client import ClientResponse
from flowno_io.io.clock import get_clock
from flowno_io.io.flowno_compat import park
from flowno_io.io.wakeup import Wakeup
from flowno_io.protocol.http11_client import ResponseParser
from flowno_io.protocol.trace_context import new_traceparent

ANSWER = (
    b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 30 Nov 2026 06:00:00 GMT\r\n"
    b"Content-Type: text/plain\r\nContent-Length: 13\r\nConnection: keep-alive\r\n\r\nHello, world!"
)
URL = "http://127.0.0.1:8080/"


def _loop_piece(piece: str, count: int) -> None:
    async def main() -> None:
        if piece == "wake":
            flag = Wakeup()

            async def sleeper() -> None:
                for _ in range(count):
                    await park(flag)
                    flag._set = False

            task = await spawn(sleeper())
            for _ in range(count):
                flag.set()  # (the sleeper runs when this task yields)
                await park(ping)
            await task.join()
        elif piece == "yield":
            for _ in range(count):
                await park(ping)
        elif piece == "timer":
            timer = get_clock().timer(lambda: None)
            await timer.arm(3600)
            timer.disarm()
            for _ in range(count):
                timer.set_deadline(1e12)
                timer.disarm()

    ping = _Yield()
    EventLoop().run_until_complete(main(), join=True)


class _Yield:
    """A flag that is always set: ``park`` on it only yields (the task is queued again at once)."""

    _set = True


def main(piece: str, count: int) -> None:
    """Run ``piece`` ``count`` times."""
    from loadtest.stats import RequestStats

    if piece == "traceparent":
        for _ in range(count):
            new_traceparent()
    elif piece == "record":
        stats = RequestStats(1.0)
        for i in range(count):
            latency = 0.001 + (i * 7919 % 3000) * 1.01e-6  # (1-4 ms, spread as latencies are)
            stats.record_response(
                "GET /", 0.5 + i * 1e-6, latency, status=200, ok=True, size=13, service=latency
            )
    elif piece == "head":  # (as HttpClient._send with start_traces, less the traceparent itself)
        client = HttpClient(user_agent="flowno-loadtest/0.1", start_traces=True)
        started = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
        for _ in range(count):
            head = client._plain_head("GET", URL)[1]
            head = head[:-2] + f"traceparent: {started}\r\n\r\n".encode()
    elif piece == "parse":  # (as a connection does: one parser, reused for each response)
        parser = ResponseParser(persistent=True)
        for _ in range(count):
            parser.next_response(head_request=False, max_header_bytes=65536)
            parser.feed(ANSWER)
            parser.take_body()
    elif piece == "parse-new":  # (a parser per response, as before round six)
        for _ in range(count):
            parser = ResponseParser()
            parser.feed(ANSWER)
            parser.take_body()
    elif piece == "response":
        parser = ResponseParser()
        parser.feed(ANSWER)
        history: list[Any] = []
        for _ in range(count):
            ClientResponse._of(parser, b"Hello, world!", URL, history, 0.001)
    elif piece in ("wake", "yield", "timer"):
        _loop_piece(piece, count)
    elif piece == "sendrecv":
        left, right = socket.socketpair()
        right.setblocking(False)
        poll = select.poll()
        poll.register(right.fileno(), select.POLLIN)
        for _ in range(count):
            left.send(ANSWER)
            poll.poll(0)
            right.recv(65536)
    elif piece != "empty":
        raise SystemExit(f"unknown piece {piece!r}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
