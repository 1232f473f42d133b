"""Smoke tests of the benchmark harness (``bench/``): its parsers, reports and load clients.

They need neither wrk nor the ``bench`` dependency group: the load clients run against the
flowno-io bench app for a fraction of a second, on 127.0.0.1.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path[:0] = [str(BENCH), str(BENCH / "apps")]

import _procs  # noqa: E402
import _report  # noqa: E402
import _wrk  # noqa: E402
import idle_client  # noqa: E402
import run  # noqa: E402
import sse_client  # noqa: E402
from _payloads import ECHO_BODY, ECHO_BODY_BYTES, event_data  # noqa: E402


def test_echo_body_is_one_kib_of_json() -> None:
    import json

    assert len(ECHO_BODY.encode()) == ECHO_BODY_BYTES == 1024
    assert json.loads(ECHO_BODY)["user"] == "bench"


def test_wrk_report_is_parsed() -> None:
    output = (
        "Running 1s test @ http://127.0.0.1:1/\n"
        'BENCH_JSON {"requests":1000,"duration_us":2000000,"bytes":5,"connect":0,"read":3,'
        '"write":0,"status":0,"timeout":0,"p50_us":1500,"p99_us":9000,"max_us":12000}\n'
    )
    result = _wrk.parse_report(output)
    assert result.rate == 500.0
    assert result.errors["read"] == 3
    assert result.p99_ms == 9.0
    with pytest.raises(ValueError):
        _wrk.parse_report("wrk: connection refused")


def test_wrk_script_sets_the_request() -> None:
    script = _wrk.request_script("POST", '{"a":1}', {"Content-Type": "application/json"})
    assert 'wrk.method = "POST"' in script
    assert 'wrk.body = [==[{"a":1}]==]' in script
    assert "done = function" in script


@pytest.mark.parametrize(
    ("pieces", "expected"),
    [
        ([b"data: 1\n\ndata: 2\n\n"], 2),
        ([b"data: 1\n", b"\ndata: 2\n", b"\n"], 2),  # terminators split across reads
        ([b"HTTP/1.1 200 OK\r\n\r\n1f\r\n", b"data: x\n\n\r\n"], 1),  # head and chunk framing
        ([b"data: 1\n\n\r\n", b"1f\r\ndata: 2\n\n\r\n0\r\n\r\n"], 2),
    ],
)
def test_sse_terminators_are_counted_across_reads(pieces: list[bytes], expected: int) -> None:
    total, last_newline = 0, False
    for piece in pieces:
        found, last_newline = sse_client.count_terminators(piece, last_newline)
        total += found
    assert total == expected


def test_scenario_selection_expands_groups() -> None:
    assert run.select_scenarios("hello,memory") == ["hello_keepalive", "hello_close", "memory"]
    assert run.select_scenarios(None) == list(run.SCENARIOS)
    with pytest.raises(SystemExit):
        run.select_scenarios("nope")


def _throughput(
    ours: float, peer: float, ours_cpu: float = 10.0, peer_cpu: float = 20.0
) -> dict[str, object]:
    def system(rate: float, cpu: float) -> dict[str, object]:
        return {"median_rate": rate, "min_rate": rate, "max_rate": rate, "median_cpu_us": cpu, "samples": []}

    return {
        "kind": "throughput",
        "title": "t",
        "unit": "req/s",
        "note": "",
        "systems": {"flowno-io": system(ours, ours_cpu), "aiohttp": system(peer, peer_cpu)},
    }


def test_targets_and_markdown() -> None:
    scenarios = {"hello_keepalive": _throughput(200.0, 100.0), "hello_close": _throughput(150.0, 100.0)}
    targets = run.compute_targets(scenarios)
    assert [t["met"] for t in targets] == [True, False]  # 2.0x >= 1.0x; 1.5x < 2.0x
    document = {
        "meta": {
            "date": "d",
            "machine": "m",
            "commit": "c",
            "versions": {"python": "3.11"},
            "rounds": 1,
            "duration": 1.0,
            "quick": True,
            "loadavg_start": "0",
        },
        "scenarios": scenarios,
        "targets": targets,
        "errors": {},
    }
    markdown = _report.render_markdown(document, None)
    assert "hello keep-alive" in markdown and "**no**" in markdown


@pytest.fixture
def bench_server() -> Iterator[int]:
    """The flowno-io bench app in a subprocess on a free port."""
    port = _procs.free_port()
    process = subprocess.Popen(
        [sys.executable, str(BENCH / "apps" / "flowno_io_app.py"), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    managed = _procs.Managed("bench-app", process)
    try:
        _procs.wait_for_port(managed, port)
        yield port
    finally:
        process.kill()
        process.wait()


def test_sse_client_counts_whole_streams(bench_server: int) -> None:
    result = sse_client.run(bench_server, "/sse", clients=3, events=50, duration=0.3)
    assert result["events"] > 0
    assert result["streams"] > 0
    assert result["short_streams"] == 0
    assert event_data(1) == '{"i":1,"token":"hello"}'


def test_idle_client_holds_connections(bench_server: int) -> None:
    sockets, failed = idle_client.open_idle(bench_server, count=20, wave=8)
    try:
        assert failed == 0 and len(sockets) == 20
        assert idle_client.count_still_open(sockets) == 20
    finally:
        for sock in sockets:
            sock.close()


# -- the rows issue 12 added: uvloop peers, the Protocol ceiling, the load-generator scenario ------


def _serve_app(script: str, *args: str) -> tuple[subprocess.Popen[bytes], int]:
    port = _procs.free_port()
    process = subprocess.Popen(
        [sys.executable, str(BENCH / "apps" / script), "--port", str(port), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _procs.wait_for_port(_procs.Managed(script, process), port)
    except RuntimeError:
        process.kill()
        process.wait()
        raise
    return process, port


def _exchange(port: int, request: bytes) -> bytes:
    """Send ``request`` and read until the server closes or 2 s of silence."""
    import socket

    received = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request)
        sock.settimeout(2.0)
        try:
            while chunk := sock.recv(65536):
                received += chunk
        except TimeoutError:
            pass
    return received


HELLO_REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n"
CLOSE_REQUEST = b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_protocol_ceiling_answers_pipelined_heads_and_closes_on_request(loop: str) -> None:
    if loop == "uvloop":
        pytest.importorskip("uvloop")
    process, port = _serve_app("protocol_ceiling_app.py", "--loop", loop)
    try:
        # Two pipelined keep-alive heads in one write, then one that asks to close.
        received = _exchange(port, HELLO_REQUEST + HELLO_REQUEST + CLOSE_REQUEST)
    finally:
        process.kill()
        process.wait()
    assert received.count(b"HTTP/1.1 200 OK\r\n") == 3
    assert received.count(b"\r\n\r\nHello, world!") == 3
    assert received.count(b"Connection: close") == 1  # and the server closed: _exchange returned


@pytest.mark.parametrize("script", ["aiohttp_app.py", "starlette_app.py"])
def test_peer_apps_serve_hello_on_uvloop(script: str) -> None:
    pytest.importorskip("uvloop")
    pytest.importorskip("aiohttp" if script.startswith("aiohttp") else "uvicorn")
    process, port = _serve_app(script, "--loop", "uvloop")
    try:
        received = _exchange(port, CLOSE_REQUEST)
    finally:
        process.kill()
        process.wait()
    assert received.startswith(b"HTTP/1.1 200") and received.endswith(b"Hello, world!")


def test_hello_rows_get_their_share_of_the_ceiling() -> None:
    import _scenarios

    record = _throughput(200.0, 100.0)
    record["systems"][_scenarios.CEILING] = dict(record["systems"]["aiohttp"], median_rate=400.0)
    _scenarios.add_ceiling_fractions(record)
    assert record["systems"]["flowno-io"]["fraction_of_ceiling"] == 0.5
    assert record["systems"]["aiohttp"]["fraction_of_ceiling"] == 0.25
    table = "\n".join(_report.throughput_table({"hello_keepalive": record}))
    assert "of ceiling" in table and "| 50% |" in table


def test_load_generator_target_compares_with_locust() -> None:
    import _loadgen

    record = _throughput(300.0, 100.0)
    record["systems"][_loadgen.LOCUST] = record["systems"].pop("aiohttp")
    [target] = run.compute_targets({"loadgen": record})
    assert target["met"] is True and target["measured"] == "3.00\N{MULTIPLICATION SIGN}"


def _context(tmp_path: Path) -> object:
    import _scenarios

    return _scenarios.Context(_procs.ProcessRegistry(tmp_path), _scenarios.Settings(quick=True))


@pytest.mark.parametrize("generator", ["loadtest", "locust"])
def test_load_generators_report_rate_and_cpu(bench_server: int, tmp_path: Path, generator: str) -> None:
    import _loadgen
    import _scenarios

    # (never imported here: locust monkey-patches the process with gevent, select.epoll included)
    if generator == "locust" and importlib.util.find_spec("locust") is None:
        pytest.skip("locust is not installed")
    placeholder = subprocess.Popen(["true"])  # the Server record wants a process; only its port is used
    placeholder.wait()
    server = _scenarios.Server("flowno-io", _procs.Managed("bench-app", placeholder), bench_server)
    measure = _loadgen.loadtest_sample if generator == "loadtest" else _loadgen.locust_sample
    sample = measure(_context(tmp_path), server, 0.5)  # type: ignore[arg-type]
    assert sample.details["requests"] > 0 and sample.details["errors"] == 0
    assert sample.rate > 0 and sample.cpu_us > 0


def test_nginx_target_answers_hello(tmp_path: Path) -> None:
    import shutil

    import _loadgen

    if shutil.which("nginx") is None and not Path("/usr/sbin/nginx").exists():
        pytest.skip("nginx is not installed (.ci/run installs it)")
    context = _context(tmp_path)
    server = _loadgen.start_nginx(context)  # type: ignore[arg-type]
    try:
        received = _exchange(server.port, CLOSE_REQUEST)
    finally:
        context.registry.stop(server.process)  # type: ignore[attr-defined]
    assert received.startswith(b"HTTP/1.1 200") and received.endswith(b"Hello, world!")
