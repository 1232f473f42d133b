"""Services as subprocesses for tests: start on an ephemeral port, read the URL, always stop."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

STARTUP_TIMEOUT = 20.0
_LISTENING = re.compile(r"^listening on (https?://\S+)$", re.MULTILINE)


@dataclass
class ServiceProcess:
    """A service running as a subprocess; stdout and stderr go to files (never a full pipe)."""

    process: subprocess.Popen[bytes]
    url: str
    stdout: Path
    stderr: Path

    def stdout_text(self) -> str:
        return self.stdout.read_text(errors="replace")

    def stderr_text(self) -> str:
        return self.stderr.read_text(errors="replace")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it is still there after 10 s; never leaves it running."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_service(
    module: str, directory: Path, *args: str, env: dict[str, str] | None = None, port_args: bool = True
) -> ServiceProcess:
    """Start ``python -m module --host 127.0.0.1 --port 0 *args`` and wait for its listening line."""
    directory.mkdir(parents=True, exist_ok=True)
    stdout, stderr = directory / "stdout.log", directory / "stderr.log"
    command = [sys.executable, "-m", module]
    if port_args:
        command += ["--host", "127.0.0.1", "--port", "0"]
    command += list(args)
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    with stdout.open("wb") as out, stderr.open("wb") as err:
        process = subprocess.Popen(command, stdout=out, stderr=err, env=full_env)
    service = ServiceProcess(process, "", stdout, stderr)
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        match = _LISTENING.search(service.stdout_text())
        if match:
            service.url = match.group(1)
            return service
        if process.poll() is not None:
            break
        time.sleep(0.02)
    service.stop()
    raise AssertionError(f"{module} did not start: exit {process.poll()}\n{service.stderr_text()}")


def wait_exit(process: subprocess.Popen[bytes], timeout: float) -> int:
    """The exit code, failing the test (and killing it) if the process outlives ``timeout``."""
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)
        raise AssertionError(f"process {process.pid} did not exit within {timeout} s") from None
