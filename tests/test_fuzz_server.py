"""Fuzzing the server's request path over real sockets, one server for the module.

Inputs: arbitrary bytes, HTTP-shaped token soup, valid request sequences and corpus files with
byte-level mutations, each sent whole or cut at arbitrary points. The only outcomes allowed:

* a sequence of well-formed responses (read with h11, code we did not write): normal ones
  (200/204/404/405) keep the connection; an error (400/413/431/505, or 500 from the crashing
  route) carries ``Connection: close`` and is the last thing sent; a streaming response may be
  cut short, because the client half-closes after sending and the server takes that for a
  client that left;
* then a clean close (the half-close makes every input end);
* never a hang (socket timeouts), never an exception in the flowno loop (``loop.exceptions``), an
  unexpected error logged, or a server that stops answering (checked after every example).

Valid request sequences cut at arbitrary points must get exactly the responses they get whole.
``fuzz/fuzz_long.py`` runs the same properties for longer (``make fuzz``).
"""

from __future__ import annotations

import itertools
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import h11
import pytest
from helpers import HANG_TIMEOUT, read_response, wait_for
from hypothesis import given, settings
from hypothesis import strategies as st

from flowno_io import EventSourceResponse, HttpServer, Request, Response, ServerSentEvent, StreamingResponse
from flowno_io._errors import RemoteProtocolError
from flowno_io.protocol.http11_server import RequestHead, RequestParser
from flowno_io.testing import ServerThread

#: Examples per property in ``make test``; ``fuzz/fuzz_long.py`` runs many more.
SHORT_EXAMPLES = 100
#: Pause between the pieces of a request sent cut (so the server reads them separately).
PIECE_PAUSE = 0.0005
CORPUS = Path(__file__).parent / "corpus" / "requests"

#: Statuses after which the connection may go on; the error statuses must close it.
NORMAL_STATUSES = frozenset({200, 204, 404, 405})
ERROR_STATUSES = frozenset({400, 413, 431, 500, 505})

# -- the server under test -------------------------------------------------------------------------

#: Small limits, so that fuzzing reaches them.
MAX_HEADER_BYTES, MAX_HEADERS, MAX_BODY_BYTES = 2048, 16, 4096

STREAM_BODY = b"onetwothree"
SSE_BODY = b'id: 1\ndata: first\n\nevent: second\ndata: {"n":2}\n\n'


async def _pieces() -> AsyncIterator[bytes]:
    for piece in (b"one", b"two", b"three"):
        yield piece


async def _events() -> AsyncIterator[ServerSentEvent]:
    yield ServerSentEvent("first", id="1")
    yield ServerSentEvent({"n": 2}, event="second")


def fuzz_server() -> HttpServer:
    """A server with small limits (so fuzzing reaches them) and a route for each code path."""
    server = HttpServer(
        "127.0.0.1",
        0,
        max_header_bytes=MAX_HEADER_BYTES,
        max_headers=MAX_HEADERS,
        max_body_bytes=MAX_BODY_BYTES,
        header_timeout=2.0,
        body_timeout=2.0,
        keepalive_timeout=2.0,
        write_timeout=2.0,
    )
    server.add_route("/hello", lambda request: "Hello", methods=["GET"])
    server.add_route("/empty", lambda request: None, methods=["GET"])

    async def echo(request: Request) -> Response:
        return Response(await request.body(), content_type="application/octet-stream")

    def boom(request: Request) -> str:
        raise RuntimeError("fuzz: handler failure")

    server.add_route("/echo", echo, methods=["POST", "PUT"])
    server.add_route("/ignore", lambda request: "ignored", methods=["POST"])
    server.add_route("/stream", lambda request: StreamingResponse(_pieces()), methods=["GET"])
    server.add_route(
        "/sse", lambda request: EventSourceResponse(_events(), ping_interval=None), methods=["GET"]
    )
    server.add_route("/boom", boom, methods=["GET"])
    return server


