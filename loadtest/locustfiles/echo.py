"""Echo service users on ``FastHttpUser``: weighted requests over /echo, /echo/raw and /bytes.

Every response is validated (``catch_response=True``): a wrong status or a body that does not
match what was sent is reported as a failure with a reason, not just counted.

    ECHO_URL=http://127.0.0.1:8080 locust -f loadtest/locustfiles/echo.py --headless -u 20 -r 10 -t 30s
"""

from __future__ import annotations

import json
import random

from _support import ECHO_URL
from locust import between, task
from locust.contrib.fasthttp import FastHttpUser

#: Body sizes /bytes/{n} is asked for (1 KiB and 64 KiB), grouped under one name in the stats.
BYTES_SIZES = (1024, 65536)


class EchoUser(FastHttpUser):
    """A client of the echo service: mostly small JSON round trips, some raw bodies and downloads."""

    host = ECHO_URL
    wait_time = between(0.01, 0.05)
    network_timeout = 10.0
    connection_timeout = 5.0

    @task(5)
    def echo_json(self) -> None:
        """POST a small JSON document to /echo; the service describes the request back."""
        payload = {"user": id(self), "n": random.randrange(1_000_000)}
        with self.client.post("/echo", json=payload, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}")
                return
            try:
                echoed = response.json()
            except ValueError:
                response.failure("response is not JSON")
                return
            if echoed.get("method") != "POST" or json.loads(echoed.get("body") or "null") != payload:
                response.failure("the echoed body differs from the one sent")

    @task(3)
    def echo_raw(self) -> None:
        """POST 512 bytes of text to /echo/raw; the same bytes must come back."""
        body = random.randbytes(256).hex()
        headers = {"Content-Type": "text/plain"}
        with self.client.post("/echo/raw", data=body, headers=headers, catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}")
            elif response.content != body.encode():
                response.failure(f"got {len(response.content or b'')} bytes back, not the 512 sent")

    @task(2)
    def download_bytes(self) -> None:
        """GET /bytes/{n}; exactly n bytes must arrive."""
        size = random.choice(BYTES_SIZES)
        with self.client.get(f"/bytes/{size}", name="/bytes/[n]", catch_response=True) as response:
            if response.status_code != 200:
                response.failure(f"status {response.status_code}")
            elif len(response.content or b"") != size:
                response.failure(f"got {len(response.content or b'')} bytes, expected {size}")
