"""Content decoding (``Content-Encoding``) and line splitting, sans-IO: bytes in, bytes or lines out.

Every content decoder takes ``max_output_bytes``, a decompression-bomb guard: inflating is done with
zlib's ``max_length``, so even a small chunk that would inflate to gigabytes never holds more than
the remaining budget (+1 byte) in memory before ``TooLargeError`` is raised.

Example:
    >>> import gzip
    >>> decoder = make_decoder("gzip")
    >>> body = gzip.compress(b"hello")
    >>> decoder.decode(body[:5]) + decoder.decode(body[5:]) + decoder.flush()
    b'hello'
    >>> make_decoder("gzip", max_output_bytes=3).decode(body)
    Traceback (most recent call last):
    ...
    flowno_io._errors.TooLargeError: decoded body larger than max_output_bytes=3
"""

from __future__ import annotations

import zlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, NoReturn

from .._errors import RemoteProtocolError, TooLargeError

try:  # the flowno-io[brotli] extra
    import brotli as _brotli
except ImportError:  # pragma: no cover - depends on the installation
    _brotli = None
try:  # the flowno-io[zstd] extra (compression.zstd from Python 3.14)
    from compression import zstd as _zstd  # type: ignore[import-not-found,unused-ignore]
except ImportError:
    try:
        from backports import zstd as _zstd  # type: ignore[no-redef,unused-ignore]
    except ImportError:  # pragma: no cover - depends on the installation
        _zstd = None

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "BrotliDecoder",
    "ContentDecoder",
    "DeflateDecoder",
    "GzipDecoder",
    "IdentityDecoder",
    "LineDecoder",
    "MultiDecoder",
    "ZstdDecoder",
    "available_encodings",
    "make_decoder",
]

# A JSON-lines line longer than this raises ``TooLargeError`` (status hint 413). httpx and aiohttp
# set no limit on ``iter_lines``; 1 MiB holds any sane record while bounding memory per line.
DEFAULT_MAX_LINE_BYTES = 1024 * 1024

_GZIP_WBITS = 16 + zlib.MAX_WBITS  # gzip header and trailer
_ZLIB_WBITS = zlib.MAX_WBITS  # RFC 1950 zlib header and Adler-32 trailer
_RAW_WBITS = -zlib.MAX_WBITS  # bare RFC 1951 deflate


class ContentDecoder(ABC):
    """Incremental decoder for one content coding.

    Call ``decode`` with each chunk as it arrives, then ``flush`` once at the end of the body.

    Args:
        max_output_bytes: total bytes ``decode`` + ``flush`` may return; more raises
            ``TooLargeError`` (status hint 413). ``None`` means no limit.

    Raises:
        RemoteProtocolError: the data is corrupt or truncated (from ``decode`` / ``flush``).
        TooLargeError: the decoded body exceeds ``max_output_bytes``.
    """

    def __init__(self, max_output_bytes: int | None = None) -> None:
        if max_output_bytes is not None and max_output_bytes < 0:
            raise ValueError(f"max_output_bytes must be >= 0 or None, not {max_output_bytes}")
        self.max_output_bytes = max_output_bytes
        self._output_bytes = 0

    @abstractmethod
    def decode(self, chunk: bytes) -> bytes:
        """Decode the next chunk; may return ``b""`` while waiting for more input."""

    def flush(self) -> bytes:
        """End of body: return what is left, or raise if the body was truncated."""
        return b""

    def _count(self, output: bytes) -> bytes:
        self._output_bytes += len(output)
        if self.max_output_bytes is not None and self._output_bytes > self.max_output_bytes:
            raise TooLargeError(
                f"decoded body larger than max_output_bytes={self.max_output_bytes}", status_hint=413
            )
        return output

    def _inflate(self, inflater: Any, data: bytes, coding: str) -> bytes:
        """Run ``inflater.decompress`` within the budget, translating corrupt data to our error."""
        try:
            if self.max_output_bytes is None:
                output: bytes = inflater.decompress(data)
            else:
                # max_length=remaining+1: getting that much proves the budget is exceeded; getting
                # less means zlib consumed all input (no ``unconsumed_tail`` left behind).
                remaining = self.max_output_bytes - self._output_bytes
                output = inflater.decompress(data, remaining + 1)
        except zlib.error as exc:
            raise RemoteProtocolError(f"corrupt {coding} content: {exc}") from exc
        return self._count(output)


