"""EventSourceResponse over real sockets, read by code we did not write (httpx + httpx-sse) and raw."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from flowno import sleep
from helpers import HANG_TIMEOUT, read_all, read_head, read_until, wait_for
from httpx_sse import connect_sse
from streaming_helpers import Start, connect, dechunk, server_threads

from flowno_io import EventSourceResponse, Request, ServerSentEvent, Topic
from flowno_io.server.server import DEFAULT_SHUTDOWN_GRACE

GET = b"GET /events HTTP/1.1\r\nHost: test\r\n\r\n"
PING_CHUNK = b"8\r\n: ping\n\n\r\n"  # encode_comment("ping") framed as one chunk


@pytest.fixture
def start() -> Iterator[Start]:
    yield from server_threads()


def _events(url: str, headers: dict[str, str] | None = None) -> tuple[httpx.Headers, list[tuple[Any, ...]]]:
    with (
        httpx.Client(timeout=HANG_TIMEOUT) as client,
        connect_sse(client, "GET", url, headers=headers or {}) as source,
    ):
        seen = [(e.event, e.data, e.id, e.retry) for e in source.iter_sse()]
        return source.response.headers, seen


def test_httpx_sse_reads_exactly_what_was_sent(start: Start) -> None:
    sent: list[Any] = [
        ServerSentEvent(comment="a comment: not an event"),
        ServerSentEvent("hello"),
        ServerSentEvent("line 1\nline 2", event="multi", id="1"),
        ServerSentEvent({"n": 1, "s": "\u00e9"}, event="json", id="2", retry=1500),
        ServerSentEvent("", event="empty"),
        "plain str",
        {"k": [1, 2]},
        ServerSentEvent("crlf\r\nsplit\rhere", id="3"),
        b"event: raw\ndata: pre-encoded\n\n",
        ServerSentEvent("\u00fcn\u00efc\u00f6d\u00e9 \u2713"),
    ]
    expected = [
        ("message", "hello", "", None),
        ("multi", "line 1\nline 2", "1", None),
        ("json", '{"n":1,"s":"\u00e9"}', "2", 1500),
        ("empty", "", "2", None),
        ("message", "plain str", "2", None),
        ("message", '{"k":[1,2]}', "2", None),
        ("message", "crlf\nsplit\nhere", "3", None),
        ("raw", "pre-encoded", "3", None),
        ("message", "\u00fcn\u00efc\u00f6d\u00e9 \u2713", "3", None),
    ]

    async def events(request: Request) -> EventSourceResponse:
        async def produce() -> AsyncIterator[Any]:
            for item in sent:
                await sleep(0)
                yield item

        return EventSourceResponse(produce(), ping_interval=None)

    thread = start({"/events": events})
    headers, seen = _events(thread.url + "/events")
    assert seen == expected
    assert headers["content-type"] == "text/event-stream"
    assert headers["cache-control"] == "no-cache"
    assert headers["x-accel-buffering"] == "no"
    assert headers["transfer-encoding"] == "chunked"


def test_last_event_id_lets_the_handler_resume(start: Start) -> None:
    def events(request: Request) -> EventSourceResponse:
        first = int(request.last_event_id or 0) + 1
        return EventSourceResponse(ServerSentEvent(f"event {n}", id=str(n)) for n in range(first, first + 3))

    thread = start({"/events": events})
    assert [e[2] for e in _events(thread.url + "/events")[1]] == ["1", "2", "3"]
    resumed = _events(thread.url + "/events", headers={"Last-Event-ID": "41"})[1]
    assert [(e[1], e[2]) for e in resumed] == [("event 42", "42"), ("event 43", "43"), ("event 44", "44")]


def test_heartbeats_while_idle_and_none_while_events_flow(start: Start) -> None:
    ping_interval = 0.4
    finally_at: list[float] = []
    last_event_at: list[float] = []

    async def busy_then_idle(request: Request) -> EventSourceResponse:
        async def produce() -> AsyncIterator[str]:
            try:
                # Events 20 times closer together than the ping interval: a loaded machine may
                # stretch the gaps a lot before a ping is due.
                for n in range(10):
                    await sleep(ping_interval / 20)
                    last_event_at.append(time.monotonic())
                    yield f"busy {n}"
                await sleep(3600)
            finally:
                finally_at.append(time.monotonic())

        return EventSourceResponse(produce(), ping_interval=ping_interval)

    thread = start({"/events": busy_then_idle})
    sock = connect(thread, GET)
    _head, rest = read_head(sock)
    busy = read_until(sock, b"busy 9\n\n\r\n", rest)
    assert PING_CHUNK not in busy
    idle = read_until(sock, PING_CHUNK * 2, busy[busy.index(b"busy 9") :])
    # The second ping comes at least one interval after the last event was produced (measured on
    # the server's side, before the event was sent), whether pings restart after each event or not.
    assert time.monotonic() - last_event_at[-1] >= ping_interval
    assert idle.endswith(PING_CHUNK * 2)  # whole chunks, between events: framing intact
    sock.close()
    # the disconnect is noticed while the producer sleeps for an hour: its finally runs
    wait_for(lambda: finally_at, message="the producer was not closed after the client left")


def test_http10_event_stream_is_raw_until_close(start: Start) -> None:
    thread = start({"/events": lambda request: EventSourceResponse(["a", ServerSentEvent("b", event="x")])})
    with connect(thread, b"GET /events HTTP/1.0\r\n\r\n") as sock:
        head, rest = read_head(sock)
        assert b"transfer-encoding" not in head.lower()
        assert read_all(sock, rest) == b"data: a\n\nevent: x\ndata: b\n\n"


def test_shutdown_ends_streams_with_the_final_event(start: Start) -> None:
    finally_ran = threading.Event()

    async def endless(request: Request) -> EventSourceResponse:
        async def produce() -> AsyncIterator[ServerSentEvent]:
            try:
                yield ServerSentEvent("hello", id="1")
                await sleep(3600)
            finally:
                finally_ran.set()

        goodbye = ServerSentEvent("restarting", event="bye", retry=500)
        return EventSourceResponse(produce(), shutdown_event=goodbye)

    thread = start({"/events": endless}, write_timeout=5.0)
    seen: list[tuple[Any, ...]] = []

    def listen() -> None:
        with (
            httpx.Client(timeout=HANG_TIMEOUT) as client,
            connect_sse(client, "GET", thread.url + "/events") as source,
        ):
            for e in source.iter_sse():
                seen.append((e.event, e.data, e.id, e.retry))  # one at a time: the test waits on it

    listener = threading.Thread(target=listen)
    listener.start()
    wait_for(lambda: seen, message="the first event never arrived")  # the stream is running
    began = time.monotonic()
    thread.stop()  # close(): the stream ends at once, not after the 10 s grace
    listener.join(HANG_TIMEOUT)
    assert time.monotonic() - began < DEFAULT_SHUTDOWN_GRACE - 2
    assert finally_ran.is_set()
    assert seen == [("message", "hello", "1", None), ("bye", "restarting", "1", 500)]


def test_shutdown_comment_and_clean_end_by_default(start: Start) -> None:
    thread = start({"/events": lambda request: EventSourceResponse(_forever())})
    with connect(thread, GET) as sock:
        _head, rest = read_head(sock)
        rest = read_until(sock, b"data: first", rest)
        stopper = threading.Thread(target=thread.stop)
        stopper.start()
        body = read_all(sock, rest)
        stopper.join(HANG_TIMEOUT)
    chunks, ended = dechunk(body[body.index(b"\r\n", body.index(b"data: first")) + 2 :])
    assert chunks == [b": server shutting down\n\n"] and ended


async def _forever() -> AsyncIterator[str]:
    yield "first"
    await sleep(3600)


def test_fan_out_from_a_topic_and_unsubscribe_on_disconnect(start: Start) -> None:
    topic: Topic[bytes] = Topic(max_buffer=16)
    thread = start({"/events": lambda request: EventSourceResponse(topic.subscribe(), ping_interval=None)})
    clients = 3
    received: list[list[str]] = [[] for _ in range(clients)]

    def listen(slot: int) -> None:
        with (
            httpx.Client(timeout=HANG_TIMEOUT) as client,
            connect_sse(client, "GET", thread.url + "/events") as source,
        ):
            for event in source.iter_sse():
                received[slot].append(event.data)
                if event.data == "4":
                    return  # closes the connection mid-stream

    listeners = [threading.Thread(target=listen, args=(slot,)) for slot in range(clients)]
    for listener in listeners:
        listener.start()
    wait_for(lambda: topic.subscribers == clients)

    async def publish() -> None:
        for n in range(5):
            topic.publish(ServerSentEvent(str(n), id=str(n)).encode())  # encoded once for everyone
            await sleep(0.01)

    thread.loop.create_task(publish())
    for listener in listeners:
        listener.join(HANG_TIMEOUT)
    assert received == [["0", "1", "2", "3", "4"]] * clients
    wait_for(lambda: topic.subscribers == 0)  # each disconnect closed its subscription


def test_ping_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="ping_interval"):
        EventSourceResponse([], ping_interval=0)


def _parse_sse(body: bytes) -> list[Any]:
    """Events of a de-chunked body, parsed with httpx-sse's own decoders."""
    from httpx_sse._decoders import SSEDecoder as ReferenceDecoder
    from httpx_sse._decoders import SSELineDecoder

    lines = SSELineDecoder().decode(body.decode("utf-8"))
    decoder = ReferenceDecoder()
    return [event for event in map(decoder.decode, lines) if event is not None]


