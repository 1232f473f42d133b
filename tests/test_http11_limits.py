"""The request parser's limits, sans-IO: what each one counts, and that read boundaries never matter.

A limit counts exactly what it names: the head limit the head's bytes (never the body bytes that
share a read with it), the trailer limits the trailer section. An unfinished line that httptools
buffers is bounded too, and so are empty lines before a request line. The property at the end
feeds generated requests whole, one byte at a time, and split at random points: the events (or
the error status) are the same, and the body never has more bytes than were fed. (Leading
whitespace of a field value is not reported by llhttp, so a head's count leaves out all of it but
one byte; the generated requests keep it to at most 2 bytes, where a split's count of an unfinished
line can never exceed the whole line's.)
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowno_io._errors import RemoteProtocolError
from flowno_io.protocol import http11_server
from flowno_io.protocol.http11_server import (
    DEFAULT_MAX_HEADER_BYTES,
    END_OF_MESSAGE,
    MAX_LEADING_BLANK_LINES,
    RequestHead,
    RequestParser,
)

HELLO = b"GET /hello HTTP/1.1\r\nHost: t\r\n\r\n"


@dataclass
class Outcome:
    """The heads a parser saw, its complete requests (head fields, body), and its error's status."""

    heads: list[tuple[str, bytes, str]]
    requests: list[tuple[str, bytes, str, bool, tuple[tuple[str, str], ...], bytes]]
    error: int | None
    body_bytes: int


def parse(chunks: list[bytes], parser: RequestParser | None = None) -> Outcome:
    """Feed ``chunks`` one by one; collect the requests that ended, and stop at an error."""
    parser = parser or RequestParser()
    heads = []
    requests = []
    head: RequestHead | None = None
    body: list[bytes] = []
    body_bytes = 0
    error = None
    for chunk in chunks:
        try:
            parser.feed(chunk)
        except RemoteProtocolError as exc:
            error = exc.status_hint
        while (event := parser.next_event()) is not None:
            if isinstance(event, RequestHead):
                head, body = event, []
                heads.append((head.method, head.target, head.http_version))
            elif event is END_OF_MESSAGE:
                assert head is not None
                fields = tuple(
                    (name, value) for name, values in head.headers._fields.items() for value in values
                )
                requests.append(
                    (head.method, head.target, head.http_version, head.keep_alive, fields, b"".join(body))
                )
                head = None
            else:
                assert isinstance(event, bytes)
                body.append(event)
                body_bytes += len(event)
        if error is not None:
            break
    return Outcome(heads, requests, error, body_bytes)