class IdentityDecoder(ContentDecoder):
    """No content coding: bytes pass through, counted against ``max_output_bytes``.

    Example:
        >>> IdentityDecoder().decode(b"as is")
        b'as is'
    """

    def decode(self, chunk: bytes) -> bytes:
        return self._count(bytes(chunk))


class GzipDecoder(ContentDecoder):
    """``Content-Encoding: gzip`` (also ``x-gzip``); several concatenated gzip members decode as one body.

    Example:
        >>> import gzip
        >>> GzipDecoder().decode(gzip.compress(b"a") + gzip.compress(b"b"))
        b'ab'
    """

    def __init__(self, max_output_bytes: int | None = None) -> None:
        super().__init__(max_output_bytes)
        self._member: Any = None  # inflater of the member in progress, None between members

    def decode(self, chunk: bytes) -> bytes:
        output: list[bytes] = []
        data = bytes(chunk)
        while data:
            if self._member is None:
                self._member = zlib.decompressobj(_GZIP_WBITS)
            output.append(self._inflate(self._member, data, "gzip"))
            if self._member.eof:
                data = self._member.unused_data
                self._member = None
            else:
                data = b""
        return b"".join(output)

    def flush(self) -> bytes:
        if self._member is not None:
            raise RemoteProtocolError("truncated gzip content: the stream ended inside a gzip member")
        return b""


class DeflateDecoder(ContentDecoder):
    """``Content-Encoding: deflate``: zlib-wrapped (RFC 9110), or raw deflate as some servers send.

    Browsers accept both; so do we. The first two bytes decide: a valid zlib header (method 8,
    window <= 32 KiB, check bits, no preset dictionary) means zlib, anything else means raw deflate.
    Deciding on the header, rather than on the first decompression error, gives the same result
    however the body is chunked. Data after the end of the deflate stream is an error.

    Example:
        >>> import zlib
        >>> raw = zlib.compressobj(wbits=-15)
        >>> body = raw.compress(b"raw deflate") + raw.flush()
        >>> DeflateDecoder().decode(body), DeflateDecoder().decode(zlib.compress(b"zlib"))
        (b'raw deflate', b'zlib')
    """

    def __init__(self, max_output_bytes: int | None = None) -> None:
        super().__init__(max_output_bytes)
        self._head = b""  # the first bytes, kept until there are two to look at
        self._inflater: Any = None

    def decode(self, chunk: bytes) -> bytes:
        data = bytes(chunk)
        if self._inflater is None:
            self._head += data
            if len(self._head) < 2:
                return b""
            data, self._head = self._head, b""
            wbits = _ZLIB_WBITS if _is_zlib_header(data[0], data[1]) else _RAW_WBITS
            self._inflater = zlib.decompressobj(wbits)
        elif self._inflater.eof:
            if data:
                raise RemoteProtocolError("corrupt deflate content: data after the end of the stream")
            return b""
        output = self._inflate(self._inflater, data, "deflate")
        if self._inflater.eof and self._inflater.unused_data:
            raise RemoteProtocolError("corrupt deflate content: data after the end of the stream")
        return output

    def flush(self) -> bytes:
        if self._head or (self._inflater is not None and not self._inflater.eof):
            raise RemoteProtocolError("truncated deflate content: the stream ended early")
        return b""


class BrotliDecoder(ContentDecoder):
    """``Content-Encoding: br`` (RFC 7932), with the ``flowno-io[brotli]`` extra.

    The output of each step is capped at the remaining budget + 1 byte (brotli's
    ``output_buffer_limit``), as for gzip.

    Example:
        >>> import brotli
        >>> body = brotli.compress(b"brotli " * 3)
        >>> decoder = BrotliDecoder()
        >>> decoder.decode(body[:4]) + decoder.decode(body[4:]) + decoder.flush()
        b'brotli brotli brotli '
    """

    def __init__(self, max_output_bytes: int | None = None) -> None:
        super().__init__(max_output_bytes)
        if _brotli is None:
            raise RemoteProtocolError("Content-Encoding 'br' needs flowno-io[brotli]", status_hint=415)
        self._decompressor: Any = _brotli.Decompressor()

    def decode(self, chunk: bytes) -> bytes:
        if not chunk:
            return b""
        try:
            if self.max_output_bytes is None:
                output: bytes = self._decompressor.process(bytes(chunk))
            else:
                remaining = self.max_output_bytes - self._output_bytes
                output = self._decompressor.process(bytes(chunk), output_buffer_limit=remaining + 1)
        except _brotli.error as exc:
            raise RemoteProtocolError(f"corrupt br content: {exc}") from exc
        return self._count(output)

    def flush(self) -> bytes:
        if not self._decompressor.is_finished():
            raise RemoteProtocolError("truncated br content: the stream ended early")
        return b""


