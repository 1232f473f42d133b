"""gzip response compression as a middleware (RFC 9110 §8.4, §12.5.3).

:class:`GZipMiddleware` compresses a response when all of these hold:

* the client accepts ``gzip`` (``Accept-Encoding``, with q-values: ``gzip;q=0`` refuses it, ``*``
  accepts it unless gzip is refused by name);
* the type is compressible: ``text/*`` (but not ``text/event-stream``, see below), JSON and
  ``+json``/``+xml`` types, JavaScript, XML, SVG, WebAssembly...;
* a plain response's body is at least ``minimum_size`` bytes (smaller ones gain nothing);
* the response is not already encoded (``Content-Encoding`` set: never double-encode), not a
  ``206`` or bodiless status, and not marked ``Cache-Control: no-transform``.

Every response that *could* be compressed gets ``Vary: Accept-Encoding``, compressed or not, so a
shared cache keys on it. A strong ``ETag`` becomes weak on the compressed variant (the bytes differ).

**Streaming responses** are compressed chunk by chunk with a sync flush (``Z_SYNC_FLUSH``): each
piece the producer yields is sent as soon as it is produced, compressed, instead of sitting in the
compressor's window. Their ``Content-Length`` (if the application gave one) is dropped: the server
then frames the body with chunked coding.

**Event streams (``text/event-stream``) are not compressed**, on purpose:

1. Heartbeat comments and :class:`~flowno_io.Topic` fan-out are written to the socket by the
   server's stream monitor and by the publisher directly, not through the body iterator a
   middleware can wrap: they would land in the middle of a gzip stream and corrupt it.
2. A fan-out encodes an event once for N subscribers; compression would be once per subscriber,
   with a compressor (~270 KiB of zlib state at level 6) held by each of thousands of idle streams.
3. Events are small and flushed one by one: a sync flush per event adds ~5 bytes and saves little
   on a 50-byte event, and per-connection compressed secrets mixed with reflected input invite
   BREACH-style attacks.

Example:
    >>> import httpx
    >>> from flowno_io import HttpServer
    >>> from flowno_io.testing import ServerThread
    >>> server = HttpServer("127.0.0.1", 0, routes={"/": lambda r: "hello " * 200},
    ...                     middleware=[GZipMiddleware()])
    >>> with ServerThread(server) as url:
    ...     r = httpx.get(url + "/", headers={"Accept-Encoding": "gzip"})
    >>> r.headers["content-encoding"], r.headers["vary"], r.text == "hello " * 200
    ('gzip', 'Accept-Encoding', True)
"""

from __future__ import annotations

import gzip
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from typing import Any

from ..protocol.models import Response
from .middleware import CallNext, add_vary, copy_response
from .request import Request

__all__ = [
    "COMPRESSIBLE_TYPES",
    "DEFAULT_COMPRESS_LEVEL",
    "DEFAULT_MINIMUM_SIZE",
    "GZipMiddleware",
    "accepts_gzip",
    "is_compressible",
]

#: Smallest plain body worth compressing, in bytes (Starlette: 500; nginx ``gzip_min_length``: 20).
DEFAULT_MINIMUM_SIZE = 500
#: zlib level: 6 is zlib's and nginx's default trade-off (1 fastest, 9 smallest).
DEFAULT_COMPRESS_LEVEL = 6
#: Media types compressed besides ``text/*`` and the ``+json``/``+xml`` suffixes.
COMPRESSIBLE_TYPES = frozenset(
    {
        "application/json",
        "application/javascript",
        "application/ecmascript",
        "application/xml",
        "application/xhtml+xml",
        "application/rss+xml",
        "application/atom+xml",
        "application/ld+json",
        "application/manifest+json",
        "application/x-ndjson",
        "application/wasm",
        "application/graphql-response+json",
        "image/svg+xml",
        "image/x-icon",
        "font/ttf",
        "font/otf",
    }
)
#: Never compressed: see the module docstring.
_EVENT_STREAM = "text/event-stream"
_NO_BODY = frozenset({204, 206, 304})


