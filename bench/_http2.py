"""The HTTPS and HTTP/2 scenarios: ours against hypercorn (the Python server that speaks HTTP/2).

* ``https_hello``: ``GET /`` over TLS, HTTP/1.1 keep-alive, 50 connections, driven by wrk.
* ``h2_hello``: ``GET /`` over HTTP/2 by prior knowledge (cleartext), 10 connections with 10
  concurrent streams each (``h2load -c 10 -m 10``).

Both servers run the same hello on one process pinned to the server CPU, with a certificate the
run makes with ``openssl``; rounds are interleaved as for every other throughput scenario.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from _procs import LOAD_CPU, SERVER_CPU, free_port, pinned, wait_for_port
from _scenarios import APPS_DIR, OURS, Context, NoiseMeter, Sample, Server, interleaved, summarize, wrk_sample

__all__ = ["HYPERCORN", "h2_hello", "https_hello"]

HYPERCORN = "hypercorn"
_APPS = {OURS: "flowno_io_app.py", HYPERCORN: "hypercorn_app.py"}
#: h2load's connections and concurrent streams per connection.
H2_CONNECTIONS = 10
H2_STREAMS = 10


class _TlsServer(Server):
    """A bench server reached over HTTPS."""

    def url(self, path: str = "/") -> str:
        return f"https://127.0.0.1:{self.port}{path}"


def _certificate(directory: Path) -> tuple[Path, Path]:
    cert, key = directory / "bench.pem", directory / "bench.key"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
            "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    return cert, key


def _start(ctx: Context, name: str, tls: tuple[Path, Path] | None) -> Server:
    port = free_port()
    argv = [ctx.python, str(APPS_DIR / _APPS[name]), "--port", str(port)]
    if tls is not None:
        argv += ["--certfile", str(tls[0]), "--keyfile", str(tls[1])]
    process = ctx.registry.start(f"server-{name.replace('-', '_')}-{port}", pinned(SERVER_CPU, argv))
    wait_for_port(process, port)
    return (_TlsServer if tls is not None else Server)(name, process, port)


def _with_pair(ctx: Context, tls: bool, title: str, measure: Any) -> dict[str, Any]:
    missing = [tool for tool in ("openssl", "h2load") if shutil.which(tool) is None]
    if missing:
        raise RuntimeError(f"needs {' and '.join(missing)} (apt-get install openssl nghttp2-client)")
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as directory:
        certificate = _certificate(Path(directory)) if tls else None
        servers: dict[str, Server] = {}
        try:
            for name in (OURS, HYPERCORN):
                servers[name] = _start(ctx, name, certificate)
            pids = [server.process.pid for server in servers.values()]
            samples = interleaved(
                ctx, list(servers), lambda name, seconds: measure(servers[name], seconds), pids
            )
            return summarize(samples, "req/s", title)
        finally:
            for server in servers.values():
                ctx.registry.stop(server.process)


def https_hello(ctx: Context) -> dict[str, Any]:
    """``GET /`` over HTTPS (HTTP/1.1, keep-alive), 50 connections, wrk."""
    return _with_pair(
        ctx,
        True,
        "HTTPS hello, HTTP/1.1 keep-alive, 50 connections",
        lambda server, s: wrk_sample(server, "/", s),
    )


def h2load_sample(server: Server, duration: float) -> Sample:
    """Drive ``server`` with h2load; the rate is requests/s, the CPU the server's µs per request."""
    noise = NoiseMeter(server.process.pid)
    argv = pinned(
        LOAD_CPU,
        [
            "h2load", "-c", str(H2_CONNECTIONS), "-m", str(H2_STREAMS), "-D", str(max(1, round(duration))),
            server.url("/"),
        ],
    )  # fmt: skip
    completed = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60, check=False)
    spent, foreign = noise.stop()
    report = parse_h2load(completed.stdout)
    if completed.returncode != 0 or report["succeeded"] == 0:
        raise RuntimeError(
            f"h2load failed ({completed.returncode}): {completed.stdout[-1500:]}{completed.stderr}"
        )
    return Sample(
        rate=report["succeeded"] / report["seconds"],
        cpu_us=spent * 1e6 / max(report["succeeded"], 1),
        details={"requests": report["succeeded"], "failed": report["failed"], "foreign_cpu0": foreign},
    )


def parse_h2load(output: str) -> dict[str, Any]:
    """Seconds, succeeded and failed requests from h2load's summary.

    >>> parse_h2load("finished in 5.00s, 100.00 req/s, 1KB/s\\n"
    ...              "requests: 500 total, 500 started, 499 done, 499 succeeded, 1 failed, 1 errored")
    {'seconds': 5.0, 'succeeded': 499, 'failed': 1}
    """
    finished = re.search(r"finished in ([\d.]+)(m?s)", output)
    counts = re.search(r"requests: .*?(\d+) succeeded, (\d+) failed", output)
    if finished is None or counts is None:
        return {"seconds": 1.0, "succeeded": 0, "failed": 0}
    seconds = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    return {"seconds": seconds, "succeeded": int(counts.group(1)), "failed": int(counts.group(2))}


def h2_hello(ctx: Context) -> dict[str, Any]:
    """``GET /`` over HTTP/2 (prior knowledge), 10 connections x 10 streams, h2load."""
    return _with_pair(
        ctx,
        False,
        f"HTTP/2 hello, h2load -c {H2_CONNECTIONS} -m {H2_STREAMS} (prior knowledge)",
        h2load_sample,
    )
