"""The stream service end to end: ``python -m stream_service`` as a subprocess on an ephemeral port.

SSE with ids and ``Last-Event-ID`` resumption (httpx-sse), 1,000 concurrent ``/ticker``
subscribers on one worker all receiving the same ticks (raw non-blocking sockets, h11, one thread),
the official ``openai`` client streaming and not, errors, and shutdown.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11
import httpx
import openai
import pytest
from helpers import HANG_TIMEOUT, read_head, read_until, wait_for
from httpx_sse import connect_sse
from service_process import STARTUP_TIMEOUT, ServiceProcess, start_service, wait_exit

from flowno_io import SSEDecoder
from flowno_io.testing import ServerThread
from stream_service.app import build_server

TICKER_INTERVAL_MS = 200
SERVICE_TOKENS_PER_SECOND = 200.0


@pytest.fixture(scope="module")
def stream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    service = start_service(
        "stream_service",
        tmp_path_factory.mktemp("stream"),
        "--access-log",
        "--tokens-per-second",
        str(SERVICE_TOKENS_PER_SECOND),
        "--ticker-interval-ms",
        str(TICKER_INTERVAL_MS),
    )
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def client(stream: ServiceProcess) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stream.url, timeout=10) as client:
        yield client


@pytest.fixture
def ai(stream: ServiceProcess) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=stream.url + "/v1", api_key="test-key", max_retries=0, timeout=20) as ai:
        yield ai


# -- index, health ------------------------------------------------------------------------------


def test_index_lists_every_route(client: httpx.Client) -> None:
    routes = {route["path"] for route in client.get("/").json()["routes"]}
    assert routes == {"/", "/health", "/events", "/ticker", "/v1/chat/completions", "/v1/models"}


def test_health(client: httpx.Client, stream: ServiceProcess) -> None:
    health = client.get("/health").json()
    assert health["status"] == "ok"
    assert health["pid"] == stream.process.pid
    assert health["tokens_per_second"] == SERVICE_TOKENS_PER_SECOND
    assert health["ticker_interval_ms"] == TICKER_INTERVAL_MS
    for key in ("uptime_s", "open_connections", "requests_served", "active_streams", "ticker_subscribers"):
        assert isinstance(health[key], int | float)


# -- /events ------------------------------------------------------------------------------------


def test_events_have_ids_and_payloads(client: httpx.Client) -> None:
    params = {"count": 5, "interval_ms": 10, "size": 40}
    with connect_sse(client, "GET", "/events", params=params) as source:
        assert source.response.headers["content-type"].startswith("text/event-stream")
        assert source.response.headers["cache-control"] == "no-cache"
        events = list(source.iter_sse())
    assert [event.id for event in events] == ["1", "2", "3", "4", "5"]
    assert [event.json()["n"] for event in events] == [1, 2, 3, 4, 5]
    assert all(len(event.json()["payload"]) == 40 for event in events)
    assert events[0].retry == 1000


def test_events_resume_after_last_event_id(client: httpx.Client) -> None:
    params = {"count": 6, "interval_ms": 0}
    with connect_sse(client, "GET", "/events", params=params) as source:
        first = []
        for event in source.iter_sse():
            first.append(event.id)
            if event.id == "3":
                break  # the connection drops after event 3
    assert first == ["1", "2", "3"]
    with connect_sse(client, "GET", "/events", params=params, headers={"Last-Event-ID": "3"}) as source:
        rest = [event.id for event in source.iter_sse()]
    assert rest == ["4", "5", "6"]
    resumed_by_query = client.get("/events", params={**params, "last_event_id": 5})
    assert [line for line in resumed_by_query.text.splitlines() if line.startswith("id:")] == ["id: 6"]
    finished = client.get("/events", params=params, headers={"Last-Event-ID": "6"})
    assert finished.status_code == 204  # nothing left: an EventSource stops reconnecting


def test_events_take_their_time(client: httpx.Client) -> None:
    start = time.monotonic()
    response = client.get("/events", params={"count": 4, "interval_ms": 100})
    assert response.text.count("id: ") == 4
    assert time.monotonic() - start >= 0.29


@pytest.mark.parametrize(
    ("params", "headers", "param"),
    [
        ({"count": "x"}, {}, "count"),
        ({"count": 0}, {}, "count"),
        ({"count": 100_001}, {}, "count"),
        ({"interval_ms": 60_001}, {}, "interval_ms"),
        ({"size": 70_000}, {}, "size"),
        ({}, {"Last-Event-ID": "abc"}, "Last-Event-ID"),
    ],
)
def test_events_reject_bad_parameters(
    client: httpx.Client, params: dict[str, object], headers: dict[str, str], param: str
) -> None:
    response = client.get("/events", params=params, headers=headers)  # type: ignore[arg-type]
    assert response.status_code == 400
    assert response.headers["content-type"] == "application/json"
    assert response.json()["param"] == param


# -- /ticker ------------------------------------------------------------------------------------


def test_ticker_count_ends_the_stream(client: httpx.Client) -> None:
    start = time.monotonic()
    with connect_sse(client, "GET", "/ticker", params={"count": 3}) as source:
        ticks = list(source.iter_sse())
    assert [tick.event for tick in ticks] == ["tick"] * 3
    seqs = [tick.json()["seq"] for tick in ticks]
    assert seqs == list(range(seqs[0], seqs[0] + 3))
    assert [tick.id for tick in ticks] == [str(seq) for seq in seqs]
    assert time.monotonic() - start >= 2 * TICKER_INTERVAL_MS / 1000 - 0.05
    assert client.get("/ticker", params={"count": "many"}).status_code == 400


def _detached_streams(thread: ServerThread) -> list[Any]:
    from flowno_io.server.stream_monitor import _monitors

    monitor = _monitors.get(thread.server)
    return [] if monitor is None else [s for s in list(monitor.streams.values()) if s.detached]


def test_a_ticker_stream_waits_without_a_task_between_ticks() -> None:
    """Without an access log, ``/ticker`` hands its subscription to the response as it is: the
    stream detaches between ticks (no task, no parser), ticks come from the fan-out, /health
    counts it, and a client leaving releases the subscription (issue 20)."""
    thread = ServerThread(build_server("127.0.0.1", 0, ticker_interval=0.05))
    thread.start()
    try:
        with socket.create_connection(("127.0.0.1", thread.server.port), timeout=HANG_TIMEOUT) as sock:
            sock.sendall(b"GET /ticker HTTP/1.1\r\nHost: test\r\nAccept: text/event-stream\r\n\r\n")
            head, rest = read_head(sock)
            assert head.startswith(b"HTTP/1.1 200")
            wait_for(lambda: len(_detached_streams(thread)) == 1, HANG_TIMEOUT, "the stream did not detach")
            (stream,) = _detached_streams(thread)
            assert stream.task is None
            body = read_until(sock, b"event: tick", rest)
            assert b": ticker every 50 ms" in body.split(b"event: tick")[0]  # the greeting first
            health = httpx.get(thread.url + "/health", timeout=HANG_TIMEOUT).json()
            assert health["ticker_subscribers"] == 1 and health["active_streams"] == 1
        wait_for(
            lambda: httpx.get(thread.url + "/health", timeout=HANG_TIMEOUT).json()["ticker_subscribers"] == 0,
            HANG_TIMEOUT,
            "the subscription was not released after the client left",
        )
        assert _detached_streams(thread) == []
    finally:
        thread.stop()


@dataclass
class TickerSubscriber:
    """One raw-socket ``GET /ticker`` client: h11 for the HTTP framing, flowno_io's SSE decoder."""

    sock: socket.socket
    connection: h11.Connection = field(default_factory=lambda: h11.Connection(h11.CLIENT))
    decoder: SSEDecoder = field(default_factory=SSEDecoder)
    status: int = 0
    ticks: dict[int, str] = field(default_factory=dict)

    def request_bytes(self) -> bytes:
        request = h11.Request(
            method="GET", target="/ticker", headers=[("Host", "127.0.0.1"), ("Accept", "text/event-stream")]
        )
        return self.connection.send(request) + (self.connection.send(h11.EndOfMessage()) or b"")

    def feed(self, data: bytes) -> None:
        self.connection.receive_data(data)
        while True:
            event = self.connection.next_event()
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Response):
                self.status = event.status_code
            elif isinstance(event, h11.Data):
                for sse in self.decoder.feed(bytes(event.data)):
                    if sse.event == "tick":
                        self.ticks[int(sse.id or 0)] = sse.data
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                raise AssertionError("a ticker stream ended early")


