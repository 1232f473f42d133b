"""Client side of HTTP/1.1, sans-IO: request serialization and the response parser.

Every response shape is parsed whole, byte at a time, and with trailing data; hypothesis checks
that any input either parses or raises our protocol error, and that chunk boundaries never matter.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowno_io._errors import LocalProtocolError, RemoteProtocolError, TooLargeError
from flowno_io.protocol.http11_client import CHUNKED_END, ResponseParser, encode_chunk, encode_request_head

CONTENT_LENGTH = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world"
CHUNKED = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n"
)
CLOSE_DELIMITED = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhello world"
NO_CONTENT = b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n"
NOT_MODIFIED = b"HTTP/1.1 304 Not Modified\r\nContent-Length: 99\r\n\r\n"
INTERIM = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n" + CONTENT_LENGTH


def parse(data: bytes, *, split: int = 0, eof: bool = False, **options: Any) -> tuple[ResponseParser, bytes]:
    """Feed ``data`` whole (split=0) or in pieces of ``split`` bytes; return parser and body."""
    parser = ResponseParser(**options)
    body = b""
    pieces = [data] if split == 0 else [data[i : i + split] for i in range(0, len(data), split)]
    for piece in pieces:
        parser.feed(piece)
        body += parser.take_body()
    if eof:
        parser.feed_eof()
        body += parser.take_body()
    return parser, body


SPLITS = pytest.mark.parametrize("split", [0, 1, 7])


# -- requests -------------------------------------------------------------------------------


def test_request_head_serialization() -> None:
    head = encode_request_head("POST", "/a?b=1", [("host", "h:8080"), ("content-length", "2")])
    assert head == b"POST /a?b=1 HTTP/1.1\r\nhost: h:8080\r\ncontent-length: 2\r\n\r\n"


@pytest.mark.parametrize("method", ["GET /", "", "GE\rT", "GET\n"])
def test_request_rejects_bad_method(method: str) -> None:
    with pytest.raises(LocalProtocolError):
        encode_request_head(method, "/", [])


@pytest.mark.parametrize("target", ["", "/a b", "/a\r\nX: 1", "/caf\u00e9"])
def test_request_rejects_bad_target(target: str) -> None:
    with pytest.raises(LocalProtocolError):
        encode_request_head("GET", target, [])


def test_chunk_framing() -> None:
    assert encode_chunk(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"
    assert encode_chunk(b"") == b""  # an empty chunk would end the body
    assert CHUNKED_END == b"0\r\n\r\n"


# -- response framing -----------------------------------------------------------------------


@SPLITS
def test_content_length(split: int) -> None:
    parser, body = parse(CONTENT_LENGTH, split=split)
    assert (parser.status_code, parser.reason, parser.http_version) == (200, "OK", "1.1")
    assert parser.headers.get("content-type") == "text/plain"
    assert body == b"hello world"
    assert parser.message_complete and parser.reusable


@SPLITS
def test_chunked_with_extensions_and_trailers(split: int) -> None:
    parser, body = parse(CHUNKED, split=split)
    assert body == b"hello world"
    assert parser.message_complete and parser.reusable and not parser.close_delimited


@SPLITS
def test_close_delimited_body_ends_at_eof(split: int) -> None:
    parser, body = parse(CLOSE_DELIMITED, split=split)
    assert parser.close_delimited and not parser.message_complete
    parser.feed_eof()
    assert body == b"hello world"
    assert parser.message_complete and not parser.reusable


@SPLITS
def test_head_response_has_no_body(split: int) -> None:
    parser, body = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", split=split, head_request=True)
    assert body == b"" and parser.message_complete and parser.reusable
    assert parser.headers.get("content-length") == "1000"


@SPLITS
@pytest.mark.parametrize("response", [NO_CONTENT, NOT_MODIFIED])
def test_204_and_304_have_no_body(response: bytes, split: int) -> None:
    parser, body = parse(response, split=split)
    assert body == b"" and parser.message_complete and parser.reusable


@SPLITS
def test_interim_responses_are_skipped(split: int) -> None:
    parser, body = parse(INTERIM, split=split)
    assert parser.status_code == 200 and body == b"hello world"
    assert "link" not in parser.headers


def test_switching_protocols_is_refused() -> None:
    with pytest.raises(RemoteProtocolError, match="switched protocols"):
        parse(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n")


@pytest.mark.parametrize(
    ("response", "reusable"),
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", True),
    ],
)
def test_keep_alive_rules(response: bytes, reusable: bool) -> None:
    parser, _ = parse(response)
    assert parser.message_complete and parser.reusable is reusable


@pytest.mark.parametrize("response", [CONTENT_LENGTH, CHUNKED])
def test_trailing_data_makes_connection_unusable(response: bytes) -> None:
    parser, body = parse(response + b"HTTP/1.1 200 OK\r\n")
    assert body == b"hello world" and parser.message_complete
    assert parser.trailing_data and not parser.reusable


def test_head_response_followed_by_bytes_is_not_reused() -> None:
    parser, _ = parse(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", head_request=True)
    assert parser.message_complete and not parser.reusable


def test_repeated_headers_and_obs_text() -> None:
    parser, _ = parse(
        b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\nX-N: caf\xe9\r\nContent-Length: 0\r\n\r\n"
    )
    assert parser.headers.get_all("set-cookie") == ["a=1", "b=2"]
    assert parser.headers.get("x-n") == "caf\u00e9"


# -- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "response",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 2000 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nBad Header\r\n\r\n",
    ],
)
def test_malformed_responses(response: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        parse(response)


def test_eof_without_response() -> None:
    parser = ResponseParser()
    with pytest.raises(RemoteProtocolError, match="without sending a response"):
        parser.feed_eof()
    assert parser.bytes_received == 0


@pytest.mark.parametrize(
    "cut",
    [b"HTTP/1.1 200 OK\r\nContent-Le", CONTENT_LENGTH[:-3], CHUNKED[:-12], CHUNKED[:-3]],
)
def test_eof_in_the_middle_raises(cut: bytes) -> None:
    parser, _ = parse(cut)
    with pytest.raises(RemoteProtocolError, match="closed the connection"):
        parser.feed_eof()


@pytest.mark.parametrize("split", [0, 1, 100])
def test_head_size_limit(split: int) -> None:
    response = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 2000 + b"\r\nContent-Length: 0\r\n\r\n"
    with pytest.raises(TooLargeError) as info:
        parse(response, split=split, max_header_bytes=1024)
    assert info.value.status_hint == 431
    parser, _ = parse(response, split=split, max_header_bytes=4096)
    assert parser.message_complete


@pytest.mark.parametrize("split", [0, 1, 100])
def test_a_head_under_the_limit_is_accepted_however_it_is_split(split: int) -> None:
    # 1,530 head bytes under a 2,048 limit: counting both the bytes fed and the fields parsed from
    # them (3,060) refused it when it came in more than one piece.
    response = b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * 1500 + b"\r\nContent-Length: 0\r\n\r\n"
    parser, _ = parse(response, split=split, max_header_bytes=2048)
    assert parser.message_complete and len(parser.headers.get("x-big") or "") == 1500


def test_many_small_headers_count_against_the_limit() -> None:
    response = b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(500)) + b"\r\n"
    with pytest.raises(TooLargeError):
        parse(response, max_header_bytes=2048)


@pytest.mark.parametrize("limit, accepted", [(22, True), (21, False)])
def test_the_head_limit_counts_the_reason_and_every_field_exactly(limit: int, accepted: bool) -> None:
    # The reason (2) and each field's name, value, ": " and CRLF (3 + 3 + 4, twice): 22 bytes,
    # counted when the bytes fed (the body too) exceed the limit.
    response = b"HTTP/1.1 200 OK\r\nX-A: vvv\r\nx-a: www\r\nContent-Length: 40\r\n\r\n" + b"b" * 40
    fields = len(b"content-length") + len(b"40") + 4
    if accepted:
        parser, body = parse(response, max_header_bytes=limit + fields)
        assert parser.headers.get_all("x-a") == ["vvv", "www"] and len(body) == 40
    else:
        with pytest.raises(TooLargeError):
            parse(response, max_header_bytes=limit + fields)


def test_body_does_not_count_against_the_head_limit() -> None:
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + b"b" * 5000
    parser, body = parse(response, max_header_bytes=100)
    assert len(body) == 5000 and parser.message_complete


# -- properties -----------------------------------------------------------------------------


def check_response(parser: ResponseParser, body: bytes, fed: int) -> None:
    """Invariants of a response parsed without error, complete or not.

    The body never holds more bytes than were fed, nor any before the head is complete; a complete
    response's body matches its framing (none for HEAD, 204 and 304; exactly Content-Length
    without chunked coding); reuse needs a complete, length-delimited, keep-alive response.
    """
    assert parser.bytes_received == fed
    assert len(body) <= fed, "more body bytes than bytes fed"
    if not parser.headers_complete:
        assert body == b"", "body bytes before the head was complete"
        assert not parser.message_complete
        assert not parser.reusable
        return
    assert 200 <= parser.status_code <= 999, "an interim or invalid status was returned as the response"
    if parser.head_request or parser.status_code in (204, 304):
        assert body == b"", f"a body on a {parser.status_code} response (or to HEAD)"
    chunked = "chunked" in (parser.headers.get("transfer-encoding") or "").lower()
    length = parser.headers.get("content-length")
    if parser.head_request or parser.status_code in (204, 304):
        pass
    elif parser.message_complete and length is not None and not chunked:
        assert len(body) == int(length), "the body does not match its Content-Length"
    if parser.close_delimited:
        assert not parser.keep_alive and not parser.reusable
    if parser.reusable:
        assert parser.message_complete and parser.keep_alive and not parser.close_delimited


def check_error(exc: RemoteProtocolError) -> None:
    """A response parser error suggests 400, or 431 for a head over the limit."""
    if isinstance(exc, TooLargeError):
        assert exc.status_hint == 431
    else:
        assert exc.status_hint == 400, f"unexpected status hint {exc.status_hint}"


def test_check_response_can_fail() -> None:
    """The invariants are not vacuous: a body that disagrees with its Content-Length is caught."""
    parser, body = parse(CONTENT_LENGTH)
    check_response(parser, body, fed=len(CONTENT_LENGTH))
    with pytest.raises(AssertionError, match="Content-Length"):
        check_response(parser, body[:-1], fed=len(CONTENT_LENGTH))
    with pytest.raises(AssertionError, match="more body bytes"):
        check_response(parser, body * 10, fed=len(CONTENT_LENGTH))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_fuzz_parses_consistently_or_raises_protocol_error(data: bytes, eof: bool) -> None:
    parser = ResponseParser(max_header_bytes=200)
    body = b""
    try:
        parser.feed(data)
        body += parser.take_body()
        if eof:
            parser.feed_eof()
            body += parser.take_body()
    except RemoteProtocolError as exc:
        check_error(exc)
        return
    check_response(parser, body, fed=len(data))
    if eof:
        assert parser.message_complete, "feed_eof() returned on an incomplete response"


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(
        [b"HTTP/1.1 200 OK\r\n", b"HTTP/1.1 404 X\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n"]
    ),
    st.lists(
        st.sampled_from(
            [b"Content-Length: 1\r\n", b"Transfer-Encoding: chunked\r\n", b"\r\n", b"0\r\n", b"a"]
        )
    ),
    st.booleans(),
)
def test_fuzz_structured(start: bytes, parts: list[bytes], head_request: bool) -> None:
    data = start + b"".join(parts)
    parser = ResponseParser(head_request=head_request)
    body = b""
    try:
        parser.feed(data)
        body += parser.take_body()
        parser.feed_eof()
        body += parser.take_body()
    except RemoteProtocolError as exc:
        check_error(exc)
        return
    check_response(parser, body, fed=len(data))
    assert parser.message_complete, "feed_eof() returned on an incomplete response"


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.binary(min_size=1, max_size=40), max_size=8),
    st.lists(st.integers(min_value=1, max_value=400), max_size=10),
)
def test_chunk_boundaries_never_matter(chunks: list[bytes], cuts: list[int]) -> None:
    wire = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + b"".join(
        encode_chunk(c) for c in chunks
    )
    wire += CHUNKED_END
    parser = ResponseParser()
    body = b""
    start = 0
    for cut in [*sorted({c for c in cuts if c < len(wire)}), len(wire)]:
        parser.feed(wire[start:cut])
        body += parser.take_body()
        start = cut
    assert body == b"".join(chunks)
    assert parser.message_complete and parser.reusable


def test_a_callback_error_keeps_its_type_when_fed_while_another_exception_is_handled() -> None:
    # The client feeds in ``except BlockingIOError:`` when its first recv found nothing: the
    # callback's TooLargeError (431) must not turn into a generic "malformed response".
    fields = b"".join(b"X-Filler-%d: %s\r\n" % (i, b"v" * 100) for i in range(100))
    head = b"HTTP/1.1 200 OK\r\n" + fields + b"Content-Length: 0\r\n\r\n"
    parser = ResponseParser(max_header_bytes=4096)
    with pytest.raises(TooLargeError) as info:
        try:
            raise BlockingIOError
        except BlockingIOError:
            parser.feed(head)
    assert info.value.status_hint == 431
    switching = ResponseParser()
    with pytest.raises(RemoteProtocolError, match="switched protocols"):
        try:
            raise BlockingIOError
        except BlockingIOError:
            switching.feed(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n")


@pytest.mark.parametrize("answer", [CONTENT_LENGTH, INTERIM, CONTENT_LENGTH + b"HTTP/1.1 200 OK\r\n"])
def test_a_complete_response_leaves_no_reference_cycle(answer: bytes) -> None:
    """Once its response ended, a parser is freed by reference counting (the httptools parser
    held bound methods of it: every response was garbage for the cyclic GC to find)."""
    import gc

    gc.collect()
    gc.disable()
    try:
        parser = ResponseParser()
        parser.feed(answer)
        assert parser.message_complete and parser.take_body() == b"hello world"
        parser.feed(b"late")
        assert parser.trailing_data
        del parser
        assert gc.collect() == 0
    finally:
        gc.enable()


# -- one parser per connection ------------------------------------------------------------------

HEAD_ANSWER = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"
#: (response bytes, the request was HEAD, status, reason, body) in the order a connection sees them
SEQUENCE = [
    (CONTENT_LENGTH, False, 200, "OK", b"hello world"),
    (CHUNKED, False, 200, "OK", b"hello world"),
    (NOT_MODIFIED, False, 304, "Not Modified", b""),
    (INTERIM, False, 200, "OK", b"hello world"),
    (NO_CONTENT, False, 204, "No Content", b""),
    (HEAD_ANSWER, True, 200, "OK", b""),  # (llhttp still awaits 5 body bytes: a fresh parser next)
    (b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-Last: y\r\n\r\nok", False, 201, "Created", b"ok"),
]


@SPLITS
def test_a_persistent_parser_reads_the_responses_of_a_connection_one_after_another(split: int) -> None:
    parser = ResponseParser(persistent=True)
    heads = []
    for index, (answer, head_request, status, reason, body) in enumerate(SEQUENCE):
        if index:
            parser.next_response(head_request=head_request, max_header_bytes=65536)
        else:
            parser.head_request = head_request
        received = b""
        for start in range(0, len(answer), split or len(answer)):
            parser.feed(answer[start : start + (split or len(answer))])
            received += parser.take_body()
        assert (parser.status_code, parser.reason, received) == (status, reason, body)
        assert parser.reusable and parser.bytes_received == len(answer)
        heads.append((parser.headers, parser.headers.items()))
    for headers, items in heads:  # each response's headers stayed as they were
        assert headers.items() == items
    assert [items for _, items in heads][-1] == [("content-length", "2"), ("x-last", "y")]


def test_bytes_after_the_end_are_not_parsed_into_the_response() -> None:
    parser = ResponseParser()
    parser.feed(CONTENT_LENGTH + b"HTTP/1.1 404 Extra\r\nX-Extra: 1\r\nContent-Length: 0\r\n\r\n")
    assert (parser.status_code, parser.reason, parser.take_body()) == (200, "OK", b"hello world")
    assert parser.headers.items() == [("content-type", "text/plain"), ("content-length", "11")]
    assert parser.trailing_data and not parser.reusable


def test_a_persistent_parser_once_closed_leaves_no_reference_cycle() -> None:
    import gc

    gc.collect()
    gc.disable()
    try:
        parser = ResponseParser(persistent=True)
        parser.feed(CONTENT_LENGTH)
        parser.next_response(head_request=False, max_header_bytes=65536)
        parser.feed(CONTENT_LENGTH)
        parser.close()
        del parser
        assert gc.collect() == 0
    finally:
        gc.enable()
