"""Content decoders (gzip, deflate, identity, several codings) and the JSON-lines ``LineDecoder``."""

from __future__ import annotations

import gzip
import itertools
import tracemalloc
import zlib
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flowno_io._errors import RemoteProtocolError, TooLargeError
from flowno_io.protocol.decoders import (
    DEFAULT_MAX_LINE_BYTES,
    ContentDecoder,
    DeflateDecoder,
    GzipDecoder,
    IdentityDecoder,
    LineDecoder,
    MultiDecoder,
    make_decoder,
)

TEXT = ("Lorem ipsum dolor sit amet, €😀 " * 200).encode()


def raw_deflate(data: bytes) -> bytes:
    compressor = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return compressor.compress(data) + compressor.flush()


def whole(data: bytes) -> list[bytes]:
    return [data]


def byte_at_a_time(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


SPLITTERS = [whole, byte_at_a_time]


def run(decoder: ContentDecoder, chunks: list[bytes]) -> bytes:
    return b"".join(decoder.decode(chunk) for chunk in chunks) + decoder.flush()


@st.composite
def chunkings(draw: st.DrawFn, data: bytes) -> list[bytes]:
    cuts = sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))
    bounds = [0, *cuts, len(data)]
    return [data[a:b] for a, b in itertools.pairwise(bounds)]


ENCODINGS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": gzip.compress,
    "x-gzip": gzip.compress,
    "deflate": zlib.compress,  # RFC 9110: zlib-wrapped
    "deflate-raw": raw_deflate,  # what some servers send as "deflate"
}


def decoder_for(name: str, max_output_bytes: int | None = None) -> ContentDecoder:
    return make_decoder(name.replace("-raw", ""), max_output_bytes=max_output_bytes)


# ---------------------------------------------------------------------------------------------
# round trips


@pytest.mark.parametrize("split", SPLITTERS)
@pytest.mark.parametrize("name", ENCODINGS)
def test_round_trip(name: str, split: Callable[[bytes], list[bytes]]) -> None:
    assert run(decoder_for(name), split(ENCODINGS[name](TEXT))) == TEXT


@pytest.mark.parametrize("name", ENCODINGS)
def test_empty_payload_round_trip(name: str) -> None:
    assert run(decoder_for(name), [ENCODINGS[name](b"")]) == b""


@pytest.mark.parametrize("name", ["gzip", "deflate", "identity"])
def test_no_body_at_all_decodes_to_nothing(name: str) -> None:
    assert run(make_decoder(name), []) == b""
    assert run(make_decoder(name), [b""]) == b""


def test_identity_passes_bytes_through() -> None:
    assert run(IdentityDecoder(), [b"ab", b"", b"c"]) == b"abc"


@pytest.mark.parametrize("split", SPLITTERS)
def test_concatenated_gzip_members_are_one_body(split: Callable[[bytes], list[bytes]]) -> None:
    body = gzip.compress(b"one ") + gzip.compress(b"") + gzip.compress(b"two")
    assert run(GzipDecoder(), split(body)) == b"one two"


def test_sync_flushed_stream_yields_output_before_the_end() -> None:
    compressor = zlib.compressobj(wbits=31)
    first = compressor.compress(b"event one\n") + compressor.flush(zlib.Z_SYNC_FLUSH)
    decoder = GzipDecoder()
    assert decoder.decode(first) == b"event one\n"
    assert decoder.decode(compressor.compress(b"two") + compressor.flush()) == b"two"
    assert decoder.flush() == b""


@pytest.mark.parametrize("split", SPLITTERS)
def test_multiple_codings_decode_in_reverse_order(split: Callable[[bytes], list[bytes]]) -> None:
    body = gzip.compress(zlib.compress(TEXT))  # deflate applied first, then gzip
    assert run(make_decoder("deflate, gzip"), split(body)) == TEXT
    assert run(make_decoder("gzip,gzip"), split(gzip.compress(gzip.compress(TEXT)))) == TEXT


