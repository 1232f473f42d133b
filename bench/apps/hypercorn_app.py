"""The peer that serves HTTP/2: hypercorn with a bare ASGI hello app (``GET /``).

Run by ``bench/run.py`` as ``taskset -c 0 python bench/apps/hypercorn_app.py --port N
[--certfile C --keyfile K]``: one process, hypercorn's defaults (asyncio loop); HTTP/2 by ALPN
over TLS and by prior knowledge on cleartext, as ours. SIGTERM stops it.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
from typing import Any

from _payloads import BACKLOG, HELLO, KEEPALIVE_TIMEOUT
from hypercorn.asyncio import serve
from hypercorn.config import Config

_BODY = HELLO.encode()
_HEADERS = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(_BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """``GET /`` hello (any path), the same bytes as the other bench apps."""
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _BODY})


def main() -> None:
    """Serve until SIGTERM/SIGINT."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--certfile")
    parser.add_argument("--keyfile")
    args = parser.parse_args()
    config = Config()
    config.bind = [f"{args.host}:{args.port}"]
    config.keep_alive_timeout = KEEPALIVE_TIMEOUT
    config.backlog = BACKLOG
    config.accesslog = None
    if args.certfile:
        config.certfile, config.keyfile = args.certfile, args.keyfile
    stop = asyncio.Event()

    async def run() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await serve(app, config, shutdown_trigger=stop.wait)  # type: ignore[arg-type]

    asyncio.run(run())


if __name__ == "__main__":
    main()