class ErrorLog(logging.Handler):
    """Collects the flowno-io ERROR records that mean a bug (all but the /boom route's)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if "/boom" not in record.getMessage():
            self.records.append(record)


@dataclass
class FuzzTarget:
    """The running fuzz server, and the checks that it is still healthy."""

    thread: ServerThread
    errors: ErrorLog
    address: tuple[str, int]
    examples: int = 0

    def check_healthy(self) -> None:
        """No exception in the loop, no unexpected error logged, and a request still answered."""
        self.examples += 1
        assert self.thread.loop.exceptions == {}, (
            f"exception in the flowno loop: {self.thread.loop.exceptions}"
        )
        assert not self.errors.records, [record.getMessage() for record in self.errors.records]
        assert self.thread.error is None, self.thread.error
        with socket.create_connection(self.address, timeout=HANG_TIMEOUT) as sock:
            sock.sendall(b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n")
            assert read_response(sock, HANG_TIMEOUT).endswith(b"\r\n\r\nHello"), "the server stopped serving"


@contextmanager
def running_target() -> Iterator[FuzzTarget]:
    """Serve :func:`fuzz_server` in a thread; at the end it must be healthy with nothing left open."""
    errors = ErrorLog()
    logger = logging.getLogger("flowno_io")
    logger.addHandler(errors)
    thread = ServerThread(fuzz_server())
    try:
        thread.start()
        target = FuzzTarget(thread, errors, ("127.0.0.1", thread.server.port))
        yield target
        target.check_healthy()
        wait_for(lambda: thread.server.open_connections == 0, HANG_TIMEOUT, "connections leaked")
    finally:
        thread.stop()
        logger.removeHandler(errors)


@pytest.fixture(scope="module")
def target() -> Iterator[FuzzTarget]:
    """One fuzz server for the module."""
    with running_target() as running:
        yield running


# -- talking to it ---------------------------------------------------------------------------------


def send_and_read(address: tuple[str, int], pieces: Sequence[bytes], *, half_close: bool) -> bytes:
    """Send ``pieces`` (pausing between them), optionally half-close, and read until the server closes.

    Raises:
        AssertionError: the server neither sent nor closed for ``HANG_TIMEOUT`` seconds.
    """
    with socket.create_connection(address, timeout=HANG_TIMEOUT) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for index, piece in enumerate(pieces):
                if index:
                    time.sleep(PIECE_PAUSE)
                sock.sendall(piece)
            if half_close:
                sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the server answered and closed before taking everything: read what it sent
        chunks = []
        while True:
            try:
                data = sock.recv(65536)
            except TimeoutError:
                raise AssertionError(f"hung: no byte and no close for {HANG_TIMEOUT} s") from None
            except ConnectionResetError:
                break
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


@dataclass
class Received:
    """One response as h11 read it."""

    status: int
    headers: dict[bytes, bytes]
    body: bytes
    complete: bool
    interim: list[int] = field(default_factory=list)

    @property
    def closes(self) -> bool:
        return b"close" in self.headers.get(b"connection", b"").lower()


def read_with_h11(data: bytes, methods: Sequence[str] = ()) -> list[Received]:
    """Every response in ``data`` (everything the server sent before closing), read by h11.

    ``methods`` are the methods of the requests the responses answer, in order (a HEAD response
    has no body); ``GET`` beyond them.

    Raises:
        AssertionError: the bytes are not a sequence of well-formed responses (a cut-short chunked
            body at the very end is allowed and reported with ``complete=False``).
    """
    connection = h11.Connection(h11.CLIENT)
    connection.receive_data(data)
    connection.receive_data(b"")
    received: list[Received] = []
    while connection.trailing_data[0]:  # a response begins (the server did not close between two)
        method = methods[len(received)] if len(received) < len(methods) else "GET"
        connection.send(h11.Request(method=method, target="/", headers=[("Host", "t")]))
        connection.send(h11.EndOfMessage())
        head: h11.Response | None = None
        interim: list[int] = []
        body: list[bytes] = []
        while True:
            try:
                event = connection.next_event()
            except h11.RemoteProtocolError as exc:
                chunked = head is not None and b"chunked" in dict(head.headers).get(b"transfer-encoding", b"")
                assert head is not None and chunked, f"malformed response bytes ({exc}): {data[:600]!r}"
                received.append(
                    Received(head.status_code, dict(head.headers), b"".join(body), False, interim)
                )
                return received
            if isinstance(event, h11.InformationalResponse):
                interim.append(event.status_code)
            elif isinstance(event, h11.Response):
                head = event
            elif isinstance(event, h11.Data):
                body.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                received.append(Received(head.status_code, dict(head.headers), b"".join(body), True, interim))
                break
            else:  # ConnectionClosed, NEED_DATA, PAUSED: not inside a response once EOF was fed
                raise AssertionError(f"unexpected h11 event {event!r}")
        if connection.their_state is h11.MUST_CLOSE:
            assert connection.trailing_data[0] == b"", "bytes after a response that closes"
            return received
        connection.start_next_cycle()
    return received


def check_allowed_outcome(responses: list[Received]) -> None:
    """Normal responses, then at most one error response (with Connection: close) as the last."""
    for index, response in enumerate(responses):
        last = index == len(responses) - 1
        assert set(response.interim) <= {100}, response.interim
        if response.status in ERROR_STATUSES:
            assert response.closes, f"{response.status} without Connection: close"
            assert last, f"a response after a {response.status}"
        else:
            assert response.status in NORMAL_STATUSES, f"unexpected status {response.status}"
        if not response.complete:
            assert last  # read_with_h11 allows it only for a chunked body cut at the end


def request_parser() -> RequestParser:
    """A request parser with the fuzz server's limits."""
    return RequestParser(MAX_HEADER_BYTES, MAX_HEADERS, MAX_BODY_BYTES)


