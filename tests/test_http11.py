"""The sans-IO request parser: whole, byte by byte, with trailing data, and fuzzed."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowno_io._errors import RemoteProtocolError, TooLargeError
from flowno_io.protocol.http11_server import END_OF_MESSAGE, RequestHead, RequestParser, encode_chunk

PIPELINE = (
    b"POST /upload?x=1&y=%20 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nX-Multi: 1\r\nX-Multi: 2\r\n\r\nhello"
    b"PUT /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    b"GET /p%2Fq HTTP/1.0\r\n\r\n"
)


def collect(parser: RequestParser, chunks: list[bytes]) -> list[object]:
    events: list[object] = []
    for chunk in chunks:
        parser.feed(chunk)
        while (event := parser.next_event()) is not None:
            events.append(event)
    return events


def summarize(events: list[object]) -> list[object]:
    """Heads as tuples, adjacent body chunks merged, so different splits compare equal."""
    out: list[object] = []
    for event in events:
        if isinstance(event, RequestHead):
            out.append((event.method, event.path, event.query_string, event.http_version, event.keep_alive))
        elif isinstance(event, bytes):
            if out and isinstance(out[-1], bytes):
                out[-1] += event
            else:
                out.append(event)
        else:
            out.append(event)
    return out


EXPECTED = [
    ("POST", "/upload", "x=1&y=%20", "1.1", True),
    b"hello",
    END_OF_MESSAGE,
    ("PUT", "/c", "", "1.1", True),
    b"abcde",
    END_OF_MESSAGE,
    ("GET", "/p/q", "", "1.0", False),
    END_OF_MESSAGE,
]


def test_pipeline_whole() -> None:
    assert summarize(collect(RequestParser(), [PIPELINE])) == EXPECTED


def test_pipeline_byte_at_a_time() -> None:
    chunks = [PIPELINE[i : i + 1] for i in range(len(PIPELINE))]
    assert summarize(collect(RequestParser(), chunks)) == EXPECTED


def test_trailing_partial_request_waits_for_more() -> None:
    parser = RequestParser()
    events = collect(parser, [PIPELINE[: -len(b"GET /p%2Fq HTTP/1.0\r\n\r\n")] + b"GET / HTTP/1.1\r\nHo"])
    assert summarize(events) == EXPECTED[:-2]
    assert parser.in_head
    assert parser.next_event() is None


def test_repeated_headers_are_kept() -> None:
    parser = RequestParser()
    head = collect(parser, [PIPELINE])[0]
    assert isinstance(head, RequestHead)
    assert head.headers.get_all("x-multi") == ["1", "2"]
    assert head.headers.get("X-Multi") == "1, 2"


def test_absolute_form_target_keeps_only_the_path() -> None:
    head = collect(RequestParser(), [b"GET http://example.com/a/b?c=d HTTP/1.1\r\nHost: e\r\n\r\n"])[0]
    assert isinstance(head, RequestHead)
    assert (head.path, head.query_string) == ("/a/b", "c=d")


def test_limits_raise_with_status_hints() -> None:
    with pytest.raises(TooLargeError) as info:
        RequestParser(max_header_bytes=100).feed(b"GET /" + b"a" * 200 + b" HTTP/1.1\r\n")
    assert info.value.status_hint == 431
    with pytest.raises(TooLargeError) as info:
        RequestParser(max_body_bytes=10).feed(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\n\r\n")
    assert info.value.status_hint == 413
    with pytest.raises(TooLargeError) as info:
        RequestParser(max_headers=2).feed(b"GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n")
    assert info.value.status_hint == 431


def test_bytes_after_a_closing_request_are_ignored() -> None:
    parser = RequestParser()
    events = collect(parser, [b"GET /a HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\nGARBAGE\r\n\r\n"])
    assert summarize(events) == [("GET", "/a", "", "1.1", False), END_OF_MESSAGE]
    parser.feed(b"more")
    assert parser.next_event() is None


def test_parser_stays_failed_after_an_error() -> None:
    parser = RequestParser()
    with pytest.raises(RemoteProtocolError):
        parser.feed(b"NOT HTTP AT ALL\r\n\r\n")
    with pytest.raises(RemoteProtocolError):
        parser.feed(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")


def test_encode_chunk() -> None:
    assert encode_chunk(b"x" * 255) == b"ff\r\n" + b"x" * 255 + b"\r\n"
    assert encode_chunk(b"") == b""


@settings(max_examples=200, deadline=None)
@given(st.data())
def test_any_split_gives_the_same_events(data: st.DataObject) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(PIPELINE)), max_size=12)))
    chunks = [PIPELINE[a:b] for a, b in zip([0, *cuts], [*cuts, len(PIPELINE)], strict=True)]
    assert summarize(collect(RequestParser(), chunks)) == EXPECTED


#: Every status a request parser error may suggest (RequestParser's docstring).
PARSER_STATUS_HINTS = (400, 413, 431, 505)


def check_framing(events: list[object], fed: int, max_body_bytes: int | None = None) -> None:
    """Invariants of a successful parse: what every event sequence the parser emits must satisfy.

    Events come as head, body bytes, end-of-message, in that order; the body never holds more bytes
    than were fed, nor more than the limit; a complete message's body matches its framing headers
    (Content-Length exactly; none at all without Content-Length or chunked coding).
    """
    total_body = 0
    head: RequestHead | None = None
    body = 0
    for event in events:
        if isinstance(event, RequestHead):
            assert head is None, "a head before the previous message ended"
            head, body = event, 0
        elif isinstance(event, bytes):
            assert head is not None, "body bytes outside a message"
            assert event, "an empty body event"
            body += len(event)
            total_body += len(event)
            if max_body_bytes is not None:
                assert body <= max_body_bytes, "a body past the limit was accepted"
        else:
            assert event is END_OF_MESSAGE
            assert head is not None, "an end of message without a head"
            chunked = "chunked" in (head.headers.get("transfer-encoding") or "").lower()
            if chunked:
                assert head.content_length is None, "Content-Length and chunked both accepted"
            elif head.content_length is not None:
                assert body == head.content_length, "the body does not match its Content-Length"
            else:
                assert body == 0, "a request without Content-Length or chunked coding has a body"
            head = None
    assert total_body <= fed, "more body bytes than bytes fed"


def check_error(exc: RemoteProtocolError) -> None:
    assert exc.status_hint in PARSER_STATUS_HINTS, f"unexpected status hint {exc.status_hint}"
    if isinstance(exc, TooLargeError):
        assert exc.status_hint in (413, 431)


def test_check_framing_can_fail() -> None:
    """The invariants are not vacuous: a body that disagrees with its Content-Length is caught."""
    head = collect(RequestParser(), [b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n"])[0]
    with pytest.raises(AssertionError, match="Content-Length"):
        check_framing([head, b"ab", END_OF_MESSAGE], fed=100)
    with pytest.raises(AssertionError, match="more body bytes"):
        check_framing([head, b"abc", END_OF_MESSAGE], fed=2)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=8))
def test_arbitrary_bytes_parse_consistently_or_raise_our_error(chunks: list[bytes]) -> None:
    parser = RequestParser(max_header_bytes=512, max_body_bytes=512)
    events: list[object] = []
    try:
        for chunk in chunks:
            parser.feed(chunk)
            while (event := parser.next_event()) is not None:
                events.append(event)
    except RemoteProtocolError as exc:
        check_error(exc)
        return
    check_framing(events, fed=sum(map(len, chunks)), max_body_bytes=512)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(PIPELINE) - 1), st.binary(min_size=1, max_size=4))
def test_mutated_requests_parse_consistently_or_raise_our_error(position: int, noise: bytes) -> None:
    mutated = PIPELINE[:position] + noise + PIPELINE[position + len(noise) :]
    try:
        events = collect(RequestParser(), [mutated])
    except RemoteProtocolError as exc:
        check_error(exc)
        return
    check_framing(events, fed=len(mutated))


def test_field_values_lose_surrounding_whitespace() -> None:
    head = collect(
        RequestParser(), [b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3 \r\nX-A:  v \r\n\r\nabc"]
    )[0]
    assert isinstance(head, RequestHead)
    assert head.content_length == 3
    assert head.headers.get("x-a") == "v"


@pytest.mark.parametrize(
    "host_lines",
    [b"Host: a\r\nHost: b\r\n", b"Host: a b\r\n", b"Host: a/b\r\n", b"Host: [::1\r\n", b"Host: x:80x\r\n"],
)
def test_duplicate_or_invalid_host_is_400(host_lines: bytes) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        RequestParser().feed(b"GET / HTTP/1.1\r\n" + host_lines + b"\r\n")
    assert info.value.status_hint == 400


@pytest.mark.parametrize("host", [b"example.com", b"example.com:8080", b"127.0.0.1:1", b"[::1]:80", b""])
def test_valid_hosts_are_accepted(host: bytes) -> None:
    head = collect(RequestParser(), [b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"])[0]
    assert isinstance(head, RequestHead)


def test_http10_with_transfer_encoding_is_answered_then_closed() -> None:
    raw = b"POST /a HTTP/1.0\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"
    head = collect(RequestParser(), [raw])[0]
    assert isinstance(head, RequestHead)
    assert head.keep_alive is False


def test_release_drops_the_llhttp_parser_only_between_requests() -> None:
    parser = RequestParser()
    first, second = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
    parser.feed(first[:10])
    assert not parser.release()  # in the middle of a head
    parser.feed(first[10:])
    assert not parser.release()  # its events are not taken yet
    assert summarize(list(iter(parser.next_event, None))) == [("GET", "/a", "", "1.1", True), END_OF_MESSAGE]
    assert parser.release() and parser._parser is None
    # The next request, whole or byte by byte, parses as if nothing had been released.
    assert summarize(collect(parser, [second])) == [("GET", "/b", "", "1.1", True), END_OF_MESSAGE]
    assert parser.release()
    events = collect(parser, [bytes([byte]) for byte in first])
    assert summarize(events) == [("GET", "/a", "", "1.1", True), END_OF_MESSAGE]


def test_release_keeps_a_failed_or_unfinished_body() -> None:
    parser = RequestParser()
    collect(parser, [b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nab"])
    assert not parser.release()  # the body is not complete
    broken = RequestParser()
    with pytest.raises(RemoteProtocolError):
        broken.feed(b"GET / HTTP/1.1\r\nBad Header\r\n\r\n")
    assert not broken.release()  # the error stays (the connection must close)
