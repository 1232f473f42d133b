"""Cancelling a task while it is inside ``HttpClient`` (issue 11).

Every test runs twice: with flowno's own ``TaskHandle.cancel()`` (which only queues
``TaskCancelled``, leaving the task's loop records for the wait it was in to clean up) and with
``flowno_io.cancel()`` (which removes the records first and throws at the exact await point, even
one that is not a wait, such as the start of the timer task). After each cancel: the loop did not
die, the connection in flight was closed (never pooled half-read), its pool slot is free, a
follow-up request on the same client works, ``run_until_complete`` returns, and no descriptor is
left open.

Servers are the stdlib ``ThreadingHTTPServer`` (``client_servers.py``) with routes that hold the
response until the test releases it, so a request is known to be in flight without sleeping.
"""

from __future__ import annotations

import gc
import logging
import os
import random
import shutil
import socket
import threading
import time
import types
from collections import Counter
from collections.abc import Callable, Coroutine, Generator, Iterator
from pathlib import Path
from typing import Any

import flowno
import pytest
from client_servers import Handler, RawServer, StdlibServer
from flowno import spawn
from test_client_tls import TlsServer, make_certificate

import flowno_io
from flowno_io import HttpClient, Timeout
from flowno_io.io.flowno_compat import TaskCancelled, TaskHandle
from flowno_io.io.wakeup import Wakeup

#: Bounds a hang (a loop that never returns); never reached when things work.
HANG_LIMIT = 30.0


def _stock_cancel(task: TaskHandle[Any]) -> None:
    task.cancel()


def _flowno_io_cancel(task: TaskHandle[Any]) -> None:
    flowno_io.cancel(task)


Cancel = Callable[[TaskHandle[Any]], None]


@pytest.fixture(params=["TaskHandle.cancel", "flowno_io.cancel"])
def cancel(request: pytest.FixtureRequest) -> Cancel:
    return _stock_cancel if request.param == "TaskHandle.cancel" else _flowno_io_cancel


# -- servers ------------------------------------------------------------------------------------


class Hold:
    """Routes on a ``StdlibServer`` that answer only once :attr:`release` is set.

    ``/hold``: counts the request in :attr:`arrivals`, waits, answers ``late``.
    ``/sse-hold``: sends one event, counts, waits, sends ``[DONE]``.
    ``/redirect-hold``: a 302 whose body is held after its first chunk.
    ``/slow?ms=N``: answers after N ms (for the random test; not a synchronisation).
    """

    def __init__(self, server: StdlibServer) -> None:
        self.server = server
        self.release = threading.Event()
        self._lock = threading.Lock()
        self.arrivals = 0
        server.routes["/hold"] = self._hold
        server.routes["/sse-hold"] = self._sse_hold
        server.routes["/redirect-hold"] = self._redirect_hold
        server.routes["/slow"] = self._slow

    def _arrived(self) -> None:
        with self._lock:
            self.arrivals += 1

    def _hold(self, handler: Handler) -> None:
        self._arrived()
        self.release.wait(HANG_LIMIT)
        handler.send_body(b"late", content_type="text/plain")

    def _sse_hold(self, handler: Handler) -> None:
        handler.start_chunked("text/event-stream")
        handler.send_chunk(b'data: {"n": 1}\n\n')
        self._arrived()
        self.release.wait(HANG_LIMIT)
        handler.send_chunk(b"data: [DONE]\n\n")
        handler.end_chunked()

    def _redirect_hold(self, handler: Handler) -> None:
        handler.start_chunked("text/plain", status=302, headers=[("Location", "/echo")])
        handler.send_chunk(b"moved")
        self._arrived()
        self.release.wait(HANG_LIMIT)
        handler.end_chunked()

    def _slow(self, handler: Handler) -> None:
        time.sleep(int(handler.query.get("ms", "0")) / 1000)
        handler.send_body(b"slow", content_type="text/plain")

    def wait_server_side_closed(self) -> None:
        """Wait until the server closed every connection (so descriptors can be counted)."""
        _wait_blocking(lambda: not self.server._sockets, "the server to close its connections")


@pytest.fixture
def hold() -> Iterator[Hold]:
    server = StdlibServer()
    held = Hold(server)
    server.start()
    yield held
    held.release.set()
    server.stop()


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command")
    return make_certificate(tmp_path_factory.mktemp("tls"), "local", "DNS:localhost,IP:127.0.0.1")


