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

__all__ = [
    "DEFAULT_MAX_LINE_BYTES",
    "ContentDecoder",
    "DeflateDecoder",
    "GzipDecoder",
    "IdentityDecoder",
    "LineDecoder",
    "MultiDecoder",
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
    coding it does not support). Passing the still-encoded bytes on as if decoded, as httpx does
    for codings it lacks, would hand the caller garbage. We only send ``Accept-Encoding: gzip,
    deflate``, so a server that answers with another coding is broken.

    Example:
        >>> type(make_decoder("GZIP")).__name__, type(make_decoder("deflate, gzip")).__name__
        ('GzipDecoder', 'MultiDecoder')
        >>> make_decoder("br")
        Traceback (most recent call last):
        ...
        flowno_io._errors.RemoteProtocolError: unsupported Content-Encoding: 'br'
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
