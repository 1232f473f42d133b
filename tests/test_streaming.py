"""StreamingResponse over real sockets: framing byte for byte, backpressure, prompt close on disconnect."""

from __future__ import annotations

import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from flowno import Event, sleep
from helpers import HANG_TIMEOUT, read_all, read_exactly, read_head, read_response, read_until, wait_for
from streaming_helpers import Start, connect, dechunk, server_threads

from flowno_io import EventSourceResponse, Request, StreamingResponse, StreamInterrupted, Topic
from flowno_io.server.server import DEFAULT_SHUTDOWN_GRACE

#: How soon a disconnect must close the producer: a hang bound well below anything the producer
#: would do by itself (sleep an hour, wait forever), loose enough for a loaded machine.
PROMPTLY = 5.0

GET = b"GET /stream HTTP/1.1\r\nHost: test\r\n\r\n"
GET_10 = b"GET /stream HTTP/1.0\r\n\r\n"
HEAD = b"HEAD /stream HTTP/1.1\r\nHost: test\r\n\r\n"
PIECES: list[Any] = [b"hello", "w\u00f6rld", b"", bytearray(b"x" * 300)]
# Each piece is one chunk (the empty piece sends nothing), then the last chunk.
CHUNKED_BODY = b"5\r\nhello\r\n6\r\nw\xc3\xb6rld\r\n12c\r\n" + b"x" * 300 + b"\r\n0\r\n\r\n"


@pytest.fixture
def start() -> Iterator[Start]:
    yield from server_threads()


class Producer:
    """An async generator factory that records how far it got and whether its finally ran."""

    def __init__(self) -> None:
        self.produced = 0
        self.finally_at: float | None = None
        self.interrupted: str | None = None
        self.started = threading.Event()

    async def pieces(self, items: list[Any], pause: float = 0.0) -> AsyncIterator[Any]:
        try:
            self.started.set()
            for item in items:
                if pause:
                    await sleep(pause)
                self.produced += 1
                yield item
        finally:
            self.finally_at = time.monotonic()

    async def then_idle(self, first: bytes, wait: Any) -> AsyncIterator[bytes]:
        """Yield ``first``, then park in ``wait()`` (which never returns on its own)."""
        try:
            self.produced += 1
            yield first
            self.started.set()
            await wait()
            yield b"never"
        except StreamInterrupted as exc:
            self.interrupted = exc.reason
            raise
        finally:
            self.finally_at = time.monotonic()


def test_chunked_framing_byte_for_byte_and_keep_alive(start: Start) -> None:
    thread = start(
        {
            # A pause before each piece: each is written on its own, as one chunk.
            "/stream": lambda request: StreamingResponse(
                Producer().pieces(PIECES, pause=0.01), content_type="text/plain"
            ),
            "/next": lambda request: "next",
        }
    )
    with connect(thread, GET) as sock:
        head, rest = read_head(sock)
        lines = head.split(b"\r\n")
        assert lines[0] == b"HTTP/1.1 200 OK"
        assert b"transfer-encoding: chunked" in [line.lower() for line in lines]
        assert b"content-type: text/plain" in [line.lower() for line in lines]
        assert not any(line.lower().startswith(b"content-length") for line in lines)
        assert not any(line.lower().startswith(b"connection") for line in lines)
        assert read_exactly(sock, len(CHUNKED_BODY), rest) == CHUNKED_BODY
        sock.sendall(b"GET /next HTTP/1.1\r\nHost: test\r\n\r\n")  # the connection is reusable
        head, rest = read_head(sock)
        assert head.startswith(b"HTTP/1.1 200") and read_exactly(sock, 4, rest) == b"next"


def test_pieces_yielded_without_waiting_go_out_in_one_chunk(start: Start) -> None:
    thread = start({"/stream": lambda request: StreamingResponse(Producer().pieces(PIECES))})
    with connect(thread, GET) as sock:
        head, rest = read_head(sock)
        assert head.startswith(b"HTTP/1.1 200")
        body = b"hello" + "w\u00f6rld".encode() + b"x" * 300
        expected = b"%x\r\n%b\r\n0\r\n\r\n" % (len(body), body)
        assert read_exactly(sock, len(expected), rest) == expected