def accepts_gzip(accept_encoding: str | None) -> bool:
    """True when an ``Accept-Encoding`` value allows ``gzip``.

    Example:
        >>> accepts_gzip("gzip, deflate, br"), accepts_gzip("br;q=1, gzip;q=0"), accepts_gzip("*")
        (True, False, True)
        >>> accepts_gzip(None), accepts_gzip("identity"), accepts_gzip("*, gzip;q=0")
        (False, False, False)
    """
    if not accept_encoding:
        return False
    star = None
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        coding = coding.strip().lower()
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if coding in ("gzip", "x-gzip"):
            return quality > 0
        if coding == "*":
            star = quality > 0
    return bool(star)


def is_compressible(content_type: str | None) -> bool:
    """True for types worth compressing (not event streams, images, archives...).

    Example:
        >>> is_compressible("text/html; charset=utf-8"), is_compressible("application/problem+json")
        (True, True)
        >>> is_compressible("text/event-stream"), is_compressible("image/png"), is_compressible(None)
        (False, False, False)
    """
    if not content_type:
        return False
    media = content_type.partition(";")[0].strip().lower()
    if media == _EVENT_STREAM:
        return False
    return (
        media.startswith("text/")
        or media in COMPRESSIBLE_TYPES
        or media.endswith("+json")
        or media.endswith("+xml")
    )


class GZipMiddleware:
    """Compress responses with gzip when the client accepts it (see the module docstring).

    Args:
        minimum_size: plain bodies smaller than this are sent as they are.
        compress_level: zlib level, 1 (fastest) to 9 (smallest).
    """

    def __init__(
        self, minimum_size: int = DEFAULT_MINIMUM_SIZE, compress_level: int = DEFAULT_COMPRESS_LEVEL
    ) -> None:
        if not 1 <= compress_level <= 9:
            raise ValueError(f"compress_level must be within 1-9, not {compress_level}")
        if minimum_size < 0:
            raise ValueError(f"minimum_size must be >= 0, not {minimum_size}")
        self.minimum_size = minimum_size
        self.compress_level = compress_level

    def __repr__(self) -> str:
        return f"<GZipMiddleware minimum_size={self.minimum_size} level={self.compress_level}>"

    async def __call__(self, request: Request, call_next: CallNext) -> Any:
        response = await call_next(request)
        if not self._eligible(response):
            return response
        response = copy_response(response)
        headers = response.headers
        add_vary(headers, "Accept-Encoding")
        if not accepts_gzip(request.headers.get("accept-encoding")):
            return response
        headers.set("Content-Encoding", "gzip")
        etag = headers.get("etag")
        if etag is not None and not etag.startswith("W/"):
            headers.set("ETag", "W/" + etag)
        if isinstance(response, Response):
            response.body = gzip.compress(response.body, self.compress_level, mtime=0)
        else:
            headers.delete("content-length")
            response.body = _gzip_stream(response.body, response._encode, self.compress_level)
        return response

    def _eligible(self, response: Any) -> bool:
        status = response.status_code
        headers = response.headers
        if status < 200 or status in _NO_BODY or "content-encoding" in headers:
            return False
        if not is_compressible(headers.get("content-type")):
            return False
        cache_control = headers.get("cache-control")
        if cache_control is not None and "no-transform" in cache_control.lower():
            return False
        if isinstance(response, Response):
            return len(response.body) >= self.minimum_size
        return hasattr(response, "body") and hasattr(response, "_encode")  # a StreamingResponse


async def _gzip_stream(
    body: AsyncIterable[Any] | Iterable[Any], encode: Callable[[Any], bytes], level: int
) -> AsyncIterator[bytes]:
    """``body`` gzip-compressed, each piece flushed (``Z_SYNC_FLUSH``) as soon as it is produced."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, 16 + zlib.MAX_WBITS)  # 16+: gzip wrapper
    iterator: Any = body.__aiter__() if isinstance(body, AsyncIterable) else iter(body)
    is_async = isinstance(body, AsyncIterable)
    try:
        while True:
            try:
                item = await iterator.__anext__() if is_async else next(iterator)
            except (StopAsyncIteration, StopIteration):
                break
            data = encode(item)
            if data:
                yield compressor.compress(data) + compressor.flush(zlib.Z_SYNC_FLUSH)
        yield compressor.flush(zlib.Z_FINISH)
    finally:
        close = getattr(iterator, "aclose", None) or getattr(iterator, "close", None)
        if close is not None:
            result = close()
            if is_async and result is not None:
                await result
