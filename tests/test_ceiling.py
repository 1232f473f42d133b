"""Issue 20 (the concurrency ceiling): what an idle event stream costs, source addresses, and a
smoke run of the ceiling harness (``bench/ceiling.py``) at a tiny N."""

from __future__ import annotations

import doctest
import http.server
import importlib
import json
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flowno import EventLoop, spawn
from helpers import read_head, wait_for
from streaming_helpers import Start, connect, server_threads

from flowno_io import EventSourceResponse, HttpClient, Topic

BENCH = Path(__file__).resolve().parent.parent / "bench"
GET = b"GET /events HTTP/1.1\r\nHost: test\r\n\r\n"
#: Idle streams measured: enough that per-stream bytes dominate the noise.
STREAMS = 1_000
#: Bytes per idle stream allocated by ``server/streaming.py``, ``server/stream_monitor.py`` and
#: ``server/pubsub.py``: ~1,170 after the first memory work of issue 20 (~2,680 before: an empty
#: deque per subscriber, a closure and a bound method per stream, an ``__anext__`` coroutine and
#: its frames parked per idle stream); ~700 once a waiting stream runs without a task.
MAX_STREAMING_BYTES_PER_STREAM = 1_000
#: Bytes per idle stream allocated anywhere in the process (server and the test's own client
#: sockets): ~3,300 once a waiting stream holds no task, no coroutine frames and no llhttp
#: parser (~7,300 before: a worker task and its 7 suspended frames, a parser per connection).
MAX_PROCESS_BYTES_PER_STREAM = 4_000


@pytest.fixture
def start() -> Iterator[Start]:
    yield from server_threads()


def _streaming_bytes(snapshot: tracemalloc.Snapshot) -> int:
    wanted = ("server/streaming.py", "server/stream_monitor.py", "server/pubsub.py")
    total = 0
    for stat in snapshot.statistics("filename"):
        filename = stat.traceback[0].filename.replace("\\", "/")
        if filename.endswith(wanted):
            total += stat.size
    return total


def _total_bytes(snapshot: tracemalloc.Snapshot) -> int:
    return sum(stat.size for stat in snapshot.statistics("filename"))


def test_an_idle_subscription_stream_costs_few_bytes_in_the_streaming_path(start: Start) -> None:
    topic: Topic[bytes] = Topic()
    thread = start({"/events": lambda request: EventSourceResponse(topic.subscribe())})
    warm = [connect(thread, GET) for _ in range(20)]  # first-use allocations (monitor, poller)
    for sock in warm:
        read_head(sock)
    wait_for(lambda: topic.subscribers == len(warm), timeout=30)
    tracemalloc.start(1)
    sockets: list[socket.socket] = []
    try:
        snapshot = tracemalloc.take_snapshot()
        before, process_before = _streaming_bytes(snapshot), _total_bytes(snapshot)
        sockets = [connect(thread, GET) for _ in range(STREAMS)]
        for sock in sockets:
            read_head(sock)
        everyone = len(warm) + STREAMS
        wait_for(
            lambda: topic.subscribers == everyone and all(s._waiting for s in list(topic._subscriptions)),
            timeout=60,
        )
        snapshot = tracemalloc.take_snapshot()
        after, process_after = _streaming_bytes(snapshot), _total_bytes(snapshot)
    finally:
        tracemalloc.stop()
    per_stream = (after - before) / STREAMS
    assert per_stream <= MAX_STREAMING_BYTES_PER_STREAM, f"{per_stream:.0f} bytes per idle stream"
    in_process = (process_after - process_before) / STREAMS
    assert in_process <= MAX_PROCESS_BYTES_PER_STREAM, f"{in_process:.0f} bytes per idle stream in all"
    assert all(s._buffer is None for s in topic._subscriptions)  # no deque while nothing waits
    # Still a working fan-out: one published event reaches every stream, framed as one chunk.
    event = b"data: tick\n\n"
    topic.publish(event)
    for sock in (*warm, *sockets):
        assert sock.recv(4096) == b"%x\r\n%b\r\n" % (len(event), event)
    for sock in (*warm, *sockets):
        sock.close()
    wait_for(lambda: topic.subscribers == 0, timeout=60)


def test_a_subscription_buffers_only_what_waits() -> None:
    topic: Topic[int] = Topic(max_buffer=2)
    subscription = topic.subscribe()
    assert subscription._buffer is None and len(subscription) == 0
    assert subscription.get_nowait() is None
    for n in range(3):
        topic.publish(n)
    assert len(subscription) == 2 and subscription.dropped == 1
    assert [subscription.get_nowait(), subscription.get_nowait(), subscription.get_nowait()] == [1, 2, None]
    strict = topic.subscribe(max_buffer=1, overflow="disconnect")
    assert topic.publish(3) == 2  # both got it (one buffers it, one drops its oldest)
    assert topic.publish(4) == 1  # the strict one overflowed: it did not get it
    assert strict.overflowed and strict.closed and len(strict) == 0
    assert topic.publish(5) == 1 == topic.subscribers


