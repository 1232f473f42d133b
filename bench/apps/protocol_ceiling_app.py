"""The hello ceiling: a bare ``asyncio.Protocol`` answering ``GET /`` with canned bytes.

No framework, no routing, no header parsing beyond finding each head's end and a
``Connection: close``: the least a Python server on an asyncio loop can do per request, so the
bench reports every hello row also as a fraction of this one. It is a ceiling, not a server: it
ignores request bodies, limits and timeouts, and answers every head with the same 200.
``--loop uvloop`` runs it on uvloop.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import cast

from _payloads import BACKLOG, HELLO

_BODY = HELLO.encode()
_HEAD = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n" % len(_BODY)
KEEP_ALIVE = _HEAD + b"\r\n" + _BODY
CLOSE = _HEAD + b"Connection: close\r\n\r\n" + _BODY


class HelloProtocol(asyncio.Protocol):
    """One connection: every complete head gets the hello response, pipelined heads in one write."""

    transport: asyncio.Transport  # set by connection_made, which asyncio calls first

    def __init__(self) -> None:
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer + data if self.buffer else data
        replies: list[bytes] = []
        start = 0
        while (end := buffer.find(b"\r\n\r\n", start)) >= 0:
            if b"connection: close" in buffer[start:end].lower():
                replies.append(CLOSE)
                self.transport.write(b"".join(replies))
                self.transport.close()
                self.buffer = b""
                return
            replies.append(KEEP_ALIVE)
            start = end + 4
        self.buffer = buffer[start:]
        if replies:
            self.transport.write(replies[0] if len(replies) == 1 else b"".join(replies))


async def serve(host: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    server = await loop.create_server(HelloProtocol, host, port, backlog=BACKLOG)
    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    """Parse the command line and serve."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    args = parser.parse_args()
    if args.loop == "uvloop":
        import uvloop

        uvloop.run(serve(args.host, args.port))
    else:
        asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