def test_multi_decoder_flushes_inner_stages() -> None:
    body = gzip.compress(raw_deflate(b"abc"))
    decoder = MultiDecoder([DeflateDecoder(), GzipDecoder()])
    out = b"".join(decoder.decode(body[i : i + 1]) for i in range(len(body)))
    assert out + decoder.flush() == b"abc"


compressible = st.binary(max_size=2000) | st.lists(st.sampled_from([b"abc", b"\x00" * 50, b"xyz"])).map(
    b"".join
)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from(sorted(ENCODINGS)), compressible, st.data())
def test_round_trip_under_any_chunking(name: str, payload: bytes, data: st.DataObject) -> None:
    body = ENCODINGS[name](payload)
    assert run(decoder_for(name), data.draw(chunkings(body))) == payload


@settings(max_examples=100, deadline=None)
@given(st.lists(compressible, min_size=1, max_size=4), st.data())
def test_gzip_members_under_any_chunking(payloads: list[bytes], data: st.DataObject) -> None:
    body = b"".join(gzip.compress(p) for p in payloads)
    assert run(GzipDecoder(), data.draw(chunkings(body))) == b"".join(payloads)


# ---------------------------------------------------------------------------------------------
# make_decoder


@pytest.mark.parametrize(
    ("header", "kind"),
    [
        (None, IdentityDecoder),
        ("", IdentityDecoder),
        ("identity", IdentityDecoder),
        ("gzip", GzipDecoder),
        (" GZip ", GzipDecoder),
        ("x-gzip", GzipDecoder),
        ("deflate", DeflateDecoder),
        ("identity, gzip", GzipDecoder),
        ("gzip,", GzipDecoder),
        ("deflate, gzip", MultiDecoder),
    ],
)
def test_make_decoder_picks_the_decoder(header: str | None, kind: type[ContentDecoder]) -> None:
    assert type(make_decoder(header)) is kind


@pytest.mark.parametrize("header", ["compress", "gzip, compress", "gzip;q=1"])  # (br, zstd: issue 16)
def test_unknown_coding_raises_with_415(header: str) -> None:
    with pytest.raises(RemoteProtocolError) as info:
        make_decoder(header)
    assert info.value.status_hint == 415


def test_negative_budget_is_rejected() -> None:
    with pytest.raises(ValueError):
        GzipDecoder(max_output_bytes=-1)


# ---------------------------------------------------------------------------------------------
# corrupt and truncated input


@pytest.mark.parametrize("name", ["gzip", "deflate"])
@pytest.mark.parametrize("split", SPLITTERS)
def test_garbage_raises_remote_protocol_error(name: str, split: Callable[[bytes], list[bytes]]) -> None:
    with pytest.raises(RemoteProtocolError, match="corrupt"):
        run(make_decoder(name), split(b"this is not compressed at all" * 3))