def test_http10_gets_the_raw_body_until_close(start: Start) -> None:
    thread = start({"/stream": lambda request: StreamingResponse(Producer().pieces(PIECES))})
    with connect(thread, GET_10) as sock:
        head, rest = read_head(sock)
        lines = [line.lower() for line in head.split(b"\r\n")]
        assert b"connection: close" in lines
        assert not any(line.startswith(b"transfer-encoding") for line in lines)
        assert read_all(sock, rest) == b"hellow\xc3\xb6rld" + b"x" * 300


def test_head_sends_no_body_and_never_runs_the_producer(start: Start) -> None:
    producer = Producer()
    thread = start({"/stream": lambda request: StreamingResponse(producer.pieces(PIECES))})
    with connect(thread, HEAD) as sock:
        head, rest = read_head(sock)
        assert head.startswith(b"HTTP/1.1 200") and rest == b""
        sock.sendall(HEAD)  # nothing was sent after the head: the next answer follows directly
        head, rest = read_head(sock)
        assert head.startswith(b"HTTP/1.1 200") and rest == b""
    assert producer.produced == 0


def test_plain_iterable_body_is_closed_at_the_end(start: Start) -> None:
    closed: list[bool] = []

    def numbers() -> Iterator[str]:
        try:
            yield from ("1", "2", "3")
        finally:
            closed.append(True)

    thread = start(
        {"/stream": lambda request: StreamingResponse(numbers(), status=201, headers={"X-A": "b"})}
    )
    with connect(thread, GET) as sock:
        head, rest = read_head(sock)
        assert head.startswith(b"HTTP/1.1 201 Created") and b"x-a: b" in head.lower()
        body = read_until(sock, b"0\r\n\r\n", rest)
        chunks, complete = dechunk(body)
        assert (b"".join(chunks), complete) == (b"123", True)  # ready pieces may share a chunk
    assert closed == [True]


def test_backpressure_holds_the_producer_at_the_socket_buffer(start: Start) -> None:
    piece = b"p" * 65536
    producer = Producer()
    count = 1000  # 64 MiB: an implementation that buffers would produce all of it at once
    thread = start({"/stream": lambda request: StreamingResponse(producer.pieces([piece] * count))})
    with connect(thread, GET) as sock:
        _head, rest = read_head(sock)
        # An observation window, not synchronisation: nothing is read for 0.5 s, and a producer
        # that is not held back would run far ahead meanwhile (a slower machine only makes this
        # check weaker, never wrong).
        time.sleep(0.5)
        held_at = producer.produced
        assert held_at < 160, f"the producer ran {held_at} pieces ahead of a reader that reads nothing"
        body = read_until(sock, b"0\r\n\r\n", rest)
        chunks, ended = dechunk(body)
        assert ended and b"".join(chunks) == piece * count
    assert producer.produced == count


@pytest.mark.parametrize("parked_on", ["sleep", "event"])
def test_disconnect_closes_an_idle_producer_promptly(start: Start, parked_on: str) -> None:
    producer = Producer()
    events: list[Event] = []

    async def forever() -> None:
        if parked_on == "sleep":
            await sleep(3600)
        else:
            events.append(Event())
            await events[0].wait()

    def parked() -> bool:
        """The producer waits in ``forever()``: its hour-long sleep or its event is in the loop."""
        if parked_on == "sleep":
            return any(wake > time.perf_counter() + 60 for wake, _ in list(thread.loop.sleeping))
        return bool(events) and bool(thread.loop.event_waiters.get(events[0]))

    thread = start(
        {
            "/stream": lambda request: StreamingResponse(producer.then_idle(b"first", forever)),
            "/ok": lambda request: "ok",
        }
    )
    sock = connect(thread, GET)
    head, rest = read_head(sock)
    read_until(sock, b"first", rest)
    assert producer.started.wait(HANG_TIMEOUT)
    wait_for(parked, message="the producer never parked")
    closed_at = time.monotonic()
    sock.close()
    wait_for(lambda: producer.finally_at is not None, message="the producer was not closed")
    assert producer.finally_at is not None and producer.finally_at - closed_at < PROMPTLY
    assert producer.interrupted == "disconnect"
    # Nothing of the producer's hour-long sleep is left in the loop to resume anything later.
    assert not [wake for wake, _ in list(thread.loop.sleeping) if wake > time.perf_counter() + 60]
    with connect(thread, b"GET /ok HTTP/1.1\r\nHost: t\r\n\r\n") as other:  # still serving
        head, rest = read_head(other)
        assert head.startswith(b"HTTP/1.1 200") and read_exactly(other, 2, rest) == b"ok"


