"""``scripts/loadtest.sh`` (the ``make loadtest`` target), shrunk to a few seconds.

It must start the services, write every report under ``REPORTS/<timestamp>/``, print the summary
and the report paths, and leave no service running.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_make_loadtest_script_runs_end_to_end_and_cleans_up(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "REPORTS": str(tmp_path),
        "DURATION": "0.5",
        "CONCURRENCY": "1,4",
        "RATES": "100",
        "OPEN_CONCURRENCY": "8",
        "SSE_CONCURRENCY": "4",
        "LLM_CONCURRENCY": "2",
        "LOCUST_USERS": "4",
    }
    done = subprocess.run(
        ["bash", str(ROOT / "scripts" / "loadtest.sh")],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,  # the script finds the repository by itself
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (out,) = tmp_path.iterdir()
    files = ("loadtest.json", "loadtest.csv", "loadtest_timeline.csv", "loadtest.html", "summary.txt")
    for name in ("closed", "open", "sse", "llm"):
        for file in files:
            assert (out / name / file).is_file(), (name, file)
    assert (out / "locust" / "locust_stats.csv").is_file()
    assert (out / "locust" / "locust.html").is_file()
    summary = (out / "summary.txt").read_text()
    assert "echo mix: closed loop on" in summary and "Aggregated" in summary
    assert "summary" in done.stdout and str(out / "closed" / "loadtest.html") in done.stdout
    pid_files = sorted((out / "logs").glob("*.pid"))
    assert [p.name for p in pid_files] == ["echo.pid", "stream.pid"]
    for pid_file in pid_files:  # the services were stopped and reaped
        assert not Path(f"/proc/{int(pid_file.read_text())}").exists()