SUBSCRIBERS = 1000


def test_a_thousand_ticker_subscribers_receive_the_same_ticks(client: httpx.Client) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < SUBSCRIBERS + 200:
        pytest.skip(f"open-files hard limit {hard} is too low for {SUBSCRIBERS} streams")
    if soft != resource.RLIM_INFINITY and soft < SUBSCRIBERS + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    host, port = client.base_url.host, client.base_url.port
    assert port is not None
    subscribers: list[TickerSubscriber] = []
    selector = selectors.DefaultSelector()
    try:
        for _ in range(SUBSCRIBERS):
            sock = socket.create_connection((host, port), timeout=10)
            subscriber = TickerSubscriber(sock)
            sock.sendall(subscriber.request_bytes())
            sock.setblocking(False)
            selector.register(sock, selectors.EVENT_READ, subscriber)
            subscribers.append(subscriber)

        def pump(until: float) -> None:
            while time.monotonic() < until:
                for key, _ in selector.select(timeout=0.05):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        raise AssertionError("the server closed a ticker stream")
                    key.data.feed(data)

        # Every subscriber has its first tick; then 3 more ticks that all of them must see. The
        # deadline bounds a hang: a thousand streams on a loaded machine may start slowly.
        deadline = time.monotonic() + 3 * HANG_TIMEOUT
        while time.monotonic() < deadline and not all(s.ticks for s in subscribers):
            pump(time.monotonic() + 0.1)
        statuses = Counter(s.status for s in subscribers)
        assert statuses == {200: SUBSCRIBERS}, f"statuses when the wait ended: {statuses}"
        assert all(s.ticks for s in subscribers), "some subscribers got no tick"
        common_start = max(min(s.ticks) for s in subscribers)
        wanted = range(common_start, common_start + 3)
        while time.monotonic() < deadline and not all(all(n in s.ticks for n in wanted) for s in subscribers):
            pump(time.monotonic() + 0.1)
        health = client.get("/health").json()
        assert health["ticker_subscribers"] >= SUBSCRIBERS
        reference = {n: subscribers[0].ticks[n] for n in wanted}
        for subscriber in subscribers:
            assert {n: subscriber.ticks.get(n) for n in wanted} == reference
        payloads = [json.loads(reference[n]) for n in wanted]
        assert [p["seq"] for p in payloads] == list(wanted)
        assert all(p["subscribers"] >= SUBSCRIBERS for p in payloads)
    finally:
        for subscriber in subscribers:
            selector.unregister(subscriber.sock)
            subscriber.sock.close()
        selector.close()
    # The server notices the closed streams on its next writes and drops the subscriptions.
    wait_for(
        lambda: client.get("/health").json()["ticker_subscribers"] == 0,
        HANG_TIMEOUT,
        "ticker subscriptions were not released after the clients left",
    )


