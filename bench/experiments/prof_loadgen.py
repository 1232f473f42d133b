"""Calls per request of ``python -m loadtest closed`` (cProfile), against a running server::

    .venv/bin/python bench/experiments/prof_loadgen.py http://127.0.0.1:PORT/ [requests]

Prints the primitive calls per request and the functions called at least once per 2 requests,
with their own time per request: where a request's Python work goes, call by call.
"""

from __future__ import annotations

import cProfile
import pstats
import sys

from loadtest.cli import main as loadtest_main


def run() -> None:
    """Profile one closed-loop run and print the table."""
    url = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 20_000
    profile = cProfile.Profile()
    argv = ["closed", "-c", "50", "-n", str(count), "--no-files", "--no-progress", "-q", url]
    profile.enable()
    try:
        loadtest_main(argv)
    except SystemExit:
        pass
    profile.disable()
    stats = pstats.Stats(profile)
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(value[1] for value in entries.values())
    print(f"primitive calls per request: {total / count:.1f}")
    rows = sorted(
        (
            (value[1] / count, value[2] / count * 1e6, f"{key[0].split('/')[-1]}:{key[1]}({key[2]})")
            for key, value in entries.items()
        ),
        reverse=True,
    )
    for calls, own_us, name in rows:
        if calls >= 0.5:
            print(f"{calls:6.2f} {own_us:6.2f} µs  {name}")


if __name__ == "__main__":
    run()