class ZstdDecoder(ContentDecoder):
    """``Content-Encoding: zstd`` (RFC 8878), with the ``flowno-io[zstd]`` extra (``compression.zstd``
    from Python 3.14). Concatenated frames decode as one body; output is capped as for gzip.

    Example:
        >>> from backports import zstd
        >>> body = zstd.compress(b"z" * 5) + zstd.compress(b"!")
        >>> decoder = ZstdDecoder()
        >>> decoder.decode(body[:6]) + decoder.decode(body[6:]) + decoder.flush()
        b'zzzzz!'
    """

    def __init__(self, max_output_bytes: int | None = None) -> None:
        super().__init__(max_output_bytes)
        if _zstd is None:
            raise RemoteProtocolError("Content-Encoding 'zstd' needs flowno-io[zstd]", status_hint=415)
        self._frame: Any = None  # decompressor of the frame in progress, None between frames

    def decode(self, chunk: bytes) -> bytes:
        output: list[bytes] = []
        data = bytes(chunk)
        while data:
            if self._frame is None:
                self._frame = _zstd.ZstdDecompressor()
            try:
                if self.max_output_bytes is None:
                    piece: bytes = self._frame.decompress(data)
                else:
                    remaining = self.max_output_bytes - self._output_bytes
                    piece = self._frame.decompress(data, remaining + 1)
            except _zstd.ZstdError as exc:
                raise RemoteProtocolError(f"corrupt zstd content: {exc}") from exc
            output.append(self._count(piece))
            if self._frame.eof:
                data = self._frame.unused_data
                self._frame = None
            else:
                data = b""
        return b"".join(output)

    def flush(self) -> bytes:
        if self._frame is not None:
            raise RemoteProtocolError("truncated zstd content: the stream ended inside a frame")
        return b""


def available_encodings() -> str:
    """The content codings this installation decodes, as an ``Accept-Encoding`` value.

    ``HttpClient`` asks for ``gzip, deflate`` by default; send this value to ask for brotli and
    zstd too (installed with ``flowno-io[brotli]``, ``flowno-io[zstd]``).

    >>> available_encodings().startswith("gzip, deflate")
    True
    """
    codings = ["gzip", "deflate"]
    if _brotli is not None:
        codings.append("br")
    if _zstd is not None:
        codings.append("zstd")
    return ", ".join(codings)


def _is_zlib_header(cmf: int, flg: int) -> bool:
    # RFC 1950 §2.2: CM=8 (deflate), CINFO<=7, (CMF*256 + FLG) % 31 == 0, FDICT unset.
    return cmf & 0x0F == 8 and cmf >> 4 <= 7 and (cmf * 256 + flg) % 31 == 0 and not flg & 0x20


class MultiDecoder(ContentDecoder):
    """Several codings, as in ``Content-Encoding: deflate, gzip`` (applied in that order).

    Args:
        decoders: one decoder per coding, in the order the codings were applied (the header's
            order); decoding runs them in reverse. Give each the same ``max_output_bytes``, so no
            intermediate stage can grow past the budget either.

    Example:
        >>> import gzip, zlib
        >>> body = gzip.compress(zlib.compress(b"twice"))
        >>> MultiDecoder([DeflateDecoder(), GzipDecoder()]).decode(body)
        b'twice'
    """

    def __init__(self, decoders: Sequence[ContentDecoder], max_output_bytes: int | None = None) -> None:
        super().__init__(max_output_bytes)
        self._decoders = list(reversed(decoders))

    def decode(self, chunk: bytes) -> bytes:
        data = bytes(chunk)
        for decoder in self._decoders:
            data = decoder.decode(data)
        return self._count(data)

    def flush(self) -> bytes:
        data = b""
        for decoder in self._decoders:
            data = decoder.decode(data) + decoder.flush()
        return self._count(data)