def test_disconnect_while_the_producer_is_writing(start: Start) -> None:
    producer = Producer()
    thread = start({"/stream": lambda request: StreamingResponse(producer.pieces([b"z" * 4096] * 100_000))})
    sock = connect(thread, GET, rcvbuf=16384)
    read_exactly(sock, 10_000)
    closed_at = time.monotonic()
    sock.close()  # with unread data: the kernel resets the connection
    wait_for(lambda: producer.finally_at is not None, message="the producer was not closed")
    assert producer.finally_at is not None and producer.finally_at - closed_at < PROMPTLY
    assert producer.produced < 100_000


def test_producer_error_leaves_the_body_unterminated(start: Start) -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield b"partial"
        raise RuntimeError("boom")

    thread = start({"/stream": lambda request: StreamingResponse(failing())})
    with connect(thread, GET) as sock:
        _head, rest = read_head(sock)
        chunks, ended = dechunk(read_all(sock, rest))
        assert chunks == [b"partial"] and not ended  # the client can tell the body is incomplete


def test_graceful_close_lets_a_stream_finish(start: Start) -> None:
    producer = Producer()
    thread = start(
        {"/stream": lambda request: StreamingResponse(producer.pieces([b"a", b"b", b"c"], pause=0.2))}
    )
    with connect(thread, GET) as sock:
        _head, rest = read_head(sock)
        rest = read_until(sock, b"a\r\n", rest)
        stopper = threading.Thread(target=thread.stop)
        stopper.start()
        chunks, ended = dechunk(read_all(sock, rest))
        stopper.join(HANG_TIMEOUT)
        assert chunks == [b"a", b"b", b"c"] and ended


def test_grace_expiry_force_closes_an_endless_stream(start: Start) -> None:
    producer = Producer()

    async def endless(request: Request) -> StreamingResponse:
        async def ticks() -> AsyncIterator[bytes]:
            try:
                while True:
                    await sleep(0.05)
                    yield b"tick"
            finally:
                producer.finally_at = time.monotonic()

        return StreamingResponse(ticks())

    thread = start({"/stream": endless})
    with connect(thread, GET) as sock:
        read_until(sock, b"tick", read_head(sock)[1])
        began = time.monotonic()
        done = threading.Event()

        async def close_quickly() -> None:
            await thread.server.close(grace=0.3)
            done.set()

        thread.loop.create_task(close_quickly())
        assert done.wait(HANG_TIMEOUT)
        assert producer.finally_at is not None
        # Not before the grace (0.3 s from the close, which began after ``began``; 10 ms of slack
        # for clock rounding), and long before the default grace of 10 s.
        assert 0.29 <= producer.finally_at - began < DEFAULT_SHUTDOWN_GRACE - 2
        _chunks, ended = dechunk(read_all(sock))
        assert not ended


# -- subscription streams that wait without a task (issue 20) ----------------------------------

EVENTS = b"GET /events HTTP/1.1\r\nHost: test\r\n\r\n"
PLAIN = b"GET /plain HTTP/1.1\r\nHost: test\r\n\r\n"


def _detached(thread: Any) -> list[Any]:
    """The streams of ``thread``'s server that run without a task right now."""
    from flowno_io.server.stream_monitor import _monitors

    monitor = _monitors.get(thread.server)
    return [] if monitor is None else [s for s in list(monitor.streams.values()) if s.detached]


def _topic_server(start: Start, topic: Topic[bytes], *, sse: bool = False) -> Any:
    def events(request: Request) -> StreamingResponse:
        if sse:
            return EventSourceResponse(topic.subscribe(), ping_interval=None)
        return StreamingResponse(topic.subscribe())

    return start({"/events": events, "/plain": lambda request: {"plain": True}})


def _publish(thread: Any, topic: Topic[bytes], *items: bytes, close: bool = False) -> None:
    """Publish ``items`` on the server's loop (then close the topic), and wait until done."""
    done = threading.Event()

    async def publish() -> None:
        for item in items:
            topic.publish(item)
        if close:
            topic.close()
        done.set()

    thread.loop.create_task(publish())
    assert done.wait(HANG_TIMEOUT)


