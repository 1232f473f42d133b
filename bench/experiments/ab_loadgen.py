"""Same-session A/B of the load generator by its own CPU µs per request, as the bench row counts it::

    .venv/bin/python bench/experiments/ab_loadgen.py URL BASE_TREE [seconds] [rounds]

Runs ``python -m loadtest closed`` (50 users, pinned to CPU 1; start nginx on CPU 0 with
``cg_loadgen_nginx.sh PORT fast``) alternately from BASE_TREE (``git archive <rev>
packages/flowno-io/src loadtest | tar -x -C BASE_TREE``) and from this tree, and prints each run's
``gen_cpu`` µs per request (the thread's CPU over the measured window, start-up excluded, as in
``bench/_loadgen.py``) and rate, then the medians. Rates are noisy on the shared machine; the CPU
per request is steadier, but compare only runs of one session.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def one(url: str, seconds: float, tree: Path | None) -> tuple[float, float]:
    """One run: (CPU µs per request, requests per second)."""
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = f"{tree}/packages/flowno-io/src:{tree}/loadtest/src"
    with tempfile.TemporaryDirectory() as out:
        argv = ["taskset", "-c", "1", str(ROOT / ".venv/bin/python"), "-m", "loadtest", "closed", "-c", "50"]
        argv += ["-d", str(seconds), "-o", out, "--stem", "run", "-q", "--no-progress", url]
        subprocess.run(argv, check=True, capture_output=True, env=env, cwd=ROOT)
        summary = json.loads((Path(out) / "run.json").read_text())["phases"][0]["summary"]
    requests = max(summary["requests"], 1)
    return summary["gen_cpu"] * summary["elapsed_s"] * 1e6 / requests, summary["throughput_rps"]


def main() -> None:
    url, base = sys.argv[1], Path(sys.argv[2])
    seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 3.0
    rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    results: dict[str, list[tuple[float, float]]] = {"base": [], "this": []}
    for _ in range(rounds):
        for name, tree in (("base", base), ("this", None)):
            cpu, rate = one(url, seconds, tree)
            results[name].append((cpu, rate))
            print(f"{name}: {cpu:6.1f} µs/request {rate:9.0f} req/s", flush=True)
    for name, runs in results.items():
        cpu = statistics.median(run[0] for run in runs)
        rate = statistics.median(run[1] for run in runs)
        print(f"median {name}: {cpu:6.1f} µs/request {rate:9.0f} req/s")


if __name__ == "__main__":
    main()
