"""``multipart/form-data`` request bodies (RFC 7578) for ``files=``, streamed part by part.

Parts whose size is known (bytes, text, regular files) give a body with a ``Content-Length``
(:class:`SizedBody`); a part that is an async iterable makes the body chunked. Files are read in
64 KiB pieces while sending, never loaded whole.

Example:
    >>> body, content_type = encode_multipart({"note": "hi"}, {"f": ("a.txt", b"abc")}, boundary="B")
    >>> content_type
    'multipart/form-data; boundary=B'
    >>> for line in body.split(b"\\r\\n"):
    ...     print(line.decode())
    --B
    Content-Disposition: form-data; name="note"
    <BLANKLINE>
    hi
    --B
    Content-Disposition: form-data; name="f"; filename="a.txt"
    Content-Type: text/plain
    <BLANKLINE>
    abc
    --B--
    <BLANKLINE>
"""

from __future__ import annotations

import mimetypes
import os
import stat
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from typing import IO, Any, TypeAlias

__all__ = ["FileContent", "Files", "SizedBody", "encode_multipart"]

#: A file's content: bytes, text (UTF-8), a binary file object, or an async iterable of bytes.
FileContent: TypeAlias = bytes | str | IO[bytes] | AsyncIterable[bytes]
#: A file: its content, or ``(filename, content)``, or ``(filename, content, content_type)``.
FileValue: TypeAlias = FileContent | tuple[str | None, FileContent] | tuple[str | None, FileContent, str]
#: ``files=``: field name → file, or ``(field name, file)`` pairs (a name may repeat).
Files: TypeAlias = Mapping[str, FileValue] | Sequence[tuple[str, FileValue]]

_READ_SIZE = 64 * 1024


class SizedBody:
    """A request body streamed from ``chunks`` whose total ``length`` is known in advance (sent
    with ``Content-Length``, not chunked). Sent once: it is not replayed on a retry or redirect."""

    __slots__ = ("chunks", "length")

    def __init__(self, chunks: AsyncIterable[bytes], length: int) -> None:
        self.chunks = chunks
        self.length = length

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.chunks.__aiter__()


def _quote(value: str) -> str:
    # As browsers and httpx do (WHATWG): the three characters that would break the header.
    return value.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


def _file_size(file: IO[bytes]) -> int | None:
    """Bytes left in a regular file from its position, or ``None`` when unknown."""
    try:
        status = os.fstat(file.fileno())
        if not stat.S_ISREG(status.st_mode):
            return None
        return status.st_size - file.tell()
    except (AttributeError, OSError, ValueError):
        return None


async def _read_file(file: IO[bytes]) -> AsyncIterator[bytes]:
    while data := file.read(_READ_SIZE):
        yield data


def _parts(data: Mapping[str, Any] | None, files: Files) -> list[tuple[bytes, Any, int | None]]:
    """``(part head, content, content size or None)`` for each form field and file."""
    parts: list[tuple[bytes, Any, int | None]] = []
    for name, value in (data or {}).items():
        for item in value if isinstance(value, list | tuple) else [value]:
            field = item if isinstance(item, bytes) else str(item).encode()
            field_head = f'Content-Disposition: form-data; name="{_quote(name)}"\r\n\r\n'.encode()
            parts.append((field_head, field, len(field)))
    for name, value in files.items() if isinstance(files, Mapping) else files:
        filename: str | None = None
        content_type: str | None = None
        if isinstance(value, tuple):
            filename, content = value[0], value[1]
            if len(value) == 3:
                content_type = value[2]
        else:
            content = value
            raw_name = getattr(content, "name", None)
            if isinstance(raw_name, str):
                filename = os.path.basename(raw_name)
        if content_type is None:
            guessed = mimetypes.guess_type(filename)[0] if filename else None
            content_type = guessed or "application/octet-stream"
        head = f'Content-Disposition: form-data; name="{_quote(name)}"'
        if filename is not None:
            head += f'; filename="{_quote(filename)}"'
        head += f"\r\nContent-Type: {content_type}\r\n\r\n"
        size: int | None
        if isinstance(content, str):
            content = content.encode()
        if isinstance(content, bytes):
            size = len(content)
        elif isinstance(content, AsyncIterable):
            size = None
        elif hasattr(content, "read"):
            size = _file_size(content)
        else:
            raise TypeError(
                f"files[{name!r}] must be bytes, str, a binary file or an async iterable of bytes, "
                f"not {type(content).__name__}"
            )
        parts.append((head.encode(), content, size))
    return parts


def encode_multipart(
    data: Mapping[str, Any] | None, files: Files, *, boundary: str | None = None
) -> tuple[bytes | SizedBody | AsyncIterable[bytes], str]:
    """The ``multipart/form-data`` body of form fields ``data`` and ``files``, and its content type.

    Returns:
        ``bytes`` when every part is in memory; a :class:`SizedBody` when some are files of known
        size; an async iterable (sent chunked) when a part's size is unknown.
    """
    boundary = boundary or os.urandom(16).hex()
    delimiter = f"--{boundary}\r\n".encode()
    end = f"--{boundary}--\r\n".encode()
    parts = _parts(data, files)
    content_type = f"multipart/form-data; boundary={boundary}"
    if all(isinstance(content, bytes) for _, content, _ in parts):
        pieces = [b"".join((delimiter, head, content, b"\r\n")) for head, content, _ in parts]
        return b"".join(pieces) + end, content_type

    async def chunks() -> AsyncIterator[bytes]:
        for head, content, _ in parts:
            yield delimiter + head
            if isinstance(content, bytes):
                yield content
            else:
                source = content if isinstance(content, AsyncIterable) else _read_file(content)
                async for piece in source:
                    yield piece
            yield b"\r\n"
        yield end

    sizes = [size for _, _, size in parts]
    if None in sizes:
        return chunks(), content_type
    length = len(end) + sum(len(delimiter) + len(head) + 2 for head, _, _ in parts)
    length += sum(size for size in sizes if size is not None)
    return SizedBody(chunks(), length), content_type
