"""Calls per hello request of the flowno-io server (cProfile), client in a thread::

    .venv/bin/python bench/experiments/prof_hello_server.py [requests] [m, t, s: observed]

Prints the primitive calls per request and each function called at least once per 2 requests
with its own time per request (cProfile's clock: inflated, but the split is what matters).
"""

from __future__ import annotations

import cProfile
import pstats
import sys
import threading

from cg_hello_client import send_hellos
from cg_hello_server import counting_server

import flowno_io

count = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
loop = flowno_io.EventLoop()
server = counting_server(count, 0, loop, observe=sys.argv[2] if len(sys.argv) > 2 else "")
threading.Thread(target=send_hellos, args=(count, server.port), daemon=True).start()
profile = cProfile.Profile()
profile.enable()
loop.run_until_complete(server.serve(), join=True)
profile.disable()
entries = pstats.Stats(profile).stats  # type: ignore[attr-defined]
print(f"primitive calls per request: {sum(v[1] for v in entries.values()) / count:.1f}")
rows = sorted(
    ((v[1] / count, v[2] / count * 1e6, f"{k[0].split('/')[-1]}:{k[1]}({k[2]})") for k, v in entries.items()),
    reverse=True,
)
for calls, own_us, name in rows:
    if calls >= 0.5:
        print(f"{calls:6.2f} {own_us:6.2f} µs  {name}")