def request_methods(data: bytes) -> list[str]:
    """The methods of the requests the server answers for ``data``, as its parser reads them.

    Only HEAD matters (its responses have no body). A request whose head fails once its method is
    known (a limit, a bad Host) gets an error response too, so its method is listed.
    """
    parser = request_parser()
    methods: list[str] = []
    failed = False
    try:
        parser.feed(data)
    except RemoteProtocolError:
        failed = True
    while (event := parser.next_event()) is not None:
        if isinstance(event, RequestHead):
            methods.append(event.method)
    if failed and parser.message_method is not None and parser.messages_in_progress == 0:
        methods.append(parser.message_method)  # its head failed after the method was read
    return methods


#: A connection opening with these bytes speaks HTTP/2 (prior knowledge: the server's ``http2``).
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: HTTP/2 frame types (RFC 9113 §6): DATA to CONTINUATION.
HTTP2_FRAME_TYPES = range(10)


def read_http2_frames(data: bytes) -> list[tuple[int, int]]:
    """The ``(type, stream id)`` of every frame in ``data``, which must open with the server's
    SETTINGS (RFC 9113 §3.4) and hold whole frames only (the server closes between frames).

    Raises:
        AssertionError: anything else.
    """
    frames: list[tuple[int, int]] = []
    offset = 0
    while offset < len(data):
        assert len(data) - offset >= 9, f"a cut HTTP/2 frame header: {data[offset:]!r}"
        length = int.from_bytes(data[offset : offset + 3], "big")
        kind = data[offset + 3]
        stream = int.from_bytes(data[offset + 5 : offset + 9], "big") & 0x7FFFFFFF
        assert kind in HTTP2_FRAME_TYPES, f"unknown HTTP/2 frame type {kind}: {data[:600]!r}"
        assert offset + 9 + length <= len(data), f"a cut HTTP/2 frame: {data[:600]!r}"
        frames.append((kind, stream))
        offset += 9 + length
    assert frames[:1] == [(4, 0)], f"no SETTINGS first: {data[:600]!r}"
    return frames