@pytest.fixture
def tls_hold(certificate: tuple[Path, Path]) -> Iterator[Hold]:
    server = TlsServer(*certificate)
    held = Hold(server)
    server.start()
    yield held
    held.release.set()
    server.stop()


# -- helpers ------------------------------------------------------------------------------------


def _wait_blocking(
    predicate: Callable[[], bool], what: str, between: Callable[[], object] = lambda: None
) -> None:
    """Wait in the test's thread until ``predicate()`` (servers close sockets in their threads)."""
    deadline = time.monotonic() + HANG_LIMIT / 3
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        between()
        time.sleep(0.01)


async def wait_for(predicate: Callable[[], bool], what: str) -> None:
    """Poll ``predicate`` on the loop (other tasks run meanwhile); fail after ``HANG_LIMIT``."""
    deadline = time.monotonic() + HANG_LIMIT
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await flowno_io.sleep(0.002)


def open_fds(ignore: frozenset[int] = frozenset()) -> Counter[str]:
    """This process's descriptors by what they are (every socket counts as ``socket``)."""
    kinds: Counter[str] = Counter()
    for name in os.listdir("/proc/self/fd"):
        if int(name) in ignore:
            continue
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # the listing's own descriptor, closed by now
        kinds["socket" if target.startswith("socket:") else target] += 1
    return kinds


def run_checked(main: Callable[[], Coroutine[Any, Any, Any]], settle: Callable[[], None]) -> Any:
    """``run_until_complete(main(), join=True)`` on a stock flowno loop, checking that it returns
    and that no descriptor is left open.

    The loop runs in a thread so that a hang fails the test instead of blocking the suite; an
    exception that kills the loop (``KeyError: ... is already registered``) is re-raised here.
    ``settle()`` waits for the servers to close their side. Descriptors are compared without the
    loop's own wake-up socket pair (flowno keeps it registered, hence open, for good).
    """
    outcome: dict[str, Any] = {}
    loop = flowno.EventLoop()
    loop_fds = frozenset({loop._wakeup_reader.fileno(), loop._wakeup_writer.fileno()})
    gc.collect()
    before = open_fds(ignore=loop_fds)

    def target() -> None:
        try:
            outcome["value"] = loop.run_until_complete(main(), join=True)
        except BaseException as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(HANG_LIMIT + 10)
    assert not thread.is_alive(), "run_until_complete did not return"
    if "error" in outcome:
        raise outcome["error"]
    settle()
    try:
        _wait_blocking(lambda: open_fds(ignore=loop_fds) == before, "descriptors", gc.collect)
    except AssertionError:
        assert open_fds(ignore=loop_fds) == before, "a descriptor was left open"
    return outcome["value"]


async def expect_cancelled(task: TaskHandle[Any]) -> None:
    with pytest.raises(TaskCancelled):
        await task.join()


async def follow_up(client: HttpClient, url: str) -> int:
    response = await client.get(url + "/echo")
    assert response.decode_json()["path"] == "/echo"
    return response.status_code


async def cancel_and_follow_up(
    client: HttpClient,
    cancel: Cancel,
    work: Coroutine[Any, Any, Any],
    ready: Callable[[], bool],
    what: str,
    hold: Hold,
) -> tuple[int, int]:
    """Spawn ``work``, cancel it once ``ready()``, check that its connection is gone (not pooled)
    and its slot free, release ``hold``'s server, then send a follow-up request on ``client`` to it.

    Returns:
        ``(follow-up status, connections the client opened in all)``.
    """
    task = await spawn(work)
    await wait_for(ready, what)
    cancel(task)
    await expect_cancelled(task)
    assert client.pool.active_connections() == 0  # the slot is free...
    assert client.pool.idle_connections() == 0  # ...and the half-used connection closed
    hold.release.set()
    status = await follow_up(client, hold.server.url)
    opened = client.pool.connections_opened
    await client.aclose()
    return status, opened


# -- (a) a plain request in flight --------------------------------------------------------------