# -- OpenAI-compatible --------------------------------------------------------------------------

MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Say something."}]


def test_openai_client_non_streaming(ai: openai.OpenAI) -> None:
    result = ai.chat.completions.create(model="flowno-echo-1", messages=MESSAGES)  # type: ignore[arg-type]
    assert result.object == "chat.completion"
    assert result.model == "flowno-echo-1"
    [choice] = result.choices
    assert choice.message.role == "assistant"
    assert choice.finish_reason == "stop"
    assert len((choice.message.content or "").split()) == 32
    assert result.usage is not None
    assert result.usage.completion_tokens == 32
    assert result.usage.prompt_tokens == 4
    again = ai.chat.completions.create(model="flowno-echo-1", messages=MESSAGES)  # type: ignore[arg-type]
    assert again.choices[0].message.content == choice.message.content  # deterministic


def test_openai_client_streaming_matches_non_streaming(ai: openai.OpenAI) -> None:
    request = {"model": "m1", "messages": MESSAGES, "max_tokens": 12}
    whole = ai.chat.completions.create(**request)  # type: ignore[call-overload]
    chunks = list(
        ai.chat.completions.create(**request, stream=True, stream_options={"include_usage": True})  # type: ignore[call-overload]
    )
    assert {chunk.object for chunk in chunks} == {"chat.completion.chunk"}
    assert len({chunk.id for chunk in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == whole.choices[0].message.content
    assert len(text.split()) == 12
    finishes = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices]
    assert finishes[-1] == "length" and set(finishes[:-1]) == {None}
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 12


def test_stream_ends_with_done_and_keeps_the_pace(client: httpx.Client) -> None:
    body = {"messages": MESSAGES, "stream": True, "max_tokens": 10, "tokens_per_second": 50}
    start = time.monotonic()
    arrivals: list[float] = []
    data: list[str] = []
    with connect_sse(client, "POST", "/v1/chat/completions", json=body) as source:
        for event in source.iter_sse():
            arrivals.append(time.monotonic() - start)
            data.append(event.data)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(item) for item in data[:-1]]
    assert len(chunks) == 12  # role, 10 tokens, finish
    assert arrivals[-1] >= 10 / 50 - 0.02  # 10 tokens at 50/s
    assert arrivals[-1] < HANG_TIMEOUT  # the pace is measured by the bench, not here