def byte_at_a_time(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def head_of_size(size: int) -> bytes:
    """A GET head of exactly ``size`` bytes (request line, Host, one filler field, empty line)."""
    start = b"GET / HTTP/1.1\r\nHost: t\r\nX-Fill: "
    filler = size - len(start) - 4
    assert filler >= 0
    return start + b"a" * filler + b"\r\n\r\n"


# -- the head limit counts the head ----------------------------------------------------------------


@pytest.mark.parametrize("split", ["whole", "byte-at-a-time", "at-every-line"])
def test_a_head_of_exactly_the_limit_passes_and_one_byte_more_is_431(split: str) -> None:
    for size, error in ((DEFAULT_MAX_HEADER_BYTES, None), (DEFAULT_MAX_HEADER_BYTES + 1, 431)):
        data = head_of_size(size)
        if split == "whole":
            chunks = [data]
        elif split == "byte-at-a-time":
            chunks = byte_at_a_time(data)
        else:
            chunks = data.split(b"\n")
            chunks = [line + b"\n" for line in chunks[:-1]] + [chunks[-1]]
        assert parse(chunks).error == error, (size, split)


def test_body_bytes_in_the_read_that_ends_a_split_head_do_not_count() -> None:
    body = b"x" * 20_000
    outcome = parse([b"POST /e HTTP/1.1\r\nHost: t\r\n", b"Content-Length: 20000\r\n\r\n" + body])
    assert outcome.error is None
    assert outcome.requests[0][-1] == body


def test_pipelined_requests_after_a_split_request_line_do_not_count() -> None:
    outcome = parse([b"GET /hel", b"lo HTTP/1.1\r\nHost: t\r\n\r\n" + HELLO * 600])
    assert outcome.error is None
    assert len(outcome.requests) == 601


def test_a_body_before_a_split_head_does_not_count() -> None:
    first = b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Length: 20000\r\n\r\n" + b"x" * 20_000
    outcome = parse([first + b"GET /hel", b"lo HTTP/1.1\r\nHost: t\r\n", b"\r\n"])
    assert outcome.error is None
    assert [request[1] for request in outcome.requests] == [b"/e", b"/hello"]


def test_more_than_max_headers_fields_is_431_whole_and_split() -> None:
    fields = b"".join(b"X-%d: v\r\n" % number for number in range(99))
    ok = b"GET / HTTP/1.1\r\nHost: t\r\n" + fields + b"\r\n"  # 100 fields
    over = b"GET / HTTP/1.1\r\nHost: t\r\nX-Extra: v\r\n" + fields + b"\r\n"  # 101 fields
    for chunks in ([ok], byte_at_a_time(ok)):
        assert parse(chunks).error is None
    for chunks in ([over], byte_at_a_time(over)):
        assert parse(chunks).error == 431


@pytest.mark.parametrize("piece", [1, 1000, 70_000])
def test_a_header_line_that_never_ends_is_431_within_the_limit_plus_one_read(piece: int) -> None:
    parser = RequestParser()
    parser.feed(b"GET / HTTP/1.1\r\nHost: t\r\nX-Endless: ")
    fed = 0
    with pytest.raises(RemoteProtocolError) as raised:
        while fed <= 2 * DEFAULT_MAX_HEADER_BYTES + piece:
            parser.feed(b"a" * piece)
            fed += piece
    assert raised.value.status_hint == 431
    assert fed <= DEFAULT_MAX_HEADER_BYTES + piece


def test_a_request_line_that_never_ends_is_431() -> None:
    parser = RequestParser()
    parser.feed(b"GET /")
    with pytest.raises(RemoteProtocolError) as raised:
        for _ in range(100):
            parser.feed(b"a" * 1000)
    assert raised.value.status_hint == 431


# -- trailers --------------------------------------------------------------------------------------

CHUNKED_HEAD = b"POST /e HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n"


def test_trailers_are_dropped_and_never_reach_a_global_or_the_next_request() -> None:
    data = CHUNKED_HEAD + b"X-Trailer: secret\r\n\r\n" + HELLO
    for chunks in ([data], byte_at_a_time(data)):
        outcome = parse(chunks)
        assert outcome.error is None
        assert [request[-1] for request in outcome.requests] == [b"abc", b""]
        assert all(name != "x-trailer" for request in outcome.requests for name, _ in request[4])
    for value in vars(http11_server).values():
        if isinstance(value, dict):
            assert "x-trailer" not in value


def test_trailer_limits_count_per_request() -> None:
    limit = http11_server.DEFAULT_MAX_TRAILERS
    trailers = b"".join(b"X-T: %d\r\n" % number for number in range(limit))
    ok = CHUNKED_HEAD + trailers + b"\r\n"
    assert parse([ok * 3]).error is None  # the count starts again for every request
    assert parse([CHUNKED_HEAD + trailers + b"X-T: over\r\n\r\n"]).error == 431
    big = b"".join(b"X-T: %s\r\n" % (b"v" * 1000) for _ in range(17))
    for chunks in ([CHUNKED_HEAD + big + b"\r\n"], byte_at_a_time(CHUNKED_HEAD + big + b"\r\n")):
        assert parse(chunks).error == 431


@pytest.mark.parametrize("piece", [1, 1000, 70_000])
def test_a_trailer_line_that_never_ends_is_431(piece: int) -> None:
    parser = RequestParser()
    parser.feed(CHUNKED_HEAD + b"X-Endless: ")
    fed = 0
    with pytest.raises(RemoteProtocolError) as raised:
        while fed <= 2 * http11_server.DEFAULT_MAX_TRAILER_BYTES + piece:
            parser.feed(b"a" * piece)
            fed += piece
    assert raised.value.status_hint == 431
    assert fed <= http11_server.DEFAULT_MAX_TRAILER_BYTES + piece


def test_long_chunk_data_without_line_ends_is_not_a_trailer() -> None:
    data = b"POST /e HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n9c40\r\n" + b"x" * 40_000
    outcome = parse([data[:70], data[70:20_000], data[20_000:], b"\r\n0\r\n\r\n"])
    assert outcome.error is None
    assert outcome.body_bytes == 40_000


# -- empty lines before a request ------------------------------------------------------------------


def test_an_empty_line_begins_the_next_request() -> None:
    parser = RequestParser()
    assert not parser.in_head
    parser.feed(b"\r")
    assert parser.in_head, "a byte of the next request arrived: the header timeout applies"
    parser = RequestParser()
    parser.feed(HELLO)
    assert not parser.in_head
    parser.feed(b"\r\n")
    assert parser.in_head


def test_a_body_ending_in_crlf_is_not_an_empty_line() -> None:
    parser = RequestParser()
    parser.feed(b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nab\r\n")
    assert not parser.in_head
    parser = RequestParser()
    parser.feed(b"POST /e HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\n\r\n")
    parser.feed(b"\r\n")
    assert not parser.in_head
    parser.feed(b"\r\n")
    assert parser.in_head


@pytest.mark.parametrize("split", ["whole", "byte-at-a-time"])
def test_empty_lines_before_a_request_are_capped(split: str) -> None:
    for lines, error in ((MAX_LEADING_BLANK_LINES, None), (MAX_LEADING_BLANK_LINES + 1, 400)):
        data = b"\r\n" * lines + HELLO
        outcome = parse([data] if split == "whole" else byte_at_a_time(data))
        assert outcome.error == error, (lines, split)


def test_empty_lines_alone_are_capped() -> None:
    parser = RequestParser()
    with pytest.raises(RemoteProtocolError) as raised:
        for _ in range(MAX_LEADING_BLANK_LINES + 1):
            parser.feed(b"\r\n")
    assert raised.value.status_hint == 400


def test_empty_lines_after_a_head_request_are_not_answered_as_a_head_request() -> None:
    parser = RequestParser()
    parser.feed(b"HEAD /hello HTTP/1.1\r\nHost: t\r\n\r\n")
    assert parser.message_method == "HEAD"
    with pytest.raises(RemoteProtocolError):
        parser.feed(b"\r\n" * (MAX_LEADING_BLANK_LINES + 1))
    assert parser.message_method is None  # the server answers the error with its body


def test_empty_lines_count_towards_the_head_limit() -> None:
    head = head_of_size(DEFAULT_MAX_HEADER_BYTES - 2)
    assert parse([b"\r\n" + head]).error is None
    assert parse([b"\r\n", head]).error is None
    assert parse([b"\r\n\r\n" + head]).error == 431
    assert parse([b"\r\n\r\n", head]).error == 431


# -- Upgrade and fragments -------------------------------------------------------------------------

UPGRADE = b"POST /e HTTP/1.1\r\nHost: t\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n"


@pytest.mark.parametrize(
    "framing, body",
    [
        (b"Content-Length: 5\r\n\r\nhello", b"hello"),
        (b"Transfer-Encoding: chunked\r\n\r\n2\r\nhe\r\n3\r\nllo\r\n0\r\nX-T: 1\r\n\r\n", b"hello"),
        (b"\r\n", b""),
    ],
    ids=["content-length", "chunked", "no-body"],
)
def test_an_upgrade_request_keeps_its_body_and_ends_the_connection(framing: bytes, body: bytes) -> None:
    data = UPGRADE + framing + HELLO
    for chunks in ([data], byte_at_a_time(data)):
        outcome = parse(chunks)
        assert outcome.error is None
        assert [(request[1], request[-1]) for request in outcome.requests] == [(b"/e", body)]


def test_an_upgrade_body_still_has_the_body_limit() -> None:
    parser = RequestParser(max_body_bytes=4)
    with pytest.raises(RemoteProtocolError) as raised:
        parser.feed(UPGRADE + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    assert raised.value.status_hint == 413


def test_a_fragment_is_dropped_from_the_target() -> None:
    outcome = parse([b"GET /a/b?c=d#frag?x HTTP/1.1\r\nHost: t\r\n\r\n"])
    assert outcome.requests[0][1] == b"/a/b?c=d"
    parser = RequestParser()
    parser.feed(b"GET /a%20b#f HTTP/1.1\r\nHost: t\r\n\r\n")
    head = parser.next_event()
    assert isinstance(head, RequestHead)
    assert (head.path, head.query_string) == ("/a b", "")


# -- the property: read boundaries never matter ----------------------------------------------------

#: Small limits, so that generated requests cross them often (and byte-at-a-time stays cheap).
LIMITS = {
    "max_header_bytes": 400,
    "max_headers": 6,
    "max_body_bytes": 600,
    "max_trailers": 3,
    "max_trailer_bytes": 120,
}


@st.composite
def request_bytes(draw: st.DrawFn) -> bytes:
    """One well-formed HTTP/1.1 request, of a size around the LIMITS."""
    method = draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "OPTIONS"]))
    size = st.one_of(st.integers(0, 40), st.integers(0, 420))
    target = b"/" + b"p" * draw(size) + draw(st.sampled_from([b"", b"?a=1", b"#f", b"?q=%20#x"]))
    lines = [b"%s %s HTTP/1.1" % (method.encode(), target), b"Host: t"]
    for number in range(draw(st.integers(0, 7))):
        ows = draw(st.sampled_from([b"", b" ", b"  ", b"\t"]))  # at most 2 bytes: see the docstring
        value = b"v" * draw(st.one_of(st.integers(0, 30), st.integers(0, 150)))
        lines.append(b"X-F%d:%s%s%s" % (number, ows, value, draw(st.sampled_from([b"", b" "]))))
    kind = draw(st.sampled_from(["none", "length", "chunked"]))
    body = b""
    if kind == "length":
        content = draw(st.binary(max_size=40)) * draw(st.integers(0, 20))
        lines.append(b"Content-Length: %d" % len(content))
        body = content
    elif kind == "chunked":
        lines.append(b"Transfer-Encoding: chunked")
        for _ in range(draw(st.integers(0, 4))):
            chunk = draw(st.binary(min_size=1, max_size=40)) * draw(st.integers(1, 8))
            body += b"%x\r\n%s\r\n" % (len(chunk), chunk)
        body += b"0\r\n"
        for number in range(draw(st.integers(0, 4))):
            body += b"X-T%d: %s\r\n" % (
                number,
                b"t" * draw(st.one_of(st.integers(0, 20), st.integers(0, 60))),
            )
        body += b"\r\n"
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


@st.composite
def request_streams(draw: st.DrawFn) -> bytes:
    """Up to three pipelined requests, maybe after empty lines (only before the first: see the
    RequestParser docstring for why empty lines between requests in one read are not counted)."""
    leading = b"\r\n" * draw(st.integers(0, MAX_LEADING_BLANK_LINES + 1))
    return leading + b"".join(draw(st.lists(request_bytes(), min_size=1, max_size=3)))


@settings(max_examples=300, deadline=None)
@given(data=request_streams(), cuts=st.data())
def test_any_split_gives_the_same_events(data: bytes, cuts: st.DataObject) -> None:
    whole = parse([data], RequestParser(**LIMITS))
    points = sorted(set(cuts.draw(st.lists(st.integers(1, max(1, len(data) - 1)), max_size=12))))
    pieces = [data[start:end] for start, end in zip([0, *points], [*points, len(data)], strict=True)]
    for chunks in (byte_at_a_time(data), pieces):
        outcome = parse(chunks, RequestParser(**LIMITS))
        assert (outcome.heads, outcome.requests, outcome.error) == (whole.heads, whole.requests, whole.error)
        assert outcome.body_bytes <= len(data)
    assert whole.body_bytes <= len(data)