def test_cancel_plain_request_in_flight(hold: Hold, cancel: Cancel) -> None:
    async def main() -> tuple[int, int]:
        client = HttpClient()
        request = client.get(hold.server.url + "/hold")
        return await cancel_and_follow_up(
            client, cancel, request, lambda: hold.arrivals == 1, "the request to arrive", hold
        )

    assert run_checked(main, hold.wait_server_side_closed) == (200, 2)


@pytest.mark.parametrize("victim", [0, 1], ids=["reactor-leader", "reactor-follower"])
def test_cancel_one_of_two_requests_waiting_on_the_reactor(hold: Hold, cancel: Cancel, victim: int) -> None:
    """The first request to wait leads the pool's reactor; cancelling it hands leadership on."""
    url = hold.server.url

    async def main() -> tuple[bytes, int]:
        client = HttpClient()
        tasks = [await spawn(client.get(url + f"/hold?i={i}")) for i in range(2)]
        await wait_for(lambda: hold.arrivals == 2, "both requests to arrive")
        cancel(tasks[victim])
        await expect_cancelled(tasks[victim])
        hold.release.set()
        survivor = await tasks[1 - victim].join()  # hangs (ReadTimeout after 60 s) if nobody leads
        status = await follow_up(client, url)
        await client.aclose()
        return survivor.body, status

    assert run_checked(main, hold.wait_server_side_closed) == (b"late", 200)


