"""The load-generator scenario: ``python -m loadtest closed`` against Locust's ``FastHttpUser``.

Both generators run a closed loop of 50 users on ``GET /`` from one process on the load core
(CPU 1) against the same nginx (one worker, ``return 200``, no access log) on the server core
(CPU 0): nginx answers far faster than either generator can ask, so the rate is the generator's.
The rate counts from the moment every user runs to the end of the run; the CPU column is the
generator's own CPU µs per request over the same window (loadtest: its ``gen_cpu``; Locust:
``os.times()`` in ``apps/locust_hello.py``).

nginx is Debian's package (``.ci/run`` installs it; when it is missing and this runs as root
with apt-get, it is installed here, as ``tests/test_deploy_nginx.py`` does).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from _procs import LOAD_CPU, SERVER_CPU, free_port, pinned, wait_for_port
from _scenarios import APPS_DIR, BENCH_DIR, OURS, Context, Sample, Server, interleaved, summarize

LOCUST = "Locust FastHttpUser"
USERS = 50
#: Seconds beyond the measured window that Locust's own ``--run-time`` allows (start-up, spawning).
LOCUST_RUN_TIME_SLACK = 30.0

NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {run}/nginx.pid;
error_log {run}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {run}/client_body;
    proxy_temp_path {run}/proxy;
    fastcgi_temp_path {run}/fastcgi;
    uwsgi_temp_path {run}/uwsgi;
    scgi_temp_path {run}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        location / {{
            default_type text/plain;
            return 200 "Hello, world!";
        }}
    }}
}}
"""


def nginx_binary() -> str:
    """The nginx binary; installed with apt-get when missing (root only).

    Raises:
        RuntimeError: nginx is missing and cannot be installed here.
    """
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise RuntimeError("nginx is not installed, and apt-get cannot install it here")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "install", "-y", "-qq", "nginx"]
    if subprocess.run(install, env=env, capture_output=True, timeout=600, check=False).returncode != 0:
        update = ["apt-get", "-o", "DPkg::Lock::Timeout=300", "update", "-qq"]
        subprocess.run(update, env=env, capture_output=True, timeout=600, check=False)
        subprocess.run(install, env=env, capture_output=True, timeout=600, check=False)
    if not os.access("/usr/sbin/nginx", os.X_OK):
        raise RuntimeError("nginx could not be installed with apt-get")
    return "/usr/sbin/nginx"


def start_nginx(ctx: Context) -> Server:
    """One single-process nginx pinned to the server core, answering every path with the hello."""
    run_dir = Path(tempfile.mkdtemp(prefix="nginx-", dir=ctx.registry.log_dir))
    port = free_port()
    conf = run_dir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(run=run_dir, port=port))
    argv = [nginx_binary(), "-p", str(run_dir), "-c", str(conf), "-e", str(run_dir / "error.log")]
    process = ctx.registry.start(f"nginx-{port}", pinned(SERVER_CPU, argv))
    wait_for_port(process, port)
    return Server("nginx", process, port)


def loadtest_sample(ctx: Context, server: Server, seconds: float) -> Sample:
    """One closed-loop run of ``python -m loadtest``; its rate and CPU µs per request."""
    with tempfile.TemporaryDirectory(prefix="loadtest-", dir=ctx.registry.log_dir) as out:
        argv = [ctx.python, "-m", "loadtest", "closed", "-c", str(USERS), "-d", str(seconds)]
        argv += ["-o", out, "--stem", "loadtest", "-q", "--no-progress", server.url("/")]
        _run(argv, seconds)
        document = json.loads((Path(out) / "loadtest.json").read_text())
    summary = document["phases"][0]["summary"]
    requests = max(summary["requests"], 1)
    return Sample(
        rate=summary["throughput_rps"],
        cpu_us=summary["gen_cpu"] * summary["elapsed_s"] * 1e6 / requests,
        details={
            "requests": summary["requests"],
            "errors": summary["errors"],
            "p50_ms": summary["p50_ms"],
            "p99_ms": summary["p99_ms"],
            "generator_bound": summary["generator_bound"],
        },
    )


def locust_sample(ctx: Context, server: Server, seconds: float) -> Sample:
    """One headless Locust run of ``apps/locust_hello.py``; its rate and CPU µs per request."""
    with tempfile.TemporaryDirectory(prefix="locust-", dir=ctx.registry.log_dir) as out:
        result_path = Path(out) / "result.json"
        locust = str(Path(ctx.python).with_name("locust"))
        argv = [locust, "-f", str(APPS_DIR / "locust_hello.py"), "--headless", "-u", str(USERS)]
        # --run-time only bounds a run that the locustfile failed to stop after ``seconds``.
        argv += ["-r", str(USERS), "--run-time", f"{math.ceil(seconds + LOCUST_RUN_TIME_SLACK)}s"]
        argv += ["--host", server.url(""), "--only-summary", "--loglevel", "WARNING"]
        env = {"BENCH_LOCUST_OUT": str(result_path), "BENCH_LOCUST_SECONDS": str(seconds)}
        _run(argv, seconds + LOCUST_RUN_TIME_SLACK, env)
        result = json.loads(result_path.read_text())
    requests = max(result["requests"], 1)
    return Sample(
        rate=result["requests"] / result["seconds"],
        cpu_us=result["cpu_seconds"] * 1e6 / requests,
        details={"requests": result["requests"], "errors": result["failures"]},
    )


def _run(argv: list[str], seconds: float, env: dict[str, str] | None = None) -> None:
    completed = subprocess.run(
        pinned(LOAD_CPU, argv),
        capture_output=True,
        text=True,
        timeout=seconds + 60,
        check=False,
        start_new_session=True,
        cwd=BENCH_DIR.parent,
        env={**os.environ, **(env or {})},
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{argv[:4]} failed ({completed.returncode}): {completed.stderr[-2000:]}")


def loadgen_closed(ctx: Context) -> dict[str, Any]:
    """Load generators: ``python -m loadtest closed`` vs Locust FastHttpUser, 50 users, nginx target."""
    nginx = start_nginx(ctx)
    try:
        measures = {OURS: loadtest_sample, LOCUST: locust_sample}
        samples = interleaved(
            ctx,
            list(measures),
            lambda name, seconds: measures[name](ctx, nginx, seconds),
            [nginx.process.pid],
        )
    finally:
        ctx.registry.stop(nginx.process)
    return summarize(
        samples,
        "req/s",
        f"load generator, closed loop, {USERS} users, one core, against nginx",
        "CPU is the generator's µs per request; nginx (one worker) on CPU 0, the generator on CPU 1. "
        "Ours is `python -m loadtest closed` (HttpClient on the flowno loop).",
    )
