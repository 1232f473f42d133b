"""HTTP clients under load: ``--tasks`` tasks each sending ``GET <url>`` back to back over keep-alive.

One program for every client (``--kind``): ``flowno-io`` (``flowno_io.HttpClient``), ``aiohttp``
(``aiohttp.ClientSession``), ``httpx`` (``httpx.AsyncClient``) and ``seed`` (``flowno.io.HttpClient``
from flowno 0.1.19, which opens a new connection per request). Each kind imports only its own
library. Every client may keep ``--tasks`` connections alive (httpx's default keeps 20 only).

Requests are counted after ``--warmup`` seconds, for ``--duration`` seconds; the program prints
one JSON line::

    {"requests": ..., "seconds": ..., "errors": ..., "cpu_seconds": ...}

``cpu_seconds`` is this process's CPU time during the measured window.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from _payloads import HELLO

_EXPECTED = HELLO.encode()


@dataclass
class Counters:
    """Shared by the tasks of one run."""

    requests: int = 0
    errors: int = 0
    stop: bool = False


@dataclass
class Window:
    """What the measured window saw."""

    requests: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _measure(
    counters: Counters, warmup: float, duration: float, sleep: Callable[[float], Awaitable[object]]
) -> Window:
    await sleep(warmup)
    start_requests, start_time, start_cpu = counters.requests, time.monotonic(), _cpu()
    await sleep(duration)
    window = Window(counters.requests - start_requests, time.monotonic() - start_time, _cpu() - start_cpu)
    counters.stop = True
    return window


def run_flowno_io(url: str, tasks: int, warmup: float, duration: float) -> tuple[Window, int]:
    """``flowno_io.HttpClient`` on ``flowno_io.EventLoop`` (as the README's examples), one client
    shared by every task."""
    from flowno import spawn

    from flowno_io import EventLoop, HttpClient, HttpError, sleep

    counters = Counters()

    async def worker(client: HttpClient) -> None:
        while not counters.stop:
            try:
                response = await client.get(url)
            except HttpError:
                counters.errors += 1
                continue
            if response.status_code == 200 and response.body == _EXPECTED:
                counters.requests += 1
            else:
                counters.errors += 1

    async def main() -> Window:
        client = HttpClient(max_connections_per_host=max(tasks, 1))
        handles = [await spawn(worker(client)) for _ in range(tasks)]
        window = await _measure(counters, warmup, duration, sleep)
        for handle in handles:
            await handle.join()
        await client.aclose()
        return window

    window: Window = EventLoop().run_until_complete(main(), join=True)
    return window, counters.errors


def run_seed(url: str, tasks: int, warmup: float, duration: float) -> tuple[Window, int]:
    """The seed ``flowno.io.HttpClient`` (a new connection per request)."""
    from flowno import EventLoop, sleep, spawn
    from flowno.io import HttpClient

    counters = Counters()

    async def worker(client: HttpClient) -> None:
        while not counters.stop:
            try:
                response = await client.get(url)
            except OSError:
                counters.errors += 1
                continue
            if response.status_code == 200 and response.body == _EXPECTED:
                counters.requests += 1
            else:
                counters.errors += 1

    async def main() -> Window:
        client = HttpClient()
        handles = [await spawn(worker(client)) for _ in range(tasks)]
        window = await _measure(counters, warmup, duration, sleep)
        for handle in handles:
            await handle.join()
        return window

    window: Window = EventLoop().run_until_complete(main(), join=True)
    return window, counters.errors


def run_aiohttp(url: str, tasks: int, warmup: float, duration: float) -> tuple[Window, int]:
    """``aiohttp.ClientSession`` on asyncio."""
    import asyncio

    import aiohttp

    counters = Counters()

    async def worker(session: aiohttp.ClientSession) -> None:
        while not counters.stop:
            try:
                async with session.get(url) as response:
                    body = await response.read()
            except aiohttp.ClientError:
                counters.errors += 1
                continue
            if response.status == 200 and body == _EXPECTED:
                counters.requests += 1
            else:
                counters.errors += 1

    async def main() -> Window:
        connector = aiohttp.TCPConnector(limit=max(tasks, 1))
        async with aiohttp.ClientSession(connector=connector) as session:
            workers = [asyncio.create_task(worker(session)) for _ in range(tasks)]
            window = await _measure(counters, warmup, duration, asyncio.sleep)
            await asyncio.gather(*workers)
        return window

    return asyncio.run(main()), counters.errors


def run_httpx(url: str, tasks: int, warmup: float, duration: float) -> tuple[Window, int]:
    """``httpx.AsyncClient`` on asyncio, allowed to keep ``tasks`` connections alive."""
    import asyncio

    import httpx

    counters = Counters()

    async def worker(client: httpx.AsyncClient) -> None:
        while not counters.stop:
            try:
                response = await client.get(url)
            except httpx.HTTPError:
                counters.errors += 1
                continue
            if response.status_code == 200 and response.content == _EXPECTED:
                counters.requests += 1
            else:
                counters.errors += 1

    async def main() -> Window:
        limits = httpx.Limits(max_connections=max(tasks, 1), max_keepalive_connections=max(tasks, 1))
        async with httpx.AsyncClient(limits=limits) as client:
            workers = [asyncio.create_task(worker(client)) for _ in range(tasks)]
            window = await _measure(counters, warmup, duration, asyncio.sleep)
            await asyncio.gather(*workers)
        return window

    return asyncio.run(main()), counters.errors


RUNNERS: dict[str, Callable[[str, int, float, float], tuple[Window, int]]] = {
    "flowno-io": run_flowno_io,
    "aiohttp": run_aiohttp,
    "httpx": run_httpx,
    "seed": run_seed,
}


def main() -> None:
    """Parse the arguments, run one client, print the JSON result."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--kind", choices=sorted(RUNNERS), required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--tasks", type=int, default=1)
    parser.add_argument("--warmup", type=float, default=0.5)
    parser.add_argument("--duration", type=float, default=5.0)
    args = parser.parse_args()
    window, errors = RUNNERS[args.kind](args.url, args.tasks, args.warmup, args.duration)
    result = {
        "requests": window.requests,
        "seconds": window.seconds,
        "errors": errors,
        "cpu_seconds": window.cpu_seconds,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