@pytest.mark.parametrize("name", ENCODINGS)
def test_flipped_byte_in_the_middle_raises(name: str) -> None:
    body = bytearray(ENCODINGS[name](TEXT))
    # Flip a byte in the compressed payload; for the wrapped formats the checksum catches
    # anything the inflater itself does not.
    body[len(body) // 2] ^= 0xFF
    if name == "deflate-raw":
        # Raw deflate has no checksum: a flip may decode to other bytes, but never to the original.
        try:
            assert run(decoder_for(name), [bytes(body)]) != TEXT
        except RemoteProtocolError:
            pass
    else:
        with pytest.raises(RemoteProtocolError):
            run(decoder_for(name), [bytes(body)])


@pytest.mark.parametrize("name", ENCODINGS)
@pytest.mark.parametrize("cut", [1, 5, 12])
def test_truncated_body_raises_at_flush(name: str, cut: int) -> None:
    body = ENCODINGS[name](TEXT)
    decoder = decoder_for(name)
    decoder.decode(body[:-cut])
    with pytest.raises(RemoteProtocolError, match="truncated"):
        decoder.flush()


def test_single_byte_deflate_body_is_truncated() -> None:
    decoder = DeflateDecoder()
    assert decoder.decode(b"\x78") == b""
    with pytest.raises(RemoteProtocolError, match="truncated"):
        decoder.flush()


@pytest.mark.parametrize("split", SPLITTERS)
def test_garbage_after_gzip_member_raises(split: Callable[[bytes], list[bytes]]) -> None:
    with pytest.raises(RemoteProtocolError, match="corrupt"):
        run(GzipDecoder(), split(gzip.compress(b"ok") + b"trailing junk"))


@pytest.mark.parametrize("compress", [zlib.compress, raw_deflate])
@pytest.mark.parametrize("split", SPLITTERS)
def test_data_after_deflate_stream_raises(
    compress: Callable[[bytes], bytes], split: Callable[[bytes], list[bytes]]
) -> None:
    with pytest.raises(RemoteProtocolError, match="after the end"):
        run(DeflateDecoder(), split(compress(b"ok") + b"x"))


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["gzip", "deflate", "deflate, gzip"]), st.binary(max_size=300), st.data())
def test_arbitrary_bytes_decode_or_raise_our_error(name: str, body: bytes, data: st.DataObject) -> None:
    decoder = make_decoder(name, max_output_bytes=10_000)
    try:
        out = run(decoder, data.draw(chunkings(body)))
    except RemoteProtocolError:  # TooLargeError is one too
        return
    assert isinstance(out, bytes) and len(out) <= 10_000


# ---------------------------------------------------------------------------------------------
# output budget (decompression bombs)


@pytest.mark.parametrize("name", ENCODINGS)
def test_output_exactly_at_the_budget_is_accepted(name: str) -> None:
    assert run(decoder_for(name, len(TEXT)), [ENCODINGS[name](TEXT)]) == TEXT


@pytest.mark.parametrize("name", [*ENCODINGS, "identity"])
@pytest.mark.parametrize("split", SPLITTERS)
def test_one_byte_over_the_budget_raises(name: str, split: Callable[[bytes], list[bytes]]) -> None:
    body = ENCODINGS.get(name, bytes)(TEXT)
    with pytest.raises(TooLargeError) as info:
        run(decoder_for(name, len(TEXT) - 1), split(body))
    assert info.value.status_hint == 413


def test_budget_counts_every_gzip_member() -> None:
    decoder = GzipDecoder(max_output_bytes=5)
    assert decoder.decode(gzip.compress(b"abc")) == b"abc"
    with pytest.raises(TooLargeError):
        decoder.decode(gzip.compress(b"def"))


def test_decode_never_returns_more_than_the_remaining_budget() -> None:
    decoder = IdentityDecoder(max_output_bytes=4)
    assert decoder.decode(b"abcd") == b"abcd"
    with pytest.raises(TooLargeError):
        decoder.decode(b"e")


BOMB_SIZE = 100 * 1024 * 1024  # 100 MiB of zeros, about 100 KB compressed


