"""Profile one bench server under one load with py-spy; print where its CPU time goes.

Usage::

    uv pip install --python .venv/bin/python py-spy      # once; not a project dependency
    python bench/profile_server.py --server flowno-io --load sse:100
    python bench/profile_server.py --server flowno-io --load idle:10000   # hello keep-alive + idle conns
    python bench/profile_server.py --server aiohttp --load close --seconds 10

Loads: ``keepalive`` and ``close`` (wrk on ``GET /``), ``echo`` (wrk ``POST /echo``), ``sse:N``
(the SSE client with N streams), ``idle:N`` (N idle keep-alive connections, then keep-alive
wrk). The server runs pinned to CPU 0, the load and py-spy to CPU 1, as in ``run.py``. The
collapsed stacks are kept (``--out``) for flame graphs; the summary lists the lines with the
most samples of their own (a syscall shows up as the Python line that made it) and the
functions with the most samples including their callees.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import time
from pathlib import Path

from _procs import LOAD_CPU, ProcessRegistry, cpu_seconds, pinned, raise_fd_limit
from _scenarios import APPS_DIR, BENCH_DIR, SERVER_APPS, Context, Settings, start_server
from _wrk import request_script

from _payloads import ECHO_BODY  # isort: skip  (bench/apps is on sys.path once _scenarios is imported)


def load_command(load: str, port: int, seconds: float, python: str) -> list[str]:
    """The load generator's command line for ``load`` (see the module docstring)."""
    url = f"http://127.0.0.1:{port}"
    duration = f"-d{int(seconds) + 3}s"
    if load.startswith("sse:"):
        clients = load.split(":", 1)[1]
        argv = [python, str(BENCH_DIR / "sse_client.py"), "--port", str(port), "--clients", clients]
        return pinned(LOAD_CPU, [*argv, "--duration", str(seconds + 3)])
    if load in ("keepalive", "close") or load.startswith("idle:"):
        headers = ["-H", "Connection: close"] if load == "close" else []
        return pinned(LOAD_CPU, ["wrk", "-t1", "-c50", duration, *headers, f"{url}/"])
    if load == "echo":
        script = Path("/tmp") / f"bench-profile-echo-{port}.lua"
        script.write_text(request_script("POST", ECHO_BODY, {"Content-Type": "application/json"}))
        return pinned(LOAD_CPU, ["wrk", "-t1", "-c50", duration, "-s", str(script), f"{url}/echo"])
    raise SystemExit(f"unknown load {load!r}")


def summarize(collapsed: Path, top: int) -> str:
    """Top self and inclusive entries of a py-spy ``--format raw`` file."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        total += count
        frames = stack.split(";")
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    lines = [f"{total} samples", "", "own samples (the line itself, syscalls included):"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top)]
    lines += ["", "inclusive samples (with callees):"]
    lines += [f"  {100 * n / total:5.1f}%  {frame}" for frame, n in inclusive.most_common(top * 2)]
    return "\n".join(lines)


def main() -> None:
    """Start the server and the load, record with py-spy, print the summary."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--server", choices=sorted(SERVER_APPS), default="flowno-io")
    parser.add_argument("--load", default="keepalive", help="keepalive, close, echo, sse:N or idle:N")
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds recorded")
    parser.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--out", type=Path, help="collapsed stacks (default /tmp/bench-profile-*.txt)")
    args = parser.parse_args()
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        raise SystemExit("py-spy is missing: uv pip install --python .venv/bin/python py-spy")
    raise_fd_limit()
    label = args.load.replace(":", "")
    out = args.out or Path("/tmp") / f"bench-profile-{args.server.split()[0]}-{label}.txt"
    with ProcessRegistry(Path("/tmp/flowno-bench-logs/profile")) as registry:
        ctx = Context(registry, Settings())
        server = start_server(ctx, args.server)
        if args.load.startswith("idle:"):
            count = args.load.split(":", 1)[1]
            holder_argv = [ctx.python, str(BENCH_DIR / "idle_client.py"), "--port", str(server.port)]
            holder = registry.start(
                "profile-idle-holder",
                pinned(LOAD_CPU, [*holder_argv, "--count", count]),
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
            )
            if holder.popen.stdout is not None:
                print(holder.popen.stdout.readline().decode().strip(), file=sys.stderr)
        load = subprocess.Popen(
            load_command(args.load, server.port, args.seconds, ctx.python),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        try:
            time.sleep(1.5)  # past the load's start-up
            before = cpu_seconds(server.process.pid)
            record = [py_spy, "record", "-p", str(server.process.pid), "-d", str(int(args.seconds))]
            record += ["-r", str(args.rate), "--format", "raw", "--nonblocking", "-o", str(out)]
            subprocess.run(pinned(LOAD_CPU, record), capture_output=True, check=True)
            spent = cpu_seconds(server.process.pid) - before
        finally:
            load.kill()
            load.wait()
    print(f"{args.server} under {args.load}: server CPU {100 * spent / args.seconds:.0f}% of one core")
    print(f"collapsed stacks: {out} (app folder {APPS_DIR})")
    print(summarize(out, args.top))


if __name__ == "__main__":
    main()