def check_input(target: FuzzTarget, pieces: Sequence[bytes]) -> list[Received]:
    """Send hostile ``pieces``, half-close, and check the outcome and the server's health.

    Bytes opening with the HTTP/2 preface get HTTP/2 frames back (the fuzz server serves both, as
    every server does by default), checked frame by frame; everything else, HTTP/1.1 responses.
    """
    data = send_and_read(target.address, pieces, half_close=True)
    if b"".join(pieces).startswith(HTTP2_PREFACE):
        read_http2_frames(data)
        target.check_healthy()
        return []
    responses = read_with_h11(data, request_methods(b"".join(pieces)))
    check_allowed_outcome(responses)
    target.check_healthy()
    return responses


def test_the_http2_preface_is_answered_with_http2_frames(target: FuzzTarget) -> None:
    """What the fuzzers found (``PRI * HTTP/2.0...`` then nothing, or garbage): the server answers
    in HTTP/2, SETTINGS first, then GOAWAY for the garbage, and keeps serving HTTP/1.1."""
    for tail in (b"", b"\x00\x00\x00garbage that is no frame", b"GET / HTTP/1.1\r\n\r\n"):
        frames = read_http2_frames(send_and_read(target.address, [HTTP2_PREFACE, tail], half_close=True))
        assert frames[0] == (4, 0)
        if tail:
            assert (7, 0) in frames, frames  # GOAWAY: the bytes after the preface are no frames
        target.check_healthy()
    with pytest.raises(AssertionError):
        read_http2_frames(b"HTTP/1.1 400 Bad Request\r\n\r\n")


# -- strategies ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ValidRequest:
    """A request the fuzz server answers, with the response it must get."""

    method: str
    path: str
    status: int
    response_body: bytes | None  # None: not checked (JSON error bodies)
    body: bytes = b""
    chunks: tuple[bytes, ...] | None = None
    version: str = "1.1"

    def encode(self, last: bool) -> bytes:
        """The request's bytes; the last request of a sequence asks to close the connection."""
        lines = [f"{self.method} {self.path} HTTP/{self.version}".encode(), b"Host: t"]
        if self.version == "1.0":
            if not last:
                lines.append(b"Connection: keep-alive")
        elif last:
            lines.append(b"Connection: close")
        if self.chunks is not None:
            lines.append(b"Transfer-Encoding: chunked")
            framed = b"".join(b"%x\r\n%b\r\n" % (len(c), c) for c in self.chunks if c) + b"0\r\n\r\n"
            return b"\r\n".join(lines) + b"\r\n\r\n" + framed
        if self.body or self.method in ("POST", "PUT"):
            lines.append(b"Content-Length: %d" % len(self.body))
        return b"\r\n".join(lines) + b"\r\n\r\n" + self.body


small_bodies = st.binary(max_size=80)
valid_requests = st.one_of(
    st.just(ValidRequest("GET", "/hello", 200, b"Hello")),
    st.just(ValidRequest("GET", "/hello?q=1&r=%20", 200, b"Hello")),
    st.just(ValidRequest("HEAD", "/hello", 200, b"")),
    st.just(ValidRequest("GET", "/hello", 200, b"Hello", version="1.0")),
    st.just(ValidRequest("GET", "/empty", 204, b"")),
    st.just(ValidRequest("GET", "/missing", 404, None)),
    st.just(ValidRequest("DELETE", "/hello", 405, None)),
    st.just(ValidRequest("GET", "/stream", 200, STREAM_BODY)),
    st.just(ValidRequest("GET", "/sse", 200, SSE_BODY)),
    small_bodies.map(lambda body: ValidRequest("POST", "/echo", 200, body, body=body)),
    small_bodies.map(lambda body: ValidRequest("PUT", "/echo", 200, body, body=body)),
    small_bodies.map(lambda body: ValidRequest("POST", "/ignore", 200, b"ignored", body=body)),
    st.lists(small_bodies, max_size=4).map(
        lambda chunks: ValidRequest("POST", "/echo", 200, b"".join(chunks), chunks=tuple(chunks))
    ),
)
#: /boom answers 500 and closes, so it may only come last.
BOOM = ValidRequest("GET", "/boom", 500, None)