def test_cancel_while_connecting(hold: Hold, cancel: Cancel) -> None:
    """A connect that never completes (the listener's backlog is full): the socket is closed."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))  # fills the backlog of 0 (+1)

    async def main() -> tuple[int, int]:
        client = HttpClient()
        request = client.get(f"http://127.0.0.1:{port}/")
        ready = lambda: _syn_sent_to(port) == 1  # noqa: E731
        return await cancel_and_follow_up(client, cancel, request, ready, "a pending SYN", hold)

    try:
        assert run_checked(main, hold.wait_server_side_closed) == (200, 1)
    finally:
        filler.close()
        listener.close()


def _syn_sent_to(port: int) -> int:
    """Sockets of this machine in SYN_SENT towards ``port`` on 127.0.0.1 (from /proc/net/tcp)."""
    count = 0
    with open("/proc/net/tcp") as table:
        next(table)
        for line in table:
            fields = line.split()
            if fields[2] == f"0100007F:{port:04X}" and fields[3] == "02":
                count += 1
    return count


# -- (b) TLS --------------------------------------------------------------------------------------


def test_cancel_tls_request_in_flight(tls_hold: Hold, certificate: tuple[Path, Path], cancel: Cancel) -> None:
    async def main() -> tuple[int, int]:
        client = HttpClient(verify=str(certificate[0]))
        request = client.get(tls_hold.server.url + "/hold")
        ready = lambda: tls_hold.arrivals == 1  # noqa: E731
        return await cancel_and_follow_up(client, cancel, request, ready, "the request", tls_hold)

    assert run_checked(main, tls_hold.wait_server_side_closed) == (200, 2)


def test_cancel_during_tls_handshake(hold: Hold, cancel: Cancel) -> None:
    """A server that reads the ClientHello and never answers: the client is parked mid-handshake."""
    hello_received = threading.Event()
    client_closed = threading.Event()

    def silent(conn: socket.socket, index: int) -> None:
        conn.recv(1)
        hello_received.set()
        try:
            while conn.recv(65536):
                pass
        except OSError:
            pass
        client_closed.set()

    raw = RawServer(silent).start()

    async def main() -> tuple[int, int]:
        client = HttpClient(verify=False)
        request = client.get(f"https://127.0.0.1:{raw.port}/")
        return await cancel_and_follow_up(
            client, cancel, request, hello_received.is_set, "the ClientHello", hold
        )

    def settle() -> None:
        _wait_blocking(client_closed.is_set, "the server to see the client close")
        for thread in raw._threads:
            thread.join(HANG_LIMIT)
        hold.wait_server_side_closed()

    try:
        assert run_checked(main, settle) == (200, 1)
    finally:
        raw.stop()


# -- (c) a streaming response being read -----------------------------------------------------------


@pytest.mark.parametrize("use_context", [False, True], ids=["bare", "async-with"])
def test_cancel_task_reading_a_stream(hold: Hold, cancel: Cancel, use_context: bool) -> None:
    seen: list[Any] = []

    async def reader(client: HttpClient) -> None:
        response = await client.stream_get(hold.server.url + "/sse-hold")
        assert flowno_io.streaming_response_is_ok(response)
        if use_context:
            async with response:
                async for item in response.body:
                    seen.append(item)
        else:
            async for item in response.body:
                seen.append(item)

    async def main() -> tuple[int, int]:
        client = HttpClient()
        ready = lambda: len(seen) == 1 and hold.arrivals == 1  # noqa: E731
        return await cancel_and_follow_up(client, cancel, reader(client), ready, "the first event", hold)

    assert run_checked(main, hold.wait_server_side_closed) == (200, 2)
    assert seen == [{"n": 1}]


def test_cancel_consumer_parked_outside_the_client_closes_the_stream(hold: Hold, cancel: Cancel) -> None:
    """Cancelled between two reads (parked on its own sleep): ``async with`` closes the stream."""
    parked = threading.Event()

    async def reader(client: HttpClient) -> None:
        response = await client.stream_get(hold.server.url + "/sse-hold")
        async with response:
            async for _ in response.body:
                parked.set()
                await flowno_io.sleep(HANG_LIMIT * 2)

    async def main() -> tuple[int, int]:
        client = HttpClient()
        return await cancel_and_follow_up(
            client, cancel, reader(client), parked.is_set, "the consumer to park", hold
        )

    assert run_checked(main, hold.wait_server_side_closed) == (200, 2)


def test_cancel_while_draining_a_redirect(hold: Hold, cancel: Cancel) -> None:
    """Following a redirect reads the 3xx body to keep its connection; a cancel there closes it
    (before the fix the connection stayed checked out of the pool for good)."""

    async def main() -> tuple[int, int]:
        client = HttpClient(follow_redirects=True)
        request = client.get(hold.server.url + "/redirect-hold")
        ready = lambda: hold.arrivals == 1  # noqa: E731
        return await cancel_and_follow_up(client, cancel, request, ready, "the 302 body", hold)

    assert run_checked(main, hold.wait_server_side_closed) == (200, 2)


# -- (d) waiting for a pool slot -------------------------------------------------------------------


def test_cancel_request_waiting_for_a_pool_slot(hold: Hold, cancel: Cancel) -> None:
    url = hold.server.url

    async def main() -> tuple[bytes, int, int]:
        client = HttpClient(max_connections_per_host=1)
        first = await spawn(client.get(url + "/hold"))
        await wait_for(lambda: hold.arrivals == 1, "the first request to arrive")
        waiting = await spawn(client.get(url + "/echo"))
        await wait_for(lambda: client.pool.waiting_requests() == 1, "the second request to queue")
        cancel(waiting)
        await expect_cancelled(waiting)
        assert client.pool.waiting_requests() == 0
        hold.release.set()
        content = (await first.join()).body
        status = await follow_up(client, url)  # on the first request's connection, kept for it
        opened = client.pool.connections_opened
        await client.aclose()
        return content, status, opened

    assert run_checked(main, hold.wait_server_side_closed) == (b"late", 200, 1)


def test_connection_handed_to_a_cancelled_waiter_goes_to_the_next(hold: Hold, cancel: Cancel) -> None:
    """The first request's connection is handed to the second (queued) one, which is cancelled
    before it runs: the connection goes on to the third. With ``flowno_io.cancel`` it is passed on
    unused (before the fix it was closed and the third opened a new one). ``TaskHandle.cancel()``
    lets the second run its pending step first: it uses the connection and is cancelled at its
    next await (the connection is closed), or, if the response is already there, finishes in that
    step (flowno then throws the cancel into the finished task: docs/flowno-upstream.md §12)."""
    url = hold.server.url
    tasks: dict[str, TaskHandle[Any]] = {}

    async def first(client: HttpClient) -> bytes:
        response = await client.get(url + "/hold")  # released its connection to "second" just now
        cancel(tasks["second"])  # "second" has not run since: it is in the ready queue
        return response.body

    async def main() -> tuple[bytes, int, int]:
        client = HttpClient(max_connections_per_host=1)
        tasks["first"] = await spawn(first(client))
        await wait_for(lambda: hold.arrivals == 1, "the first request to arrive")
        tasks["second"] = await spawn(client.get(url + "/echo?second"))
        await wait_for(lambda: client.pool.waiting_requests() == 1, "the second request to queue")
        third = await spawn(client.get(url + "/echo?third"))
        await wait_for(lambda: client.pool.waiting_requests() == 2, "the third request to queue")
        hold.release.set()
        body = await tasks["first"].join()
        if cancel is _flowno_io_cancel:
            await expect_cancelled(tasks["second"])
        else:
            try:
                await tasks["second"].join()
            except TaskCancelled:
                pass
        status = (await third.join()).status_code
        opened = client.pool.connections_opened
        await client.aclose()
        return body, status, opened

    body, status, opened = run_checked(main, hold.wait_server_side_closed)
    assert (body, status) == (b"late", 200)
    assert opened == 1 if cancel is _flowno_io_cancel else opened in (1, 2)


def test_cancel_lands_while_pool_wait_starts_the_timer_task(hold: Hold, cancel: Cancel) -> None:
    """``flowno_io.cancel`` throws at the exact await: here the spawn of the clock task that the
    pool timeout needs, before the wait proper. The waiter must still leave the queue (before the
    fix it stayed: the released connection went to it, and the follow-up got ``PoolTimeout``)."""
    url = hold.server.url

    async def main() -> tuple[bytes, int, int]:
        client = HttpClient(max_connections_per_host=1, timeout=None)  # no timer: no clock task yet
        first = await spawn(client.get(url + "/hold"))
        await wait_for(lambda: hold.arrivals == 1, "the first request to arrive")
        waiting = await spawn(client.get(url + "/echo", timeout=Timeout(None, None, None, HANG_LIMIT)))
        cancel(waiting)  # it has run up to the clock's spawn, and is in the ready queue
        await expect_cancelled(waiting)
        assert client.pool.waiting_requests() == 0
        hold.release.set()
        content = (await first.join()).body
        response = await client.get(url + "/echo", timeout=Timeout(5.0, 5.0, 5.0, 5.0))
        opened = client.pool.connections_opened
        await client.aclose()
        return content, response.status_code, opened

    assert run_checked(main, hold.wait_server_side_closed) == (b"late", 200, 1)


# -- (e) many requests cancelled at random points -----------------------------------------------------


async def _one_random_request(client: HttpClient, url: str, rng: random.Random) -> Any:
    kind = rng.choice(["get", "post", "stream", "redirect"])
    if kind == "get":
        return (await client.get(url + f"/slow?ms={rng.randint(0, 20)}")).status_code
    if kind == "post":
        return (await client.post(url + "/echo", json={"x": "y" * rng.randint(0, 200_000)})).status_code
    if kind == "redirect":
        return (await client.get(url + "/redirect", follow_redirects=True)).status_code
    response = await client.stream_get(url + f"/stream/{rng.randint(1, 200)}")
    async with response:
        return len([item async for item in response.body])


def _redirect(handler: Handler) -> None:
    handler.send_body(b"x" * 1000, status=302, headers=[("Location", "/slow?ms=5")])


@types.coroutine
def _suspending(coro: Coroutine[Any, Any, Any], at: int, trigger: Wakeup) -> Generator[Any, Any, Any]:
    """Run ``coro`` in the current task; set ``trigger`` as it suspends for the ``at``-th time.

    The canceller parked on ``trigger`` is queued before the loop resumes this task again, so the
    cancel lands at exactly that await (or, with ``TaskHandle.cancel()`` after a command that does
    not park, at the next one). ``trigger`` is also set when ``coro`` ends first.
    """
    value: Any = None
    error: BaseException | None = None
    suspensions = 0
    try:
        while True:
            try:
                command = coro.send(value) if error is None else coro.throw(error)
            except StopIteration as stop:
                return stop.value
            suspensions += 1
            if suspensions == at:
                trigger.set()
            try:
                value, error = (yield command), None
            except BaseException as exc:
                value, error = None, exc
    finally:
        trigger.set()


async def _cancelled_at(coro: Coroutine[Any, Any, Any], at: int, trigger: Wakeup) -> Any:
    return await _suspending(coro, at, trigger)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_many_requests_cancelled_at_random_points(hold: Hold, cancel: Cancel, seed: int) -> None:
    """24 requests of four kinds, three connections per host; each is cancelled at a random one
    of its first four awaits (in the pool queue, connecting, sending, reading a head, a body, a
    stream, or draining a redirect), unless it finished before."""
    url = hold.server.url
    hold.server.routes["/redirect"] = _redirect
    rng = random.Random(seed)

    async def canceller(task: TaskHandle[Any], trigger: Wakeup) -> None:
        await trigger.wait()
        cancel(task)

    async def main() -> tuple[dict[str, int], list[int], int, int, int]:
        client = HttpClient(max_connections_per_host=3)
        tasks = []
        for _ in range(24):
            trigger = Wakeup()
            request = _one_random_request(client, url, rng)
            task = await spawn(_cancelled_at(request, rng.randint(1, 4), trigger))
            tasks.append(task)
            await spawn(canceller(task, trigger))
        outcomes = {"done": 0, "cancelled": 0}
        for task in tasks:
            try:
                await task.join()
                outcomes["done"] += 1
            except TaskCancelled:
                outcomes["cancelled"] += 1
        statuses = [await follow_up(client, url) for _ in range(3)]
        active = client.pool.active_connections()
        waiting = client.pool.waiting_requests()
        idle = client.pool.idle_connections()
        await client.aclose()
        return outcomes, statuses, active, waiting, idle

    outcomes, statuses, active, waiting, idle = run_checked(main, hold.wait_server_side_closed)
    assert outcomes["cancelled"] >= 2, outcomes  # (not vacuous: 4 to 20 of 24 in 100 runs)
    assert statuses == [200, 200, 200]
    assert (active, waiting) == (0, 0)
    assert 1 <= idle <= 3


# -- the seam: a wake-up racing a cancel ---------------------------------------------------------------


def test_stock_cancel_racing_a_wakeup_resumes_the_task_once(caplog: pytest.LogCaptureFixture) -> None:
    """``TaskHandle.cancel()`` queues the exception; a ``Wakeup.set()`` before it is thrown queues a
    second resumption. The cancel-safe wait drops that one (before, the loop resumed the cancelled,
    finished task again: ``RuntimeError: cannot reuse already awaited coroutine``, and a later
    ``join()`` raised that instead of ``TaskCancelled``)."""
    wakeup = Wakeup()
    resumed: list[str] = []

    async def sleeper() -> None:
        await wakeup.wait()
        resumed.append("woken")

    async def main() -> list[str]:
        task = await spawn(sleeper())
        await flowno_io.sleep(0)  # parked on the wakeup
        task.cancel()
        wakeup.set()  # queued behind the cancel
        await expect_cancelled(task)
        await flowno_io.sleep(0.01)  # the loop went past the stale entry
        await expect_cancelled(task)
        return resumed

    with caplog.at_level(logging.ERROR, logger="flowno"):
        assert run_checked(main, lambda: None) == []
    assert not [record for record in caplog.records if "cannot reuse" in record.getMessage()]


def test_stock_cancel_of_a_task_yielding_with_sleep_0_resumes_it_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """``flowno_io.sleep(0)`` requeues the task at once; a ``TaskHandle.cancel()`` queued behind it
    lands on the next ``sleep(0)``, whose own requeue must then be dropped (it was not: the loop
    resumed the finished task, ``RuntimeError: cannot reuse already awaited coroutine``)."""
    rounds = [0]

    async def yielder() -> None:
        while True:
            rounds[0] += 1
            await flowno_io.sleep(0)

    async def main() -> None:
        task = await spawn(yielder())
        await wait_for(lambda: rounds[0] >= 3, "the task to go round")
        task.cancel()
        await expect_cancelled(task)
        await flowno_io.sleep(0.01)
        await expect_cancelled(task)

    with caplog.at_level(logging.ERROR, logger="flowno"):
        run_checked(main, lambda: None)
    assert not [record for record in caplog.records if "cannot reuse" in record.getMessage()]


# -- TaskCancelled is never swallowed ------------------------------------------------------------------


def test_task_cancelled_is_an_exception_that_the_client_lets_through() -> None:
    """flowno's ``TaskCancelled`` is an ``Exception``: a broad ``except Exception`` would eat it.

    The client has none on a path that awaits; the tests above see the cancel at ``join()``.
    """
    assert issubclass(TaskCancelled, Exception)