def make_decoder(content_encoding: str | None, *, max_output_bytes: int | None = None) -> ContentDecoder:
    """The decoder for a ``Content-Encoding`` header value (``None`` or ``""``: identity).

    Codings are matched case-insensitively; ``identity`` entries are skipped. An unknown coding
    raises ``RemoteProtocolError`` with status hint 415 (RFC 9110 §8.4.1: a server answers 415 to a
    coding it does not support), and so do ``br`` and ``zstd`` when their extra is not installed.
    Passing the still-encoded bytes on as if decoded, as httpx does for codings it lacks, would
    hand the caller garbage.

    Example:
        >>> type(make_decoder("GZIP")).__name__, type(make_decoder("deflate, gzip")).__name__
        ('GzipDecoder', 'MultiDecoder')
        >>> make_decoder("compress")
        Traceback (most recent call last):
        ...
        flowno_io._errors.RemoteProtocolError: unsupported Content-Encoding: 'compress'
    """
    decoders: list[ContentDecoder] = []
    for coding in (content_encoding or "").split(","):
        name = coding.strip().lower()
        if name in ("", "identity"):
            continue
        if name in ("gzip", "x-gzip"):
            decoders.append(GzipDecoder(max_output_bytes))
        elif name == "deflate":
            decoders.append(DeflateDecoder(max_output_bytes))
        elif name == "br":
            decoders.append(BrotliDecoder(max_output_bytes))
        elif name == "zstd":
            decoders.append(ZstdDecoder(max_output_bytes))
        else:
            raise RemoteProtocolError(f"unsupported Content-Encoding: {coding.strip()!r}", status_hint=415)
    if not decoders:
        return IdentityDecoder(max_output_bytes)
    if len(decoders) == 1:
        return decoders[0]
    return MultiDecoder(decoders, max_output_bytes)


class LineDecoder:
    """Split a byte stream into text lines (JSON lines, NDJSON), fed bytes split anywhere.

    Lines end with LF; a CR right before the LF is removed too. Text is UTF-8 with invalid bytes
    replaced by U+FFFD (LF never occurs inside a multi-byte sequence, so each line decodes alone).
    Empty lines are returned; skipping them is the caller's choice.

    Args:
        max_line_bytes: a line longer than this (without its line end) raises ``TooLargeError``
            (status hint 413).

    Example:
        >>> lines = LineDecoder()
        >>> lines.feed(b'{"a": 1}\\r\\n{"b"'), lines.feed(b": 2}\\n{"), lines.close()
        (['{"a": 1}'], ['{"b": 2}'], ['{'])
    """

    def __init__(self, *, max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> None:
        self.max_line_bytes = max_line_bytes
        self._partial = bytearray()

    def feed(self, data: bytes) -> list[str]:
        """Return the lines that ``data`` completed.

        Raises:
            TooLargeError: a line is longer than ``max_line_bytes``.
        """
        lines: list[str] = []
        start = 0
        end = data.find(b"\n")
        while end >= 0:
            if self._partial:
                self._partial += data[start:end]
                line = bytes(self._partial)
                self._partial.clear()
            else:
                line = data[start:end]
            lines.append(self._decode(line))
            start = end + 1
            end = data.find(b"\n", start)
        self._partial += data[start:]
        # The tail may end in the CR of a CRLF split across chunks: allow one byte for it.
        if len(self._partial) > self.max_line_bytes + (self._partial[-1:] == b"\r"):
            self._too_large()
        return lines

    def close(self) -> list[str]:
        """End of stream: the last line, if it had no line end (a lone trailing CR is dropped)."""
        line, self._partial = bytes(self._partial), bytearray()
        return [self._decode(line)] if line else []

    def _decode(self, line: bytes) -> str:
        line = line.removesuffix(b"\r")
        if len(line) > self.max_line_bytes:
            self._too_large()
        return line.decode("utf-8", "replace")

    def _too_large(self) -> NoReturn:
        raise TooLargeError(f"line longer than max_line_bytes={self.max_line_bytes}", status_hint=413)