@pytest.fixture
def peer_recorder() -> Iterator[tuple[str, list[str]]]:
    """A stdlib HTTP server on 127.0.0.1 (not on a flowno loop: one loop per process) that
    records each request's source address; yields (base URL, addresses)."""
    peers: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            peers.append(self.client_address[0])
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", peers
    finally:
        server.shutdown()
        server.server_close()


def test_loadtest_binds_connections_to_the_source_address(peer_recorder: tuple[str, list[str]]) -> None:
    url, peers = peer_recorder
    argv = ["closed", url + "/who", "-c", "1", "-n", "3", "--source-address", "127.0.0.7", "--no-files", "-q"]
    done = subprocess.run(
        [sys.executable, "-m", "loadtest", *argv], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert peers == ["127.0.0.7"] * 3


def test_http_client_binds_the_local_address(peer_recorder: tuple[str, list[str]]) -> None:
    url, peers = peer_recorder

    async def fetch() -> int:
        client = HttpClient(local_address="127.0.0.9")
        try:
            return (await client.get(url + "/who")).status_code
        finally:
            client.close()

    assert EventLoop().run_until_complete(fetch(), join=True) == 200
    assert peers == ["127.0.0.9"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="IP_BIND_ADDRESS_NO_PORT is Linux's")
def test_a_source_bound_connection_takes_its_port_at_connect() -> None:
    """With ``local_address`` the port is left to ``connect()`` (``IP_BIND_ADDRESS_NO_PORT``):
    ``bind()`` with port 0 searched for a port free for any destination, which slowed a
    generator reopening 15,000 streams from one address while the last run's sockets were in
    TIME_WAIT (13.3 s of CPU instead of 7.9 s)."""
    from flowno_io.io.socket_stream import open_tcp_stream

    listener = socket.create_server(("127.0.0.1", 0))

    async def connect() -> tuple[int, str]:
        stream = await open_tcp_stream("127.0.0.1", listener.getsockname()[1], local_address="127.0.0.10")
        try:
            return stream.sock.getsockopt(socket.IPPROTO_IP, 24), stream.sock.getsockname()[0]
        finally:
            stream.close()

    try:
        assert EventLoop().run_until_complete(connect(), join=True) == (1, "127.0.0.10")
    finally:
        listener.close()


def _bench_module(name: str) -> Any:
    sys.path[:0] = [str(BENCH), str(BENCH / "apps")]
    try:
        return importlib.import_module(name)
    finally:
        del sys.path[:2]


def test_each_worker_ticks_on_its_own_phase_and_ids_stay_comparable() -> None:
    payloads = _bench_module("_ceiling_payloads")
    ceiling = _bench_module("ceiling")
    for module in (payloads, ceiling):
        assert doctest.testmod(module).failed == 0
    interval = payloads.TICK_INTERVAL
    for workers in (1, 2, 6):
        staggered = [payloads.phase_offset(n, workers) for n in range(workers)]
        assert staggered == [n * interval / workers for n in range(workers)]
        assert [payloads.phase_offset(n, workers, "aligned") for n in range(workers)] == [0.0] * workers
        assert payloads.largest_offset(workers) == staggered[-1] < interval
        for offset in staggered:
            for seq in (0, 1, 359_207_211):  # tick k of every worker is sent in [5k, 5k + 5)
                sent = payloads.tick_time(seq, offset)
                assert seq * interval <= sent < (seq + 1) * interval
                assert payloads.tick_id(sent, offset) == seq
                assert payloads.tick_id(sent - 0.001, offset) == seq - 1
                assert payloads.following_tick(seq, sent + 0.1, offset) == seq + 1
        # The window: ids whose every send (all phases) falls between its opening and the stop,
        # with the grace after the latest phase's last send.
        for phase in payloads.PHASES:
            wanted, opens, stop = ceiling.measurement_window(1_000_003.0, 3, workers, phase)
            assert len(wanted) == 3 and opens > 1_000_003.0
            last_send = max(
                payloads.tick_time(wanted[-1], payloads.phase_offset(n, workers, phase))
                for n in range(workers)
            )
            assert stop == last_send + ceiling.DELIVERY_GRACE
            first_send = min(
                payloads.tick_time(wanted[0], payloads.phase_offset(n, workers, phase))
                for n in range(workers)
            )
            assert opens == first_send - ceiling.WINDOW_LEAD
            # no send of the id before the window falls inside it
            assert all(
                payloads.tick_time(wanted[0] - 1, payloads.phase_offset(n, workers, phase)) < opens
                for n in range(workers)
            )
    with pytest.raises(ValueError, match="phase"):
        payloads.phase_offset(0, 2, "random")


def test_the_ceiling_harness_runs_a_tiny_ramp_on_two_staggered_workers(tmp_path: Path) -> None:
    """A real run of the harness: 2 server workers, a 1 s tick interval, both workers' ticks
    counted by id, each worker's fan-outs asked from its own ``/health``."""
    ceiling = _bench_module("ceiling")
    argv = ["--steps", "40", "--systems", "flowno_io", "--workers", "2", "--ticks", "2"]
    argv += ["--tick-interval", "1", "--time-limit", "120", "--out", str(tmp_path)]
    assert ceiling.main(argv) == 0
    [json_path] = tmp_path.glob("ceiling-*.json")
    document: dict[str, Any] = json.loads(json_path.read_text())
    assert document["meta"]["phase"] == "staggered"
    [step] = document["steps"]
    assert step["streams"] == step["opened"] == 40 and step["workers"] == 2, step
    assert step["lost"] == 0 and step["delivered"] == 80, step
    assert step["latency_ms"]["p99"] > 0 and step["server_kib_per_stream"] > 0
    wanted = sorted(int(seq) for seq in step["send_offsets_s"])
    assert len(wanted) == 2 and wanted[1] == wanted[0] + 1
    # Every worker answered /health and fanned out every measured id, at its own offset.
    assert [(f["slot"], f["offset"], f["ids"]) for f in step["fanouts"]] == [
        (0, 0.0, wanted),
        (1, 0.5, wanted),
    ]
    # The generators saw two send times per id (one per worker): worker 1's never before its
    # phase (lower bounds only: a late worker on a loaded machine is not a failure here).
    for offsets in step["send_offsets_s"].values():
        assert len(offsets) == 2 and offsets[0] >= -0.05 and offsets[1] >= 0.45, offsets
    markdown = (tmp_path / json_path.name.replace(".json", ".md")).read_text()
    assert markdown.startswith("# Concurrency ceiling") and "(phase: staggered)" in markdown


def test_the_generators_shared_reader_records_ticks_in_bursts_and_after_quiet_periods() -> None:
    """The shared reader polls during a burst and waits again after it: ticks cut across reads,
    several sockets, and a second burst after the reader went back to waiting are all recorded."""
    sys.path[:0] = [str(BENCH), str(BENCH / "apps")]
    try:
        import ceiling_client
    finally:
        del sys.path[:2]
    pairs = [socket.socketpair() for _ in range(3)]
    for mine, _ in pairs:
        mine.setblocking(False)
    runner: Any = type("Runner", (), {"latency": {}, "received": {}, "sent": {}})()
    reader = ceiling_client.SharedTickReader(runner)

    def tick(seq: int) -> bytes:
        return b'id: %d\ndata: {"t": %.6f}\n\n' % (seq, time.time())

    async def until_recorded(count: int) -> None:
        deadline = time.monotonic() + 30  # a hang bound only
        while reader.parse() or sum(map(len, reader.samples.values())) < count:
            assert time.monotonic() < deadline, reader.samples
            await ceiling_client.sleep(0.005)

    async def main() -> None:
        for mine, _ in pairs:
            reader.add(mine)
        await spawn(reader.run())
        first = tick(1)
        pairs[0][1].send(first[:9])  # cut inside the tick
        await ceiling_client.sleep(0.01)
        pairs[0][1].send(first[9:])
        pairs[1][1].send(tick(1))
        pairs[2][1].send(tick(1))
        await until_recorded(3)
        # Quiet for longer than the reader polls: it waits on the poller again.
        await ceiling_client.sleep(ceiling_client.POLL_EVERY * (ceiling_client.QUIET_POLLS + 5))
        for _, theirs in pairs:
            theirs.send(tick(2))
        await until_recorded(6)

    try:
        EventLoop().run_until_complete(main(), join=True, wait_for_spawned_tasks=False)
    finally:
        for mine, theirs in pairs:
            mine.close()
            theirs.close()
    reader.fold()
    assert runner.received == {1: 3, 2: 3}
    assert all(0 <= histogram.max < 10_000_000 for histogram in runner.latency.values())


def test_the_generators_opening_window_hands_slots_over_in_order() -> None:
    sys.path[:0] = [str(BENCH), str(BENCH / "apps")]
    try:
        import ceiling_client
    finally:
        del sys.path[:2]
    window = ceiling_client.OpeningWindow(2)
    order: list[str] = []

    async def opener(name: str) -> None:
        await window.acquire()
        order.append(f"+{name}")
        await ceiling_client.sleep(0.01)
        order.append(f"-{name}")
        window.release()

    async def main() -> None:
        tasks = [await spawn(opener(name)) for name in "abcd"]
        for task in tasks:
            await task.join()

    EventLoop().run_until_complete(main(), join=True)
    # Never more than two open at once; c and d start in arrival order as slots free up.
    in_flight = peak = 0
    for step in order:
        in_flight += 1 if step[0] == "+" else -1
        peak = max(peak, in_flight)
    assert peak == 2
    assert [step for step in order if step[0] == "+"] == ["+a", "+b", "+c", "+d"]
    assert window.free == 2 and not window.waiting