@st.composite
def request_sequences(draw: st.DrawFn) -> list[ValidRequest]:
    """One to four valid requests, possibly ending with the crashing route."""
    requests = draw(st.lists(valid_requests, min_size=1, max_size=4))
    if draw(st.booleans()) and draw(st.booleans()):
        requests.append(BOOM)
    return requests


def encode_sequence(requests: Sequence[ValidRequest]) -> bytes:
    """The pipelined bytes of ``requests`` (the last asks to close)."""
    return b"".join(request.encode(index == len(requests) - 1) for index, request in enumerate(requests))


@st.composite
def cut(draw: st.DrawFn, data: bytes, max_cuts: int = 10) -> list[bytes]:
    """``data`` cut at up to ``max_cuts`` arbitrary points."""
    if len(data) < 2:
        return [data]
    points = draw(st.lists(st.integers(1, len(data) - 1), max_size=max_cuts, unique=True))
    bounds = [0, *sorted(points), len(data)]
    return [data[start:end] for start, end in itertools.pairwise(bounds)]


HTTP_TOKENS = [
    *[b"GET ", b"POST ", b"HEAD ", b"PUT ", b"PRI ", b"get ", b"/hello", b"/echo", b"/ignore", b"/sse"],
    *[b"/stream", b"/boom", b"*", b"http://t/hello", b" HTTP/1.1", b" HTTP/1.0", b" HTTP/2.0", b"?a=%00"],
    *[b"\r\n", b"\n", b"\r", b"\r\n\r\n", b"Host: t", b"Content-Length: ", b"Transfer-Encoding: chunked"],
    *[
        b"Transfer-Encoding: identity",
        b"Connection: close",
        b"Connection: keep-alive",
        b"Expect: 100-continue",
    ],
    *[b"Upgrade: h2c", b"0", b"3", b"5", b"-1", b"ffffffffffffffffff", b"abc", b":", b" ", b"\t", b";ext"],
    *[b"\x00", b"\x7f", b"\xff", b"X-A: " + b"a" * 300],
]
token_soup = st.lists(st.sampled_from(HTTP_TOKENS), max_size=40).map(b"".join)
CORPUS_FILES = sorted(path.read_bytes() for path in CORPUS.glob("*.http"))


@st.composite
def mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with one to four byte-level mutations."""
    buffer = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["replace", "insert", "delete", "duplicate", "bare_lf"]))
        position = draw(st.integers(0, max(0, len(buffer) - 1)))
        if kind == "replace" and buffer:
            buffer[position] = draw(st.integers(0, 255))
        elif kind == "insert":
            buffer[position:position] = draw(st.binary(min_size=1, max_size=8) | st.sampled_from(HTTP_TOKENS))
        elif kind == "delete":
            del buffer[position : position + draw(st.integers(1, 16))]
        elif kind == "duplicate":
            length = draw(st.integers(1, 64))
            buffer[position:position] = buffer[position : position + length]
        elif kind == "bare_lf":
            buffer = bytearray(bytes(buffer).replace(b"\r\n", b"\n", draw(st.integers(1, 3))))
    return bytes(buffer)


seeds = st.one_of(request_sequences().map(encode_sequence), st.sampled_from(CORPUS_FILES))

# -- the properties (plain functions, so fuzz/fuzz_long.py can run them with other settings) --------


def check_arbitrary_bytes(target: FuzzTarget, data: bytes, cuts: st.DataObject) -> None:
    """Arbitrary bytes, cut anywhere: only allowed outcomes."""
    check_input(target, cuts.draw(cut(data)))


def check_mutated_request(target: FuzzTarget, seed: bytes, cuts: st.DataObject) -> None:
    """A valid request sequence or corpus file, mutated, cut anywhere: only allowed outcomes."""
    check_input(target, cuts.draw(cut(cuts.draw(mutated(seed)))))


def check_split_valid_requests(target: FuzzTarget, requests: list[ValidRequest], cuts: st.DataObject) -> None:
    """Valid pipelined requests cut anywhere get exactly their responses, then a close."""
    pieces = cuts.draw(cut(encode_sequence(requests)))
    data = send_and_read(target.address, pieces, half_close=False)
    responses = read_with_h11(data, [request.method for request in requests])
    got = [
        (r.status, r.body if q.response_body is not None else None)
        for r, q in zip(responses, requests, strict=False)
    ]
    assert got == [(q.status, q.response_body) for q in requests], data[:1000]
    assert all(response.complete for response in responses)
    target.check_healthy()


def fuzz_settings(examples: int) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Hypothesis settings for a property over sockets: no deadline, ``examples`` examples."""
    return settings(max_examples=examples, deadline=None)


