"""Processes for the benchmark: pinned to a CPU, in their own process group, always reaped.

Every process the harness starts goes through :class:`ProcessRegistry`, which puts it in a new
session (so its whole process group can be signalled) and kills what is left on exit, on
Ctrl-C and on SIGTERM. CPU time and memory are read from ``/proc/<pid>``.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

#: The core the servers run on, and the core every load generator and client runs on.
SERVER_CPU = 0
LOAD_CPU = 1

_CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def raise_fd_limit(wanted: int = 65_536) -> int:
    """Raise this process's RLIMIT_NOFILE (inherited by its children); returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for target in (wanted, hard):
        try:
            new_hard = max(hard, target) if hard != resource.RLIM_INFINITY else hard
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, new_hard))
            return target
        except (ValueError, OSError):
            continue
    return soft


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def pinned(cpu: int, argv: Sequence[str]) -> list[str]:
    """``argv`` run by ``taskset`` on one CPU."""
    return ["taskset", "-c", str(cpu), *argv]


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads included (``/proc/<pid>/stat``)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS


def cpu_busy_seconds(cpu: int) -> float:
    """Seconds CPU ``cpu`` spent not idle since boot, for every process (``/proc/stat``).

    Compared with one process's :func:`cpu_seconds` over the same interval, it tells how much
    of the core other programs took: the noise of a shared machine.
    """
    prefix = f"cpu{cpu} "
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(prefix):
            # user nice system idle iowait irq softirq steal: all but idle and iowait are busy
            # (steal is time the hypervisor gave this core to another machine).
            fields = [int(value) for value in line.split()[1:9]]
            return (sum(fields) - fields[3] - fields[4]) / _CLOCK_TICKS
    raise ValueError(f"no cpu{cpu} in /proc/stat")


def wait_until_quiet(
    pids: Sequence[int], *, window: float = 0.1, busy_below: float = 0.05, timeout: float = 3.0
) -> float:
    """Wait until the processes ``pids`` together use less than ``busy_below`` of a core.

    A server may go on working after its load stopped (a producer finishing the events of streams
    whose clients left); measuring the next system meanwhile would charge that work to it.
    Returns the seconds waited (at most ``timeout``).
    """
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        before = sum(_cpu_or_zero(pid) for pid in pids)
        time.sleep(window)
        if sum(_cpu_or_zero(pid) for pid in pids) - before < busy_below * window:
            break
    return time.monotonic() - started


def _cpu_or_zero(pid: int) -> float:
    try:
        return cpu_seconds(pid)
    except (OSError, ValueError, IndexError):
        return 0.0


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB (``/proc/<pid>/statm``)."""
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE_KIB


@dataclass
class Managed:
    """A process started by the registry."""

    name: str
    popen: subprocess.Popen[Any]
    log_path: Path | None = None

    @property
    def pid(self) -> int:
        """The process id (the taskset'ed program itself: ``taskset`` execs it)."""
        return self.popen.pid

    def alive(self) -> bool:
        """True while the process runs."""
        return self.popen.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        """The end of the process's log, for error messages."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class ProcessRegistry:
    """Starts processes in their own groups and guarantees they are all gone at the end.

    Use as a context manager; :meth:`stop` one process early when a scenario is done with it.
    """

    log_dir: Path
    processes: list[Managed] = field(default_factory=list)

    def __enter__(self) -> ProcessRegistry:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stop_all()
        sys.exit(128 + signum)

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        stdin: int | IO[Any] | None = subprocess.DEVNULL,
        stdout: int | IO[Any] | None = None,
        env: dict[str, str] | None = None,
    ) -> Managed:
        """Start ``argv`` in a new session; its output goes to a log file unless ``stdout`` is given."""
        log_path = self.log_dir / f"{name}.log"
        log = log_path.open("ab")
        try:
            popen = subprocess.Popen(
                list(argv),
                stdin=stdin,
                stdout=stdout if stdout is not None else log,
                stderr=log,
                start_new_session=True,
                env=env,
            )
        finally:
            log.close()
        managed = Managed(name, popen, log_path)
        self.processes.append(managed)
        return managed

    def stop(self, managed: Managed, grace: float = 2.0) -> None:
        """SIGTERM the process group, then SIGKILL it after ``grace`` seconds."""
        if managed in self.processes:
            self.processes.remove(managed)
        _signal_group(managed.popen.pid, signal.SIGTERM)
        try:
            managed.popen.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        _signal_group(managed.popen.pid, signal.SIGKILL)  # leftovers of the group too
        with contextlib.suppress(subprocess.TimeoutExpired):
            managed.popen.wait(timeout=5.0)
        for stream in (managed.popen.stdin, managed.popen.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()

    def stop_all(self) -> None:
        """Stop every process still registered (newest first)."""
        for managed in reversed(list(self.processes)):
            self.stop(managed, grace=1.0)


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def listens_on(pid: int, port: int) -> bool:
    """True when process ``pid`` owns a listening TCP socket on ``port`` (from ``/proc``)."""
    inodes: set[str] = set()
    with contextlib.suppress(OSError):
        for entry in os.scandir(f"/proc/{pid}/fd"):
            with contextlib.suppress(OSError):
                target = os.readlink(entry.path)
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
    if not inodes:
        return False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as lines:
            next(lines)
            for line in lines:
                parts = line.split()
                local, state, inode = parts[1], parts[3], parts[9]
                if state == "0A" and int(local.rsplit(":", 1)[1], 16) == port and inode in inodes:
                    return True
    return False


def wait_for_port(managed: Managed, port: int, timeout: float = 20.0) -> None:
    """Wait until ``managed`` itself listens on ``port`` (not some other program on a reused port).

    Raises:
        RuntimeError: the process exited, or did not listen within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not managed.alive():
            raise RuntimeError(
                f"{managed.name} exited with {managed.popen.returncode}:\n{managed.log_tail()}"
            )
        if listens_on(managed.pid, port):
            return
        time.sleep(0.05)
    raise RuntimeError(f"{managed.name} did not listen on {port} within {timeout} s:\n{managed.log_tail()}")
