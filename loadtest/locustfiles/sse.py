"""An SSE user: opens event streams on the stream service and reports how they went.

Each stream is reported to Locust as request events of type ``SSE``:

* ``/events ttfe``: time from sending the request to the first event;
* ``/events stream``: the whole stream, response length = events received; a stream that breaks,
  has the wrong status, or loses events is a failure.

    STREAM_URL=http://127.0.0.1:8081 locust -f loadtest/locustfiles/sse.py --headless -u 50 -r 25 -t 30s
"""

from __future__ import annotations

import json
import time

from _support import STREAM_URL, iter_sse_data, now, report
from locust import constant, task
from locust.contrib.fasthttp import FastHttpUser

#: Events per stream, and milliseconds between them.
EVENTS_PER_STREAM = 20
INTERVAL_MS = 20


class StreamGapError(Exception):
    """A stream ended early or skipped an event number."""


class SSEUser(FastHttpUser):
    """Holds one event stream open at a time, back to back."""

    host = STREAM_URL
    wait_time = constant(0)
    network_timeout = 10.0
    connection_timeout = 5.0

    @task
    def numbered_events(self) -> None:
        """Read ``/events`` to its end: every event number once, in order."""
        path = f"/events?count={EVENTS_PER_STREAM}&interval_ms={INTERVAL_MS}"
        started, t0 = now()
        received = 0
        try:
            response = self.client.get(
                path,
                name="/events open",
                stream=True,
                headers={"Accept": "text/event-stream", "Accept-Encoding": "identity"},
            )
            if response.status_code != 200:
                raise StreamGapError(f"status {response.status_code}")
            for data in iter_sse_data(response.stream):
                received += 1
                if received == 1:
                    report(self.environment, "SSE", "/events ttfe", started, time.perf_counter() - t0)
                if json.loads(data).get("n") != received:
                    raise StreamGapError(f"event {received} carried n={json.loads(data).get('n')}")
            if received != EVENTS_PER_STREAM:
                raise StreamGapError(f"stream ended after {received} of {EVENTS_PER_STREAM} events")
        except Exception as exc:  # every failure is reported, then the user goes on
            report(
                self.environment, "SSE", "/events stream", started, time.perf_counter() - t0, received, exc
            )
            return
        report(self.environment, "SSE", "/events stream", started, time.perf_counter() - t0, received)
