"""``flowno_io.EventLoop`` runs its own loop: it looks at the sockets once per batch of task steps.

flowno's loop polls its selector before every task step; the subclass polls after each batch of
the tasks ready at the last poll, at most ``MAX_STEPS_BETWEEN_POLLS`` of them. These tests pin what
must not change with that: I/O is never starved by tasks that keep yielding (the number of steps
a ready socket waits is bounded, counted in steps, not in time), sleepers still wake among busy
tasks, a task queued from another thread wakes a loop blocked in its poll, the results of joins,
errors, cancellations and ``exit`` are flowno's, and an installed instrument sees every hook.
Each runs on flowno's loop too, as the reference.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

import flowno
import pytest
from flowno import spawn
from flowno.core.event_loop.instrumentation import EventLoopInstrument
from flowno.core.event_loop.primitives import exit as flowno_exit

import flowno_io
from flowno_io import sleep
from flowno_io.io.flowno_compat import (
    MAX_STEPS_BETWEEN_POLLS,
    TaskCancelled,
    cancel,
    handle_of,
    wait_readable,
)

LOOPS = {"flowno": flowno.EventLoop, "flowno_io": flowno_io.EventLoop}
#: Yields after which a busy task gives up (the read it waits for was starved): a hang bound only.
GIVE_UP = 200_000


@pytest.fixture
def pair() -> Any:
    left, right = socket.socketpair()
    left.setblocking(False)
    yield left, right
    left.close()
    right.close()


@pytest.mark.parametrize("kind", sorted(LOOPS))
def test_a_task_yielding_forever_does_not_starve_a_socket_read(kind: str, pair: Any) -> None:
    left, right = pair
    state = {"read": b"", "busy_yields_after_ready": -1}

    async def reader() -> None:
        await wait_readable(handle_of(left))
        state["read"] = left.recv(10)

    async def busy(ready: list[int]) -> None:
        for count in range(GIVE_UP):
            if state["read"]:
                state["busy_yields_after_ready"] = count - ready[0]
                return
            if count == 10:  # the reader is parked by now: make its socket ready
                right.send(b"x")
                ready[0] = count
            await sleep(0)

    async def main() -> None:
        read = await spawn(reader())
        await busy([0])
        await read.join()

    LOOPS[kind]().run_until_complete(main(), join=True)
    assert state["read"] == b"x"
    # One task yielding alone: the sockets are looked at after each of its steps.
    assert 0 <= state["busy_yields_after_ready"] <= 2


@pytest.mark.parametrize("kind", sorted(LOOPS))
def test_many_busy_tasks_let_a_ready_socket_in_within_a_bounded_number_of_steps(kind: str, pair: Any) -> None:
    left, right = pair
    busy_tasks = 100
    steps = {"total": 0, "at_ready": -1, "at_read": -1}

    async def reader() -> None:
        await wait_readable(handle_of(left))
        steps["at_read"] = steps["total"]

    async def busy() -> None:
        for _ in range(GIVE_UP // busy_tasks):
            if steps["at_read"] >= 0:
                return
            steps["total"] += 1
            if steps["total"] == 5 * busy_tasks:
                right.send(b"x")
                steps["at_ready"] = steps["total"]
            await sleep(0)

    async def main() -> None:
        read = await spawn(reader())
        handles = [await spawn(busy()) for _ in range(busy_tasks)]
        for handle in handles:
            await handle.join()
        await read.join()

    LOOPS[kind]().run_until_complete(main(), join=True)
    assert steps["at_read"] >= 0, "the socket read was starved"
    # Seen at the next poll (at most MAX_STEPS_BETWEEN_POLLS steps away), then queued behind the
    # busy tasks already ready.
    assert steps["at_read"] - steps["at_ready"] <= MAX_STEPS_BETWEEN_POLLS + busy_tasks + 1


@pytest.mark.parametrize("kind", sorted(LOOPS))
def test_a_sleeper_wakes_among_tasks_that_never_stop_yielding(kind: str) -> None:
    woke = {"sleeper": False, "gave_up": False}

    async def sleeper() -> None:
        await sleep(0.001)
        woke["sleeper"] = True

    async def busy() -> None:
        give_up = time.monotonic() + 30  # a hang bound only: the sleeper is due in 1 ms
        while not woke["sleeper"]:
            if time.monotonic() > give_up:
                woke["gave_up"] = True
                return
            await sleep(0)

    async def main() -> None:
        handles = [await spawn(sleeper())] + [await spawn(busy()) for _ in range(3)]
        for handle in handles:
            await handle.join()

    LOOPS[kind]().run_until_complete(main(), join=True)
    assert woke == {"sleeper": True, "gave_up": False}


@pytest.mark.parametrize("kind", sorted(LOOPS))
def test_a_task_queued_from_another_thread_wakes_a_loop_blocked_in_its_poll(kind: str, pair: Any) -> None:
    """The loop blocks in its poll (a task parked on a socket nobody writes); a thread queues a task
    (``create_task`` writes the loop's wake-up socket), which writes the socket."""
    left, right = pair
    loop = LOOPS[kind]()
    parked = threading.Event()

    async def writer() -> None:
        right.send(b"y")

    async def reader() -> bytes:
        parked.set()
        await wait_readable(handle_of(left))
        return bytes(left.recv(10))

    def other_thread() -> None:
        if parked.wait(timeout=30):
            loop.create_task(writer())

    thread = threading.Thread(target=other_thread)
    thread.start()
    try:
        assert loop.run_until_complete(reader(), join=True) == b"y"
    finally:
        thread.join(timeout=30)


@pytest.mark.parametrize("kind", sorted(LOOPS))
def test_joins_errors_cancellations_and_exit_are_flownos(kind: str) -> None:
    async def fails() -> None:
        await sleep(0)
        raise LookupError("boom")

    async def sleeps_long() -> None:
        await sleep(3600)

    async def returns() -> str:
        await sleep(0)
        return "value"

    async def main() -> list[str]:
        seen = []
        failing = await spawn(fails())
        try:
            await failing.join()
        except LookupError as exc:
            seen.append(f"error {exc}")
        victim = await spawn(sleeps_long())
        await sleep(0)
        cancel(victim)
        try:
            await victim.join()
        except TaskCancelled:
            seen.append("cancelled")
        seen.append(await (await spawn(returns())).join())
        return seen

    assert LOOPS[kind]().run_until_complete(main(), join=True) == ["error boom", "cancelled", "value"]

    async def exits() -> None:
        await spawn(sleeps_long())  # (exit ends the loop with this one still sleeping)
        await flowno_exit("early")

    assert LOOPS[kind]().run_until_complete(exits(), join=True) == "early"

    async def exits_with_error() -> None:
        await flowno_exit(exception=KeyError("stop"))

    with pytest.raises(KeyError):
        LOOPS[kind]().run_until_complete(exits_with_error(), join=True)

    async def root_fails() -> None:
        raise ValueError("root")

    with pytest.raises(ValueError, match="root"):
        LOOPS[kind]().run_until_complete(root_fails(), join=True)

    async def root_returns_first() -> str:
        await spawn(sleeps_long())
        return "root done"

    loop = LOOPS[kind]()
    assert (
        loop.run_until_complete(root_returns_first(), join=True, wait_for_spawned_tasks=False) == "root done"
    )
    assert len(loop.sleeping) == 1  # the spawned sleeper was left as it was


@pytest.mark.parametrize("kind", sorted(LOOPS))
def test_an_installed_instrument_sees_socket_readiness_completions_and_errors(kind: str, pair: Any) -> None:
    left, right = pair

    class Recording(EventLoopInstrument):
        def __init__(self) -> None:
            self.events: list[str] = []
            self.sends = 0

        def on_task_before_send(self, metadata: Any) -> None:
            self.sends += 1

        def on_socket_recv_ready(self, metadata: Any) -> None:
            self.events.append("recv ready")

        def on_task_completed(self, task: Any, result: Any) -> None:
            if result == "read":
                self.events.append("completed")

        def on_task_error(self, task: Any, exception: Exception) -> None:
            self.events.append(f"error {exception}")

    async def reader() -> str:
        await wait_readable(handle_of(left))
        left.recv(10)
        return "read"

    async def fails() -> None:
        raise LookupError("boom")

    async def main() -> None:
        read = await spawn(reader())
        await sleep(0)
        right.send(b"x")
        await read.join()
        failing = await spawn(fails())
        try:
            await failing.join()
        except LookupError:
            pass

    recording = Recording()
    with recording:
        LOOPS[kind]().run_until_complete(main(), join=True)
    assert recording.events == ["recv ready", "completed", "error boom"]
    assert recording.sends >= 8