def test_a_slow_subscriber_skips_ahead_with_intact_framing(start: Start) -> None:
    topic: Topic[bytes] = Topic(max_buffer=4, overflow="drop_oldest")
    subscriptions: list[Any] = []

    def events(request: Request) -> EventSourceResponse:
        subscription = topic.subscribe()
        subscriptions.append(subscription)
        return EventSourceResponse(subscription, ping_interval=None)

    thread = start({"/events": events})
    payload = "y" * 16_000
    published = 600  # 9.6 MB, more than the socket buffers hold, to a client that reads only at the end
    with connect(thread, GET, rcvbuf=32_768) as sock:
        _head, rest = read_head(sock)
        wait_for(lambda: topic.subscribers == 1)
        done = threading.Event()

        async def publish() -> None:
            for n in range(published):
                topic.publish(ServerSentEvent(payload, id=str(n)).encode())
                await sleep(0)
            topic.close()
            done.set()

        thread.loop.create_task(publish())
        assert done.wait(HANG_TIMEOUT)
        chunks, ended = dechunk(read_until(sock, b"\r\n0\r\n\r\n", rest))
    assert ended
    received = _parse_sse(b"".join(chunks))
    ids = [int(event.id) for event in received]
    assert ids == sorted(set(ids)) and ids[0] == 0 and ids[-1] == published - 1  # in order, newest kept
    assert all(event.data == payload for event in received)  # no event cut or spliced
    assert len(ids) + subscriptions[0].dropped == published  # every event either sent or counted
    assert subscriptions[0].dropped > 0


def test_the_end_of_a_stream_waits_for_a_partly_sent_event(start: Start) -> None:
    topic: Topic[bytes] = Topic()
    thread = start({"/events": lambda request: EventSourceResponse(topic.subscribe(), ping_interval=None)})
    big = "z" * 8_000_000  # more than the socket buffers: the publisher's send is partial
    with connect(thread, GET, rcvbuf=32_768) as sock:
        _head, rest = read_head(sock)
        wait_for(lambda: topic.subscribers == 1)
        done = threading.Event()

        async def publish_and_close() -> None:
            topic.publish(ServerSentEvent(big, id="last").encode())
            topic.close()  # the response ends while most of the event is still pending
            done.set()

        thread.loop.create_task(publish_and_close())
        assert done.wait(HANG_TIMEOUT)
        chunks, ended = dechunk(read_until(sock, b"\r\n0\r\n\r\n", rest))
    assert ended
    assert [(event.id, len(event.data)) for event in _parse_sse(b"".join(chunks))] == [("last", len(big))]
