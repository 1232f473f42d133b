"""``scripts/run-services.sh`` (``make run-services``) never leaves a service running: closing the
terminal it runs in (SIGHUP, and every later write failing) stops both services, as Ctrl-C does.
Also ``make help`` without colour codes in a pipe, and ``run-services``' runtime-only install."""

from __future__ import annotations

import errno
import fcntl
import os
import re
import select
import signal
import socket
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "run-services.sh"
TIMEOUT = 60.0


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"  # a zombie has stopped
    except FileNotFoundError:
        return True


def _wait_until(condition: object, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _start_under_pty(ports: list[int]) -> tuple[subprocess.Popen[bytes], int]:
    """The script as the session leader of a new pseudo-terminal, as in a terminal window."""
    master, slave = os.openpty()

    def take_terminal() -> None:  # runs in the child after setsid (start_new_session)
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    env = {
        **os.environ,
        "PY": sys.executable,
        "ECHO_PORT": str(ports[0]),
        "STREAM_PORT": str(ports[1]),
        "ACCESS_LOG": "0",
    }
    process = subprocess.Popen(
        ["bash", str(SCRIPT)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        cwd=ROOT,
        env=env,
        start_new_session=True,
        preexec_fn=take_terminal,
    )
    os.close(slave)
    return process, master


def _read_until(master: int, marker: bytes) -> bytes:
    output = b""
    deadline = time.monotonic() + TIMEOUT
    while marker not in output:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"no {marker!r} in the script's output:\n{output.decode(errors='replace')}"
        ready, _, _ = select.select([master], [], [], remaining)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError as exc:  # EIO: the script closed the terminal (exited)
                assert exc.errno == errno.EIO
                chunk = b""
            assert chunk, f"the script exited early:\n{output.decode(errors='replace')}"
            output += chunk
    return output


@pytest.mark.parametrize("how", ["close the terminal", "SIGHUP"])
def test_closing_the_terminal_stops_both_services(how: str) -> None:
    ports = _free_ports(2)
    process, master = _start_under_pty(ports)
    service_pids: list[int] = []
    try:
        output = _read_until(master, b"Press Ctrl-C to stop both.").decode(errors="replace")
        service_pids = [int(pid) for pid in re.findall(r"\(pid (\d+);", output)]
        assert len(service_pids) == 2, output
        assert not any(_port_free(port) for port in ports)  # both listen
        if how == "SIGHUP":  # as a shell forwards it when its window closes; the pty stays open
            process.send_signal(signal.SIGHUP)
            _read_until(master, b"run-services: stopped")
        os.close(master)  # closing the pty hangs the terminal up: SIGHUP, and writes fail (EIO)
        master = -1
        process.wait(TIMEOUT)
        for pid in service_pids:
            _wait_until(lambda pid=pid: _gone(pid), f"service pid {pid} to exit")
        for port in ports:
            _wait_until(lambda port=port: _port_free(port), f"port {port} to be free")
    finally:
        if master >= 0:
            os.close(master)
        if process.poll() is None:
            process.kill()
            process.wait(10)
        for pid in service_pids:  # never leave one behind, even when the test fails
            if not _gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_make_help_has_no_colour_codes_in_a_pipe() -> None:
    result = subprocess.run(
        ["make", "--no-print-directory", "help"], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "\033[" not in result.stdout
    assert re.search(r"^  test\s+Run the test suite", result.stdout, re.MULTILINE), result.stdout
    assert re.search(r"^  install-runtime\s+Install only", result.stdout, re.MULTILINE), result.stdout
    assert "run-services" in result.stdout


def test_make_help_is_coloured_on_a_terminal() -> None:
    master, slave = os.openpty()
    try:
        process = subprocess.run(
            ["make", "--no-print-directory", "help"],
            cwd=ROOT,
            stdout=slave,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        assert process.returncode == 0
        os.close(slave)
        slave = -1
        output = b""
        while select.select([master], [], [], 1)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:
                break
            if not chunk:
                break
            output += chunk
        assert b"\033[36m" in output
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)


def test_run_services_installs_the_runtime_only() -> None:
    """``make run-services`` syncs without the dev group (pytest, mypy, ...) and loadtest's extras."""
    result = subprocess.run(
        ["make", "--dry-run", "--always-make", "--no-print-directory", "run-services"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    sync = [line for line in result.stdout.splitlines() if " sync " in line]
    assert sync, result.stdout
    assert all("--no-default-groups" in line for line in sync), sync
    assert all("--all-packages" not in line for line in sync), sync
    assert "--package echo-service" in sync[0] and "--package stream-service" in sync[0]