@fuzz_settings(SHORT_EXAMPLES)
@given(data=st.binary(max_size=600), cuts=st.data())
def test_arbitrary_bytes(target: FuzzTarget, data: bytes, cuts: st.DataObject) -> None:
    check_arbitrary_bytes(target, data, cuts)


@fuzz_settings(SHORT_EXAMPLES)
@given(data=token_soup, cuts=st.data())
def test_http_token_soup(target: FuzzTarget, data: bytes, cuts: st.DataObject) -> None:
    check_arbitrary_bytes(target, data, cuts)


@fuzz_settings(SHORT_EXAMPLES)
@given(seed=seeds, cuts=st.data())
def test_mutated_requests(target: FuzzTarget, seed: bytes, cuts: st.DataObject) -> None:
    check_mutated_request(target, seed, cuts)


@fuzz_settings(SHORT_EXAMPLES)
@given(requests=request_sequences(), cuts=st.data())
def test_valid_requests_cut_anywhere_get_their_responses(
    target: FuzzTarget, requests: list[ValidRequest], cuts: st.DataObject
) -> None:
    check_split_valid_requests(target, requests, cuts)


def test_oracle_rejects_what_the_server_must_never_send() -> None:
    """The checks above can fail: a 400 that keeps the connection, bytes after a close, garbage."""
    error = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n"
    error_closing = error + b"Connection: close\r\n\r\n"
    with pytest.raises(AssertionError):
        check_allowed_outcome(read_with_h11(error + b"\r\n"))
    with pytest.raises(AssertionError):
        read_with_h11(error_closing + b"HTTP/1.1 200 OK\r\n")
    with pytest.raises(AssertionError):
        read_with_h11(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab")
    with pytest.raises(AssertionError):
        check_allowed_outcome(read_with_h11(b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n"))
    check_allowed_outcome(read_with_h11(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi" + error_closing))


# -- what the fuzzing found ------------------------------------------------------------------------


def test_error_response_to_head_has_no_body(target: FuzzTarget) -> None:
    """Found by this fuzz (fixed): the 500 of a crashing handler carried a body for HEAD."""
    data = send_and_read(target.address, [b"HEAD /boom HTTP/1.1\r\nHost: t\r\n\r\n"], half_close=False)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500 ")
    assert body == b"", f"a HEAD response with a body: {body!r}"


def test_valid_request_before_a_malformed_one_is_answered(target: FuzzTarget) -> None:
    """Found by this fuzz (fixed): a 400 replaced the answers of valid requests read with it."""
    pipelined = b"HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n\x00ET /hello HTTP/1.1\r\nHost: t\r\n\r\n"
    responses = read_with_h11(send_and_read(target.address, [pipelined], half_close=False), ["HEAD"])
    assert [response.status for response in responses] == [200, 400]


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"HEAD /hello HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HEAD /hello HTTP/1.1\r\nHost: t\r\nContent-Length: 99999\r\n\r\n",
    ],
    ids=["bad-chunk", "over-max-body"],
)
def test_error_for_a_malformed_head_request_has_no_body(target: FuzzTarget, request_bytes: bytes) -> None:
    data = send_and_read(target.address, [request_bytes], half_close=False)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith((b"HTTP/1.1 400 ", b"HTTP/1.1 413 ")), head
    assert body == b"", f"a HEAD response with a body: {body!r}"