def test_a_waiting_subscription_stream_holds_no_task_and_no_parser(start: Start) -> None:
    topic: Topic[bytes] = Topic()
    thread = _topic_server(start, topic)
    server = thread.server
    with connect(thread, EVENTS) as sock:
        _head, rest = read_head(sock)
        wait_for(lambda: len(_detached(thread)) == 1)
        (stream,) = _detached(thread)
        assert stream.task is None
        assert stream.writer.request._connection.parser._parser is None  # released while it waits
        wait_for(lambda: len(server._idle_workers) == server.stats["workers"])  # every worker free
        _publish(thread, topic, b"one", b"two")
        assert read_until(sock, b"3\r\ntwo\r\n", rest) == b"3\r\none\r\n3\r\ntwo\r\n"


def test_a_detached_stream_ends_with_its_topic_and_the_connection_serves_the_next_request(
    start: Start,
) -> None:
    topic: Topic[bytes] = Topic()
    thread = _topic_server(start, topic)
    with connect(thread, EVENTS) as sock:
        _head, rest = read_head(sock)
        wait_for(lambda: len(_detached(thread)) == 1)
        _publish(thread, topic, b"last", close=True)
        body = read_until(sock, b"0\r\n\r\n", rest)
        assert body == b"4\r\nlast\r\n0\r\n\r\n"
        sock.sendall(PLAIN)  # keep-alive: a new parser reads the next request
        assert b'{"plain":true}' in read_response(sock)


def test_a_pipelined_request_is_served_after_a_detached_stream(start: Start) -> None:
    topic: Topic[bytes] = Topic()
    thread = _topic_server(start, topic)
    with connect(thread, EVENTS + PLAIN) as sock:
        _head, rest = read_head(sock)
        wait_for(lambda: len(_detached(thread)) == 1)
        _publish(thread, topic, close=True)
        rest = read_until(sock, b"0\r\n\r\n", rest)
        assert rest.startswith(b"0\r\n\r\n")
        assert b'{"plain":true}' in read_response(sock, already=rest[len(b"0\r\n\r\n") :])


def test_a_client_leaving_a_detached_stream_closes_its_subscription_and_connection(start: Start) -> None:
    topic: Topic[bytes] = Topic()
    thread = _topic_server(start, topic, sse=True)
    sock = connect(thread, EVENTS)
    read_head(sock)
    wait_for(lambda: len(_detached(thread)) == 1 and thread.server.open_connections == 1)
    sock.close()
    wait_for(lambda: topic.subscribers == 0 and thread.server.open_connections == 0, timeout=PROMPTLY)
    assert _detached(thread) == []


def test_a_server_shutdown_ends_a_detached_event_stream_with_its_shutdown_event(start: Start) -> None:
    topic: Topic[bytes] = Topic()
    thread = _topic_server(start, topic, sse=True)
    with connect(thread, EVENTS) as sock:
        _head, rest = read_head(sock)
        wait_for(lambda: len(_detached(thread)) == 1)
        stopper = threading.Thread(target=thread.stop)
        stopper.start()
        chunks, ended = dechunk(read_all(sock, rest))
        stopper.join(HANG_TIMEOUT)
    assert chunks == [b": server shutting down\n\n"] and ended
    assert topic.subscribers == 0


def test_grace_expiry_force_closes_a_detached_stream_and_its_subscription(start: Start) -> None:
    topic: Topic[bytes] = Topic()
    thread = _topic_server(start, topic)  # a plain StreamingResponse runs to its end on shutdown
    with connect(thread, EVENTS) as sock:
        _head, rest = read_head(sock)
        wait_for(lambda: len(_detached(thread)) == 1)
        done = threading.Event()

        async def close_quickly() -> None:
            await thread.server.close(grace=0.3)
            done.set()

        thread.loop.create_task(close_quickly())
        assert done.wait(HANG_TIMEOUT)  # the close did not wait for the stream forever
        _chunks, ended = dechunk(read_all(sock, rest))
        assert not ended  # cut, not ended
    assert topic.subscribers == 0 and thread.server.open_connections == 0
