"""The image's HEALTHCHECK: GET /health of the service this container runs, on its port.

The service is the module PID 1 runs (``python -m echo_service`` or ``stream_service``: the
entrypoint execs it), and its port ``ECHO_PORT`` / ``STREAM_PORT``: set the port with those
variables rather than ``--port`` so that this check follows. Exits 0 when the service is healthy.
"""

import json
import os
import sys
import urllib.request


def running_service() -> str:
    try:
        with open("/proc/1/cmdline", "rb") as cmdline:
            argv = cmdline.read().decode().split("\0")
        return argv[argv.index("-m") + 1]
    except (OSError, ValueError, IndexError):
        return os.environ.get("SERVICE", "echo_service")


port = os.environ["STREAM_PORT" if running_service() == "stream_service" else "ECHO_PORT"]
try:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
        healthy = json.load(response).get("status") == "ok"
except (OSError, ValueError):
    healthy = False
sys.exit(0 if healthy else 1)
