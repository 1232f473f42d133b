"""Server-Sent Events: ``ServerSentEvent.encode`` and the incremental WHATWG ``SSEDecoder``."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable

import httpx_sse
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowno_io._errors import RemoteProtocolError, TooLargeError
from flowno_io.protocol.sse import (
    DEFAULT_MAX_EVENT_BYTES,
    ServerSentEvent,
    SSEDecoder,
    encode_comment,
    encode_event,
)

E = ServerSentEvent

# ---------------------------------------------------------------------------------------------
# helpers


def whole(data: bytes) -> list[bytes]:
    return [data]


def byte_at_a_time(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


def split_everywhere_by_3(data: bytes) -> list[bytes]:
    return [data[i : i + 3] for i in range(0, len(data), 3)]


SPLITTERS = [whole, byte_at_a_time, split_everywhere_by_3]


def decode(chunks: list[bytes], decoder: SSEDecoder | None = None) -> list[ServerSentEvent]:
    decoder = decoder or SSEDecoder()
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events + decoder.close()


@st.composite
def chunkings(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


# ---------------------------------------------------------------------------------------------
# encoding


def test_encode_writes_fields_in_order_and_ends_with_blank_line() -> None:
    event = E("hi", event="greet", id="42", retry=1500, comment="note")
    assert event.encode() == b": note\nevent: greet\nid: 42\nretry: 1500\ndata: hi\n\n"


@pytest.mark.parametrize("data", ["a\nb\nc", "a\r\nb\r\nc", "a\rb\rc", "a\r\nb\nc"])
def test_encode_splits_data_on_every_line_ending(data: str) -> None:
    assert E(data).encode() == b"data: a\ndata: b\ndata: c\n\n"


def test_encode_keeps_trailing_and_leading_empty_lines_of_data() -> None:
    assert E("\nx\n").encode() == b"data: \ndata: x\ndata: \n\n"


@pytest.mark.parametrize(
    ("data", "wire"),
    [
        ({"a": [1, 2]}, b'data: {"a":[1,2]}\n\n'),
        ([1, "x"], b'data: [1,"x"]\n\n'),
        (3, b"data: 3\n\n"),
        (True, b"data: true\n\n"),
        ("€".encode(), "data: €\n\n".encode()),
        ({"s": "line\nbreak"}, b'data: {"s":"line\\nbreak"}\n\n'),
    ],
)
def test_encode_serialises_non_text_data(data: object, wire: bytes) -> None:
    assert E(data).encode() == wire


def test_encode_rejects_bytes_that_are_not_utf8() -> None:
    with pytest.raises(ValueError):
        E(b"\xff").encode()


def test_encode_rejects_data_json_cannot_serialise() -> None:
    with pytest.raises(TypeError):
        E(object()).encode()


@pytest.mark.parametrize("field", ["event", "id"])
@pytest.mark.parametrize("bad", ["a\nb", "a\rb", "a\x00b", "\n"])
def test_encode_rejects_line_breaks_and_nul_in_event_and_id(field: str, bad: str) -> None:
    with pytest.raises(ValueError, match=field):
        E("x", **{field: bad}).encode()  # type: ignore[arg-type]


@pytest.mark.parametrize("retry", [-1, True, 1.5, "10"])
def test_encode_rejects_retry_that_is_not_a_non_negative_int(retry: object) -> None:
    with pytest.raises(ValueError, match="retry"):
        E("x", retry=retry).encode()  # type: ignore[arg-type]


def test_comment_only_event_has_no_data_line() -> None:
    assert E(comment="ping").encode() == b": ping\n\n"
    assert E(comment="two\nlines").encode() == b": two\n: lines\n\n"


def test_control_messages_without_data_have_no_data_line() -> None:
    assert E(id="7").encode() == b"id: 7\n\n"
    assert E(retry=0).encode() == b"retry: 0\n\n"


def test_empty_data_is_sent_when_the_event_should_be_dispatched() -> None:
    assert E().encode() == b"data: \n\n"
    assert E(event="ping").encode() == b"event: ping\ndata: \n\n"


def test_none_data_sends_no_data_line() -> None:
    assert E(None, event="x").encode() == b"event: x\n\n"


def test_encode_event_and_encode_comment() -> None:
    assert encode_event({"a": 1}, event="e", id="1", retry=2, comment="c") == (
        b': c\nevent: e\nid: 1\nretry: 2\ndata: {"a":1}\n\n'
    )
    assert encode_comment("ping") == b": ping\n\n"
    assert encode_comment() == b": \n\n"
    assert encode_comment("a\r\nb") == b": a\n: b\n\n"


def test_json_parses_data() -> None:
    assert E('{"x": [1, null]}').json() == {"x": [1, None]}
    with pytest.raises(orjson.JSONDecodeError):
        E("not json").json()


def test_events_are_frozen_and_compare_by_value() -> None:
    event = E("a", id="1")
    assert event == E("a", id="1")
    assert event != E("a", id="2")
    with pytest.raises(AttributeError):
        event.data = "b"  # type: ignore[misc]


# ---------------------------------------------------------------------------------------------
# decoding: whole, byte at a time, in 3-byte chunks

STREAM = (
    b": welcome\n"
    b"retry: 2500\n"
    b"id: 1\n"
    b"data: first\n"
    b"\n"
    b"event: update\r\n"
    b'data: {"n": 2}\r\n'
    b"data: second line\r\n"
    b"\r\n"
    b"id\r"  # resets the last event ID to ""
    b"data:no-space\r"
    b"data:  two spaces\r"
    b"\r"
)
STREAM_EVENTS = [
    E("first", id="1", retry=2500),
    E('{"n": 2}\nsecond line', event="update", id="1"),
    E("no-space\n two spaces", id=""),
]


@pytest.mark.parametrize("split", SPLITTERS)
def test_decode_stream(split: Callable[[bytes], list[bytes]]) -> None:
    decoder = SSEDecoder()
    assert decode(split(STREAM), decoder) == STREAM_EVENTS
    assert decoder.last_event_id == ""
    assert decoder.retry == 2500


@pytest.mark.parametrize("split", SPLITTERS)
def test_decode_with_trailing_partial_event(split: Callable[[bytes], list[bytes]]) -> None:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for chunk in split(STREAM + b"id: 9\ndata: never finished\n"):
        events += decoder.feed(chunk)
    assert events == STREAM_EVENTS
    assert decoder.close() == []
    assert decoder.last_event_id == ""  # the unfinished event's id is discarded with it


def test_events_come_out_as_soon_as_their_blank_line_arrives() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n") == []
    assert decoder.feed(b"\ndata: b\n") == [E("a")]
    assert decoder.feed(b"\n") == [E("b")]


def test_cr_at_end_of_chunk_and_lf_at_start_of_next_are_one_line_end() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    # Were "\r" + "\n" two line ends, the "\n" would dispatch "a" on its own.
    assert decoder.feed(b"\ndata: b\r") == []
    assert decoder.feed(b"\n\r") == [E("a\nb")]
    assert decoder.feed(b"\n") == []  # the LF completes "\r\n", it is not another blank line


def test_lone_cr_is_a_line_end() -> None:
    assert decode([b"data: a\rdata: b\r\r"]) == [E("a\nb")]


def test_empty_chunks_change_nothing() -> None:
    assert decode([b"", b"data: a\r", b"", b"\n", b"", b"\n", b""]) == [E("a")]
    # An empty chunk between a CR and its LF must not forget the CR.
    assert decode([b"data: a\r", b"", b"\ndata: b\n\n"]) == [E("a\nb")]


@pytest.mark.parametrize("split", SPLITTERS)
def test_multibyte_utf8_split_anywhere(split: Callable[[bytes], list[bytes]]) -> None:
    text = "héllo €uro 😀 ✓"
    assert decode(split(f"data: {text}\n\n".encode())) == [E(text)]


@pytest.mark.parametrize("split", SPLITTERS)
def test_invalid_utf8_becomes_replacement_character(split: Callable[[bytes], list[bytes]]) -> None:
    assert decode(split(b"data: a\xffb\xe2\x82\n\n")) == [E("a\ufffdb\ufffd")]


@pytest.mark.parametrize("split", SPLITTERS)
def test_leading_bom_is_skipped_once(split: Callable[[bytes], list[bytes]]) -> None:
    assert decode(split(b"\xef\xbb\xbfdata: a\n\n")) == [E("a")]
    # A second BOM is part of the field name, which is then unknown and ignored.
    assert decode(split(b"\xef\xbb\xbf\xef\xbb\xbfdata: a\n\ndata: b\n\n")) == [E("b")]


def test_bom_later_in_the_stream_is_not_skipped() -> None:
    assert decode([b"data: a\n\n\xef\xbb\xbfdata: b\n\ndata: c\n\n"]) == [E("a"), E("c")]


def test_comments_are_ignored() -> None:
    assert decode([b":comment\ndata: a\n: more\n:\n\n: only a comment\n\n"]) == [E("a")]


@pytest.mark.parametrize(
    ("line", "data"),
    [
        (b"data:x", "x"),
        (b"data: x", "x"),
        (b"data:  x", " x"),
        (b"data: x: y", "x: y"),
        (b"data:", ""),
        (b"data", ""),
        (b"data: ", ""),
    ],
)
def test_field_value_loses_one_leading_space(line: bytes, data: str) -> None:
    assert decode([line + b"\n\n"]) == [E(data)]


def test_data_lines_are_joined_with_lf_and_empty_data_lines_count() -> None:
    assert decode([b"data\ndata\n\n"]) == [E("\n")]
    assert decode([b"data: a\ndata\ndata: b\n\n"]) == [E("a\n\nb")]


def test_unknown_fields_and_fields_with_wrong_case_are_ignored() -> None:
    assert decode([b"foo: bar\nDATA: x\nData: y\ndata: z\n\n"]) == [E("z")]


def test_no_event_is_dispatched_without_data() -> None:
    decoder = SSEDecoder()
    assert decode([b"event: x\n\nid: 3\n\nretry: 10\n\n\n\n"], decoder) == []
    assert (decoder.last_event_id, decoder.retry) == ("3", 10)


def test_event_type_defaults_to_none_and_is_reset_after_each_event() -> None:
    assert decode([b"event: a\ndata: 1\n\ndata: 2\n\nevent:\ndata: 3\n\n"]) == [
        E("1", event="a"),
        E("2"),
        E("3"),
    ]


def test_event_type_without_data_does_not_leak_into_the_next_event() -> None:
    assert decode([b"event: a\n\ndata: 1\n\n"]) == [E("1")]


def test_last_event_id_persists_and_is_carried_by_every_event() -> None:
    decoder = SSEDecoder()
    assert decoder.last_event_id is None
    events = decode([b"data: a\n\nid: 1\ndata: b\n\ndata: c\n\nid:\ndata: d\n\n"], decoder)
    assert [e.id for e in events] == [None, "1", "1", ""]
    assert decoder.last_event_id == ""


def test_last_event_id_changes_on_the_blank_line_not_before() -> None:
    decoder = SSEDecoder()
    decoder.feed(b"id: 1\n\nid: 2\n")
    assert decoder.last_event_id == "1"
    decoder.feed(b"\n")
    assert decoder.last_event_id == "2"


def test_id_holding_nul_is_ignored() -> None:
    decoder = SSEDecoder()
    assert decode([b"id: 1\n\nid: 2\x003\ndata: a\n\n"], decoder) == [E("a", id="1")]
    assert decoder.last_event_id == "1"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (b"1000", 1000),
        (b"0", 0),
        (b"007", 7),
        (b"1.5", None),
        (b"-1", None),
        (b" 5", None),  # the one stripped space leaves " 5" only when there were two
        (b"5 ", None),
        (b"", None),
        (b"1e3", None),
        ("١٢".encode(), None),  # Arabic-Indic digits are digits, but not ASCII
        ("²".encode(), None),
        (b"9" * 5000, None),  # more digits than int() accepts from a string
    ],
)
def test_retry_only_when_all_ascii_digits(value: bytes, expected: int | None) -> None:
    decoder = SSEDecoder()
    events = decode([b"retry: " + value + b"\ndata: x\n\n"], decoder)
    assert events == [E("x", retry=expected)]
    assert decoder.retry == expected


def test_retry_is_per_event_but_the_decoder_keeps_the_latest() -> None:
    decoder = SSEDecoder()
    events = decode([b"retry: 5\ndata: a\n\ndata: b\n\nretry: 7\n\ndata: c\n\nretry: x\n\n"], decoder)
    assert [e.retry for e in events] == [5, None, None]
    assert decoder.retry == 7


def test_close_discards_an_unfinished_event_and_allows_reuse() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"id: 1\ndata: a\n\nid: 2\nevent: e\ndata: unfinished") == [E("a", id="1")]
    assert decoder.close() == []
    assert decoder.last_event_id == "1"
    # After close the decoder reads a new stream: the discarded type and id are gone, and the new
    # stream may start with a BOM again.
    assert decode([b"\xef\xbb\xbfdata: b\n\n"], decoder) == [E("b", id="1")]


def test_unterminated_final_line_is_not_an_event() -> None:
    assert decode([b"data: a\n"]) == []
    assert decode([b"data: a"]) == []


# ---------------------------------------------------------------------------------------------
# limits


def test_default_limit_is_one_mebibyte() -> None:
    assert DEFAULT_MAX_EVENT_BYTES == 1024 * 1024
    assert SSEDecoder().max_event_bytes == DEFAULT_MAX_EVENT_BYTES


def test_event_at_the_limit_is_accepted() -> None:
    line = b"data: " + b"x" * 94  # 100 bytes
    assert decode([line + b"\n\n"], SSEDecoder(max_event_bytes=100)) == [E("x" * 94)]


def test_one_long_line_raises_too_large() -> None:
    with pytest.raises(TooLargeError) as info:
        SSEDecoder(max_event_bytes=100).feed(b"data: " + b"x" * 95 + b"\n\n")
    assert info.value.status_hint == 413


def test_unfinished_line_raises_too_large_before_it_ends() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    decoder.feed(b"data: ")
    with pytest.raises(TooLargeError):
        for _ in range(200):
            decoder.feed(b"x")


def test_many_short_data_lines_raise_too_large() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    with pytest.raises(TooLargeError):
        decoder.feed(b"data: x\n" * 20)


def test_limit_is_per_event() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    events = decode([b"data: " + b"x" * 80 + b"\n\n"] * 50, decoder)
    assert len(events) == 50


def test_complete_comment_lines_do_not_count() -> None:
    decoder = SSEDecoder(max_event_bytes=100)
    assert decode([b": " + b"c" * 90 + b"\n"] * 20 + [b"data: a\n\n"], decoder) == [E("a")]


def test_too_large_is_a_remote_protocol_error() -> None:
    with pytest.raises(RemoteProtocolError):
        SSEDecoder(max_event_bytes=4).feed(b"data: xx")


# ---------------------------------------------------------------------------------------------
# interop: httpx-sse (code we did not write) reads what we encode

# httpx-sse dispatches on every blank line; give each event a type so every one has a data line.
interop_events = st.builds(
    E,
    data=st.text(st.characters(exclude_categories=["Cs"])),
    event=st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n\x00"), min_size=1),
    id=st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\r\n\x00")),
    retry=st.none() | st.integers(0, 2**31),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(interop_events, max_size=5))
def test_httpx_sse_reads_our_events(events: list[ServerSentEvent]) -> None:
    text = b"".join(e.encode() for e in events).decode("utf-8")
    lines = httpx_sse._decoders.SSELineDecoder()
    theirs_decoder = httpx_sse._decoders.SSEDecoder()
    theirs = []
    for line in lines.decode(text) + lines.flush():
        sse = theirs_decoder.decode(line)
        if sse is not None:
            theirs.append((sse.data, sse.event, sse.id, sse.retry))
    expected = [(_normalise(e.data), e.event, e.id, e.retry) for e in events]
    assert theirs == expected


# ---------------------------------------------------------------------------------------------
# properties

NO_BREAK = st.characters(exclude_categories=["Cs"], exclude_characters="\r\n\x00")
any_text = st.text(st.characters(exclude_categories=["Cs"]))
line_breaky_text = st.lists(st.sampled_from(["a", "é", "\r", "\n", "\r\n", " ", ":", "😀"])).map("".join)

events_to_send = st.builds(
    E,
    data=st.none() | any_text | line_breaky_text,
    event=st.none() | st.text(NO_BREAK),
    id=st.none() | st.text(NO_BREAK),
    retry=st.none() | st.integers(0, 2**63),
    comment=st.none() | any_text,
)


def _normalise(text: str) -> str:
    return re.sub(r"\r\n|\r", "\n", text)


def expected_after_round_trip(sent: list[ServerSentEvent]) -> list[ServerSentEvent]:
    """What a WHATWG client receives for ``sent``: control-only messages update its state only."""
    received = []
    last_id = None
    for event in sent:
        if event.id is not None:
            last_id = event.id
        control_only = event.event is None and (event.comment, event.id, event.retry) != (None, None, None)
        if event.data is not None and (event.data != "" or not control_only):
            received.append(
                E(_normalise(event.data), event=event.event or None, id=last_id, retry=event.retry)
            )
    return received


@settings(max_examples=200, deadline=None)
@given(st.lists(events_to_send, max_size=6), st.data())
def test_round_trip_under_any_chunking(sent: list[ServerSentEvent], data: st.DataObject) -> None:
    wire = b"".join(e.encode() for e in sent)
    decoder = SSEDecoder()
    assert decode(data.draw(chunkings(wire)), decoder) == expected_after_round_trip(sent)
    ids = [e.id for e in sent if e.id is not None]
    assert decoder.last_event_id == (ids[-1] if ids else None)
    retries = [e.retry for e in sent if e.retry is not None]
    assert decoder.retry == (retries[-1] if retries else None)


SSE_ISH = st.lists(
    st.sampled_from(
        [
            *[b"data:", b"data: ", b"id: ", b"id", b"event: ", b"retry: ", b"12", b":", b" ", b"x"],
            *[b"\r", b"\n", b"\r\n", b"\x00", b"\xef\xbb\xbf", b"\xe2\x82\xac", b"\xe2\x82", b"\xff"],
        ]
    ),
    max_size=40,
).map(b"".join)


def reference_decode(stream: bytes) -> tuple[list[ServerSentEvent], str | None, int | None]:
    """A whole-input, text-level reading of the WHATWG algorithm, to check the incremental one."""
    text = stream.decode("utf-8", "replace").removeprefix("\ufeff")
    lines = re.split(r"\r\n|\r|\n", text)[:-1]  # the part after the last line end is unfinished
    events: list[ServerSentEvent] = []
    data: list[str] = []
    event_type, id_buffer, last_id, retry, event_retry = "", None, None, None, None
    for line in lines:
        if line == "":
            last_id = id_buffer
            if data:
                events.append(E("\n".join(data), event=event_type or None, id=id_buffer, retry=event_retry))
            data, event_type, event_retry = [], "", None
            continue
        name, colon, value = line.partition(":")
        value = value.removeprefix(" ") if colon else value
        if name == "data":
            data.append(value)
        elif name == "event":
            event_type = value
        elif name == "id" and "\0" not in value:
            id_buffer = value
        elif name == "retry" and re.fullmatch(r"[0-9]+", value):
            retry = event_retry = int(value)
    return events, last_id, retry


@settings(max_examples=200, deadline=None)
@given(SSE_ISH | st.binary(max_size=200), st.data())
def test_any_chunking_matches_the_whole_input_reference(stream: bytes, data: st.DataObject) -> None:
    decoder = SSEDecoder()
    events = decode(data.draw(chunkings(stream)), decoder)
    assert (events, decoder.last_event_id, decoder.retry) == reference_decode(stream)


@settings(max_examples=200, deadline=None)
@given(SSE_ISH | st.binary(max_size=300), st.data())
def test_arbitrary_bytes_yield_events_or_too_large_nothing_else(stream: bytes, data: st.DataObject) -> None:
    decoder = SSEDecoder(max_event_bytes=24)
    try:
        events = decode(data.draw(chunkings(stream)), decoder)
    except TooLargeError:
        return
    assert all(isinstance(e, ServerSentEvent) and isinstance(e.data, str) for e in events)
    assert all(len(e.data) <= 24 for e in events)  # every character came from at least one byte
