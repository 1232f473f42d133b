"""The seed server, ``flowno.io.HttpServer`` from PyPI ``flowno`` 0.1.19, as it ships.

It answers every path with ``Hello, world!`` and the request line, one request per connection
(it closes after each response), and spawns one task per connection. It ignores SIGTERM (the
harness then kills it).
"""

from __future__ import annotations

import argparse

from flowno import EventLoop
from flowno.io import HttpServer


def main() -> None:
    """Serve forever."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    EventLoop().run_until_complete(HttpServer(args.host, args.port).serve())


if __name__ == "__main__":
    main()
