"""Reproducers of the flowno 0.1.19 event-loop limits that flowno-io designs around.

Each test asserts flowno's *current* behaviour. When one fails after a flowno upgrade, the limit is
gone upstream: drop the matching workaround (see docs/flowno-upstream.md).
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
import time

from flowno import EventLoop, SocketHandle, sleep, spawn
from flowno import socket as flowno_socket
from flowno.core.event_loop import selectors as flowno_selectors
from flowno.core.event_loop.tasks import TaskCancelled
from helpers import until


def test_finished_tasks_are_kept_forever() -> None:
    loop = EventLoop()

    async def child() -> None:
        return None

    async def main() -> None:
        for _ in range(500):
            await spawn(child())
        await sleep(0.01)

    loop.run_until_complete(main())
    assert len(loop.finished) >= 500  # flowno-io reuses worker tasks instead


def test_socket_waiters_are_a_list_scanned_on_removal() -> None:
    loop = EventLoop()
    assert isinstance(loop.waiting_on_network, list)  # list.remove(): O(waiting tasks) per wake-up


def test_every_socket_wait_registers_and_unregisters() -> None:
    left, right = socket.socketpair()
    handle = SocketHandle(right)
    right.setblocking(False)
    seen: list[bool] = []

    async def main() -> None:
        left.send(b"x")
        await handle.recv(1)
        seen.append(right in [key.fileobj for key in flowno_selectors.sel.get_map().values()])

    EventLoop().run_until_complete(main())
    left.close()
    right.close()
    assert seen == [False]  # the next wait registers again: two epoll_ctl calls per wait


def test_one_selector_for_the_whole_process() -> None:
    assert not hasattr(EventLoop(), "selector")
    assert isinstance(flowno_selectors.sel, flowno_selectors.selectors.BaseSelector)


def test_flowno_sockets_do_not_set_tcp_nodelay() -> None:
    sock = flowno_socket()
    try:
        assert sock.socket.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
    finally:
        sock.socket.close()


def test_cancel_leaves_a_stale_sleep_that_resumes_the_task_later() -> None:
    log: list[str] = []

    def stale_resume() -> bool:
        return any(isinstance(e, RuntimeError) for e in loop.exceptions.values())

    async def sleeper() -> None:
        try:
            await sleep(0.2)
        except TaskCancelled:
            started = time.monotonic()
            await sleep(1.0)  # woken early by the stale entry of the cancelled sleep
            log.append(f"{time.monotonic() - started:.2f}")

    async def main() -> None:
        task = await spawn(sleeper())
        await sleep(0.05)  # the sleeper runs first (FIFO) and parks in its 0.2 s sleep
        task.cancel()
        # The 1.0 s sleep's own entry later resumes the finished task: an error in the loop.
        await until(stale_resume, message="the stale sleep entry never resumed the finished task")

    loop = EventLoop()
    loop.run_until_complete(main())
    # Woken ~0.15 s after the cancel by the stale 0.2 s entry; a normal wake takes at least 1.0 s.
    assert log and float(log[0]) < 1.0
    assert stale_resume()


def test_sigterm_is_ignored_by_run_until_complete() -> None:
    code = textwrap.dedent(
        """
        from flowno import EventLoop, sleep
        async def main():
            print("ready", flush=True)  # printed by a task: the loop runs (its handlers are set)
            await sleep(2.0)
        EventLoop().run_until_complete(main())
        print("finished", flush=True)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "ready"
    started = time.monotonic()
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=10)
    assert process.returncode == 0 and "finished" in out  # it slept on: SIGTERM only logs
    assert time.monotonic() - started > 1.5