def test_service_tokens_per_second_is_the_default_pace(client: httpx.Client) -> None:
    start = time.monotonic()
    response = client.post("/v1/chat/completions", json={"messages": MESSAGES, "max_tokens": 40})
    elapsed = time.monotonic() - start
    assert response.status_code == 200
    # the pace (never faster); how much slower a loaded machine runs it is not a property
    assert 40 / SERVICE_TOKENS_PER_SECOND - 0.02 <= elapsed < HANG_TIMEOUT


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": []}, "messages"),
        ({"messages": "hi"}, "messages"),
        ({"messages": [{"content": "no role"}]}, "messages"),
        ({"messages": MESSAGES, "stream": "yes"}, "stream"),
        ({"messages": MESSAGES, "max_tokens": 0}, "max_tokens"),
        ({"messages": MESSAGES, "n": 2}, "n"),
        ({"messages": MESSAGES, "tokens_per_second": -1}, "tokens_per_second"),
        ([1, 2], None),
    ],
)
def test_chat_rejects_bad_requests_in_openai_shape(
    client: httpx.Client, body: object, param: str | None
) -> None:
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert error["message"]


def test_chat_rejects_invalid_json(client: httpx.Client) -> None:
    response = client.post(
        "/v1/chat/completions", content=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]["message"]


def test_openai_client_raises_its_error_for_a_bad_request(ai: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        ai.chat.completions.create(model="m", messages=[])
    assert "messages" in str(info.value)


def test_openai_client_lists_the_model(ai: openai.OpenAI) -> None:
    assert [model.id for model in ai.models.list()] == ["flowno-echo-1"]


def test_access_log_covers_streams(client: httpx.Client, stream: ServiceProcess) -> None:
    client.get("/events", params={"count": 2, "interval_ms": 0, "size": 7})
    client.get("/nowhere")
    wait_for(lambda: '"/nowhere"' in stream.stdout_text(), HANG_TIMEOUT, "no access-log line for /nowhere")
    records = [json.loads(line) for line in stream.stdout_text().splitlines() if line.startswith("{")]
    [line] = [
        r for r in records if r["path"] == "/events" and r.get("query") == "count=2&interval_ms=0&size=7"
    ]
    assert line["status"] == 200
    assert line["bytes"] > 2 * 7
    [missing] = [r for r in records if r["path"] == "/nowhere"]
    assert missing["status"] == 404


# -- shutdown -----------------------------------------------------------------------------------


def test_sigterm_ends_open_streams_and_the_process(tmp_path: Path) -> None:
    service = start_service("stream_service", tmp_path, "--ticker-interval-ms", "100")
    try:
        outcomes: list[str] = []

        def listen() -> None:
            try:
                with (
                    httpx.Client(base_url=service.url, timeout=10) as client,
                    connect_sse(client, "GET", "/ticker") as source,
                ):
                    for _ in source.iter_sse():
                        pass
                outcomes.append("ended")
            except httpx.HTTPError as exc:
                outcomes.append(repr(exc))

        threads = [threading.Thread(target=listen) for _ in range(3)]
        for thread in threads:
            thread.start()
        wait_for(
            lambda: httpx.get(service.url + "/health", timeout=5).json()["ticker_subscribers"] == 3,
            HANG_TIMEOUT,
            "the ticker streams did not start",
        )
        service.process.send_signal(signal.SIGTERM)
        assert wait_exit(service.process, HANG_TIMEOUT) == 0
        for thread in threads:
            thread.join(HANG_TIMEOUT)
        assert outcomes == ["ended"] * 3  # each stream ended cleanly (chunked terminator), no error
    finally:
        service.stop()


def test_sigterm_with_workers_leaves_no_process_behind(tmp_path: Path) -> None:
    service = start_service("stream_service", tmp_path, "--workers", "2")
    try:
        pids = set()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline and len(pids) < 1:
            pids.add(httpx.get(service.url + "/health", timeout=10).json()["pid"])

        def workers_now() -> list[int]:
            return [
                int(entry.name)
                for entry in Path("/proc").iterdir()
                if entry.name.isdigit() and _parent_of(int(entry.name)) == service.process.pid
            ]

        wait_for(lambda: len(workers_now()) == 2, STARTUP_TIMEOUT, "two workers never ran")
        workers = workers_now()
        assert pids <= set(workers)
        service.process.send_signal(signal.SIGTERM)
        assert wait_exit(service.process, 15) == 0
        for pid in workers:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        service.stop()


def _parent_of(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return -1
    return int(stat[stat.rindex(")") + 2 :].split()[1])


def test_max_connections_beyond_the_hard_open_files_limit_is_a_clear_error(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from stream_service.__main__ import FD_SPARE, _max_connections, main

    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard open-files limit here")
    with pytest.raises(SystemExit) as exited:
        main(["--max-connections", str(hard)])
    assert exited.value.code == 2
    assert f"the hard limit (ulimit -Hn) is {hard}" in capsys.readouterr().err
    # By default a process takes every connection the hard limit allows (not 10,000).
    assert _max_connections(argparse.ArgumentParser(), None) == max(16, hard - FD_SPARE)