@pytest.fixture(scope="module")
def zeros_gzip() -> bytes:
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1024 * 1024)
    body = b"".join(compressor.compress(block) for _ in range(BOMB_SIZE // len(block)))
    return body + compressor.flush()


def _peak_memory_while(action: Callable[[], object]) -> int:
    tracemalloc.start()
    try:
        action()
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def _identity(body: bytes) -> bytes:
    return body


@pytest.mark.parametrize(
    ("header", "wrap", "unwrap_gzip"),
    [
        ("gzip", _identity, False),
        ("gzip, gzip", gzip.compress, False),  # the bomb inside another layer
        ("deflate", _identity, True),  # the gzip bomb's raw deflate payload
    ],
)
def test_bomb_in_one_chunk_raises_with_bounded_memory(
    zeros_gzip: bytes, header: str, wrap: Callable[[bytes], bytes], unwrap_gzip: bool
) -> None:
    assert len(zeros_gzip) < 200_000
    # A gzip member made by zlib has a 10-byte header and an 8-byte trailer around raw deflate.
    body = wrap(zeros_gzip[10:-8] if unwrap_gzip else zeros_gzip)
    decoder = make_decoder(header, max_output_bytes=1024 * 1024)
    raised: list[TooLargeError] = []

    def decode() -> None:
        try:
            decoder.decode(body)
        except TooLargeError as exc:
            raised.append(exc)

    peak = _peak_memory_while(decode)
    assert raised, "a 100 MiB bomb passed a 1 MiB budget"
    assert peak < 8 * 1024 * 1024, f"peak {peak} bytes: the bomb was inflated past the budget"


# ---------------------------------------------------------------------------------------------
# LineDecoder


def feed_lines(decoder: LineDecoder, chunks: list[bytes]) -> list[str]:
    lines: list[str] = []
    for chunk in chunks:
        lines += decoder.feed(chunk)
    return lines + decoder.close()


LINES_STREAM = b'{"a": 1}\n{"b": "\xe2\x82\xac"}\r\n\n\r\n{"c": 3}'
LINES = ['{"a": 1}', '{"b": "€"}', "", "", '{"c": 3}']


@pytest.mark.parametrize("split", SPLITTERS)
def test_lines_whole_and_byte_at_a_time(split: Callable[[bytes], list[bytes]]) -> None:
    assert feed_lines(LineDecoder(), split(LINES_STREAM)) == LINES


def test_lines_come_out_when_their_line_end_arrives() -> None:
    decoder = LineDecoder()
    assert decoder.feed(b"one\r") == []
    assert decoder.feed(b"\ntwo\nthr") == ["one", "two"]
    assert decoder.close() == ["thr"]
    assert decoder.close() == []


def test_bare_cr_is_not_a_line_end() -> None:
    assert feed_lines(LineDecoder(), [b"a\rb\n", b"c\r\r\n"]) == ["a\rb", "c\r"]


def test_trailing_cr_without_lf_is_dropped_at_close() -> None:
    assert feed_lines(LineDecoder(), [b"a\nb\r"]) == ["a", "b"]


def test_invalid_utf8_in_a_line_is_replaced() -> None:
    assert feed_lines(LineDecoder(), [b"a\xffb\n"]) == ["a\ufffdb"]


def test_default_line_limit() -> None:
    assert LineDecoder().max_line_bytes == DEFAULT_MAX_LINE_BYTES == 1024 * 1024


@pytest.mark.parametrize("split", SPLITTERS)
def test_line_at_the_limit_is_accepted(split: Callable[[bytes], list[bytes]]) -> None:
    line = b"x" * 50
    assert feed_lines(LineDecoder(max_line_bytes=50), split(line + b"\r\n" + line)) == ["x" * 50] * 2


@pytest.mark.parametrize("split", SPLITTERS)
@pytest.mark.parametrize("ending", [b"\n", b"\r\n", b""])
def test_line_over_the_limit_raises(split: Callable[[bytes], list[bytes]], ending: bytes) -> None:
    with pytest.raises(TooLargeError) as info:
        feed_lines(LineDecoder(max_line_bytes=50), split(b"ok\n" + b"x" * 51 + ending))
    assert info.value.status_hint == 413


def test_unfinished_line_raises_before_it_ends() -> None:
    decoder = LineDecoder(max_line_bytes=10)
    decoder.feed(b"x" * 10)
    with pytest.raises(TooLargeError):
        decoder.feed(b"x")


line_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\n")).filter(
    lambda s: not s.endswith("\r")
)


@settings(max_examples=200, deadline=None)
@given(st.lists(line_text, max_size=8), st.sampled_from(["\n", "\r\n"]), st.booleans(), st.data())
def test_lines_under_any_chunking(
    lines: list[str], newline: str, final_newline: bool, data: st.DataObject
) -> None:
    stream = newline.join(lines) + (newline if final_newline and lines else "")
    expected = lines if final_newline or (lines and lines[-1]) else lines[:-1]
    assert feed_lines(LineDecoder(), data.draw(chunkings(stream.encode()))) == expected
