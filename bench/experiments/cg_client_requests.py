"""Send N GETs with one ``flowno_io.HttpClient`` from T tasks, then exit: for ``cg_client.sh``.

python cg_client_requests.py URL N T
"""

from __future__ import annotations

import sys

from flowno import spawn

from flowno_io import EventLoop, HttpClient

url, count, tasks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])


async def main() -> None:
    """``count`` requests split over ``tasks`` tasks sharing one client."""
    async with HttpClient() as client:

        async def worker(requests: int) -> None:
            for _ in range(requests):
                response = await client.get(url)
                if response.status_code != 200:
                    raise SystemExit(f"unexpected status {response.status_code}")

        handles = [await spawn(worker(count // tasks)) for _ in range(tasks)]
        for handle in handles:
            await handle.join()


EventLoop().run_until_complete(main(), join=True)
