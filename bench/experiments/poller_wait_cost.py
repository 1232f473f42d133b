"""CPU per ``Poller.wait()`` (a poke wakes it) with N idle sockets inside the poller.

A task waits on a wakeable :class:`~flowno_io.io.poller.Poller` holding ``--sockets`` idle socket
pair ends; another pokes it after each wake-up. Prints the thread's CPU µs per wait, on
``flowno_io.EventLoop`` and on flowno's own loop. Where the poller's descriptor is registered with
the loop's selector on every wait, each wait pays the kernel's nested-epoll check of every socket
inside it. PYTHONPATH may point at another tree's ``packages/flowno-io/src`` to compare versions::

    PYTHONPATH=/tmp/base/packages/flowno-io/src .venv/bin/python bench/experiments/poller_wait_cost.py
    .venv/bin/python bench/experiments/poller_wait_cost.py --sockets 0 5000
"""

from __future__ import annotations

import argparse
import resource
import socket
import time

import flowno
from flowno import spawn

import flowno_io
from flowno_io.io.poller import READABLE, Poller


def cost(loop_class: type, sockets: int, waits: int) -> float:
    """CPU µs per wait of one task woken by pokes, with ``sockets`` idle sockets in the poller."""
    pairs = [socket.socketpair() for _ in range(sockets // 2)]
    poller = Poller(wakeable=True)
    for pair in pairs:
        for sock in pair:
            poller.register(sock.fileno(), READABLE)
    done = 0

    async def waiter() -> None:
        nonlocal done
        while done < waits:
            await poller.wait()
            poller.consume_pokes()
            done += 1

    async def main() -> float:
        task = await spawn(waiter())
        started = time.thread_time()
        poked = -1
        while done < waits:
            if poked != done:  # one poke per wait
                poked = done
                poller.poke()
            await flowno_io.sleep(0)
        elapsed = time.thread_time() - started
        await task.join()
        return elapsed / waits * 1e6

    try:
        return float(loop_class().run_until_complete(main(), join=True))
    finally:
        poller.close()
        for pair in pairs:
            for sock in pair:
                sock.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sockets", type=int, nargs="+", default=[0, 1000, 5000])
    parser.add_argument("--waits", type=int, default=2000)
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    for sockets in args.sockets:
        for name, loop_class in (
            ("flowno_io.EventLoop", flowno_io.EventLoop),
            ("flowno.EventLoop", flowno.EventLoop),
        ):
            micros = cost(loop_class, sockets, args.waits)
            print(f"{sockets:6d} sockets, {name:20s} {micros:8.1f} µs CPU per wait")


if __name__ == "__main__":
    main()
