"""``HttpClient``: HTTP/1.1 requests on the flowno event loop, with the API of ``flowno.io``.

Keep-alive connections are pooled per (scheme, host, port) (``client/pool.py``); responses are parsed
by ``protocol/http11_client.py``; streaming bodies (raw bytes, JSON lines, Server-Sent Events) are in
``client/response_stream.py``. One client may be shared by any number of tasks on one loop.

Example:
    >>> from flowno import EventLoop, spawn
    >>> from flowno_io import HttpServer
    >>> server = HttpServer("127.0.0.1", 0, routes={"/hi": lambda request: {"hello": "world"}})
    >>> async def main():
    ...     await spawn(server.serve())
    ...     async with HttpClient() as client:
    ...         response = await client.get(f"http://127.0.0.1:{server.port}/hi")
    ...     await server.close()
    ...     return response.status, response.decode_json()
    >>> EventLoop().run_until_complete(main(), join=True)
    ('HTTP/1.1 200 OK', {'hello': 'world'})
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from time import monotonic
from types import TracebackType
from typing import Any, Final, TypeAlias
from urllib.parse import urlencode, urljoin

import orjson

from .._errors import (
    HttpError,
    LocalProtocolError,
    ReadError,
    RemoteProtocolError,
    TooLargeError,
    TooManyRedirects,
    WriteError,
)
from ..io.flowno_compat import running_loop
from ..protocol.headers import Headers
from ..protocol.http11_client import DEFAULT_MAX_RESPONSE_HEADER_BYTES, ResponseParser, encode_request_head
from ..protocol.models import Response
from ..protocol.trace_context import current_trace, new_traceparent, slot_or_none
from .auth import Auth, DigestAuth, coerce_auth
from .cookies import ClientCookies, CookieJar
from .multipart import Files, SizedBody, encode_multipart
from .pool import (
    DEFAULT_KEEPALIVE_EXPIRY,
    DEFAULT_MAX_CONNECTIONS_PER_HOST,
    Connection,
    ConnectionPool,
    Origin,
    RequestBody,
    Transport,
    ssl_context_for,
)
from .proxy import ProxyRoutes
from .response_stream import (
    BodyReader,
    ErrStreamingResponse,
    HTTPException,
    OkStreamingResponse,
    body_iterator,
    decode_text,
    streaming_response_is_ok,
)
from .urls import Params, _encode_params, _parse_url, _ParsedURL

__all__ = [
    "DEFAULT_MAX_REDIRECTS",
    "DEFAULT_MAX_RESPONSE_BODY_BYTES",
    "DEFAULT_TIMEOUT",
    "ClientResponse",
    "DigestAuth",
    "ErrStreamingResponse",
    "HTTPException",
    "HttpClient",
    "OkStreamingResponse",
    "Timeout",
    "streaming_response_is_ok",
]

#: Decoded response body limit, buffered or streamed (→ ``TooLargeError``, status hint 413).
#: httpx and aiohttp set none; 64 MiB bounds memory (and gzip bombs) yet fits any API response.
DEFAULT_MAX_RESPONSE_BODY_BYTES = 64 * 1024 * 1024
#: Redirects followed per request when following is on (httpx: 20; browsers: 20).
DEFAULT_MAX_REDIRECTS = 20
#: Body of a redirect response read and dropped to keep its connection; a larger one closes it.
_MAX_DRAIN_BYTES = 64 * 1024

_REDIRECT_STATUSES: Final = frozenset({301, 302, 303, 307, 308})
_IDEMPOTENT: Final = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})
_BODY_EXPECTED: Final = frozenset({"POST", "PUT", "PATCH"})
_URL_CACHE_SIZE = 512

HeadersLike: TypeAlias = Headers | Mapping[str, str | list[str]]
#: ``data=``: bytes, text (UTF-8), a form (``application/x-www-form-urlencoded``), or an async
#: iterable of byte chunks (sent with ``Transfer-Encoding: chunked``).
RequestData: TypeAlias = (
    bytes | bytearray | memoryview | str | Mapping[str, Any] | AsyncIterable[bytes] | None
)
AuthLike: TypeAlias = Auth | tuple[str, str]


@dataclass(frozen=True, slots=True)
class Timeout:
    """Timeouts in seconds (``None``: no limit), per client and per request.

    Attributes:
        connect: to open a connection (TCP and TLS handshake) → ``ConnectTimeout``.
        read: between two arrivals of response bytes → ``ReadTimeout``.
        write: for the server to accept more request bytes → ``WriteTimeout``.
        pool: to get a connection when ``max_connections_per_host`` are busy → ``PoolTimeout``.
        total: for the whole exchange, until the end of the body (streamed too) → ``TotalTimeout``.

    A number instead of a ``Timeout`` sets connect, read, write and pool (as in httpx).

    Example:
        >>> from flowno_io import Timeout
        >>> Timeout.coerce(2.5)
        Timeout(connect=2.5, read=2.5, write=2.5, pool=2.5, total=None)
    """

    connect: float | None = 10.0
    read: float | None = 60.0
    write: float | None = 60.0
    pool: float | None = 60.0
    total: float | None = None

    @classmethod
    def coerce(cls, value: Timeout | float | None) -> Timeout:
        """A ``Timeout`` from a ``Timeout``, a number of seconds, or ``None`` (no limits)."""
        if isinstance(value, Timeout):
            return value
        return cls(value, value, value, value, None)


#: Default timeouts: connect 10 s, read/write/pool 60 s (model replies can be slow), no total.
DEFAULT_TIMEOUT = Timeout()


class ClientResponse(Response):
    """The :class:`Response` ``HttpClient`` returns, with where and how long.

    Attributes:
        url: the URL of the final request (after redirects, with the query sent).
        history: the redirect responses followed to get here, oldest first (bodies not kept).
        elapsed: from sending the request to the end of the response body, a ``timedelta``.

    ``text`` decodes with the ``charset`` of ``Content-Type`` (UTF-8 when none).
    """

    __slots__ = ("_elapsed", "history", "url")

    url: str
    history: list[ClientResponse]
    _elapsed: float

    @classmethod
    def _of(
        cls, parser: ResponseParser, body: bytes, url: str, history: list[ClientResponse], elapsed: float
    ) -> ClientResponse:
        """The response a parser read: its head as parsed (no status-phrase lookup, no header copy)."""
        status = parser.status_code
        if not 100 <= status <= 999:
            raise ValueError(f"invalid status code {status}")  # (what Response() raises)
        response = cls.__new__(cls)
        response.body = body
        response.status_code = status
        response.reason = parser.reason
        response.http_version = parser.http_version
        response.headers = parser.headers
        response.url = url
        response.history = history
        response._elapsed = elapsed
        return response

    @property
    def elapsed(self) -> timedelta:
        """From sending the request to the end of the response body."""
        return timedelta(seconds=self._elapsed)

    @property
    def text(self) -> str:
        """The body decoded with the ``Content-Type`` charset, UTF-8 by default (invalid bytes replaced)."""
        return decode_text(self.body, self.headers.get("content-type"))


def _history_entry(parser: ResponseParser, url: str) -> ClientResponse:
    entry = ClientResponse(b"", parser.status_code, parser.headers)
    entry.reason = parser.reason
    entry.http_version = parser.http_version
    entry.url = url
    entry.history = []
    entry._elapsed = 0.0
    return entry


class _Unset:
    __slots__ = ()


_UNSET: Final = _Unset()


def _check_options(**options: Any) -> None:
    """``TypeError``/``ValueError`` naming the first :class:`HttpClient` option of a wrong type or range."""

    def check(name: str, value: object, kinds: type | tuple[type, ...], low: float, wanted: str) -> None:
        if value is None and "None" in wanted:
            return
        if isinstance(value, bool) or not isinstance(value, kinds):
            raise TypeError(f"HttpClient {name} must be {wanted}, not {value!r}")
        if not value >= low:  # type: ignore[operator]  # also NaN
            raise ValueError(f"HttpClient {name} must be {wanted}, not {value!r}")

    timeout = options["timeout"]
    if isinstance(timeout, Timeout):
        for field in ("connect", "read", "write", "pool", "total"):
            check(f"timeout.{field}", getattr(timeout, field), (int, float), 0, "seconds >= 0 or None")
    else:
        check("timeout", timeout, (int, float), 0, "a Timeout, seconds >= 0 (a number) or None")
    check("keepalive_expiry", options["keepalive_expiry"], (int, float), 0, "seconds >= 0")
    check("max_connections_per_host", options["max_connections_per_host"], int, 1, "an int >= 1 or None")
    check("max_connections", options["max_connections"], int, 1, "an int >= 1 or None")
    check("max_redirects", options["max_redirects"], int, 0, "an int >= 0")
    check("max_header_bytes", options["max_header_bytes"], int, 1, "an int >= 1")
    check("max_body_bytes", options["max_body_bytes"], int, 0, "an int >= 0 or None")
    for name, kinds, wanted in (
        ("base_url", (str, type(None)), "a str or None"),
        ("follow_redirects", bool, "True or False"),
        ("verify", (bool, str, ssl.SSLContext), "True, False, a CA bundle path or an ssl.SSLContext"),
        ("user_agent", str, "a str"),
        ("start_traces", bool, "True or False"),
    ):
        if not isinstance(options[name], kinds):
            raise TypeError(f"HttpClient {name} must be {wanted}, not {options[name]!r}")


def _encode_body(data: RequestData, json: Any, files: Files | None = None) -> tuple[RequestBody, str | None]:
    """The body to send and the ``Content-Type`` it implies."""
    if files is not None:
        if data is not None and not isinstance(data, Mapping):
            raise TypeError("with files=, data must be a mapping of form fields")
        return encode_multipart(data, files)
    if json is not None:
        return orjson.dumps(json), "application/json"
    if data is None or isinstance(data, bytes):
        return data, None
    if isinstance(data, bytearray | memoryview):
        return bytes(data), None
    if isinstance(data, str):
        return data.encode(), "text/plain; charset=utf-8"
    if isinstance(data, Mapping):
        return urlencode(data, doseq=True).encode(), "application/x-www-form-urlencoded"
    if isinstance(data, AsyncIterable):
        return data, None
    raise TypeError(
        f"data must be bytes, str, a mapping or an async iterable of bytes, not {type(data).__name__}"
    )


#: Fields a request's headers cannot simply add to a cached plain head: the head sets or drops them.
_NOT_APPENDABLE = frozenset({"host", "content-length", "transfer-encoding"})


def _field_lines(headers: Headers) -> bytes:
    """The header lines of ``headers`` and the blank line that ends a head."""
    lines = [f"{name}: {value}\r\n" for name, values in headers._fields.items() for value in values]
    lines.append("\r\n")
    return "".join(lines).encode()


def _merge_headers(*sources: HeadersLike | None) -> Headers | None:
    result: Headers | None = None
    for source in sources:
        if source is None:
            continue
        try:
            headers = source if isinstance(source, Headers) else Headers(source)
        except ValueError as exc:  # CR/LF or a control character: never sent
            raise LocalProtocolError(str(exc)) from None
        if result is None:
            result = headers
        else:
            result = result.copy()
            result.merge(headers)
    return result


class HttpClient:
    """An HTTP/1.1 client with keep-alive pooling, streaming, timeouts and typed errors.

    Args:
        headers: headers sent with every request (a request's own headers win over them).
        base_url: prefix for relative URLs (``base_url="http://h/api"``, ``get("/users")``).
        timeout: a :class:`Timeout`, a number of seconds, or ``None`` for no limits.
        max_connections_per_host: pooled connections per (scheme, host, port), ``None`` for no
            limit; requests beyond it wait (``Timeout.pool``).
        max_connections: connections in all hosts together, ``None`` (default) for no limit; at
            the limit an idle connection to another host is closed to make room, else requests
            wait (``Timeout.pool``) for one to close.
        keepalive_expiry: seconds an idle connection is kept for reuse.
        follow_redirects: follow 301/302/303/307/308 (off by default, as in httpx).
        max_redirects: redirects followed per request before ``TooManyRedirects``.
        max_header_bytes: response status line + headers limit (→ ``TooLargeError``).
        max_body_bytes: decoded body limit, buffered or streamed (→ ``TooLargeError``); ``None``
            for none (endless event streams).
        verify: ``True`` verifies https certificates against the system store, a path names a
            CA bundle, an ``ssl.SSLContext`` is used as given, ``False`` disables verification.
        user_agent: the ``User-Agent`` header.
        auth: ``(user, password)`` (Basic), :class:`BasicAuth`, :class:`DigestAuth`, or any
            :class:`Auth`; sent only to the origin a request starts at, never after a redirect
            to another one. Credentials in a URL (``http://user:pass@host/``) are sent as Basic.
        cookies: ``True`` (default) keeps a cookie jar per client (the stdlib ``http.cookiejar``
            policy; ``Set-Cookie`` of every response, redirects included, is stored and sent
            back); ``False`` for none; or a ``CookieJar`` to share or persist (``FileCookieJar``).
        proxy: an ``http://[user:password@]host:port`` proxy for every request: http requests
            are forwarded through it, https ones tunnelled with ``CONNECT`` (TLS stays end to
            end); credentials are sent as ``Proxy-Authorization`` (a 407 is a ``ConnectError``
            for https, a normal response for http).
        trust_env: with no ``proxy``, use ``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY`` and
            ``NO_PROXY`` (either case) from the environment, as curl and httpx do.
        transport: where connections come from instead of the network: for tests,
            ``flowno_io.testing.MockTransport(handler)`` answers every request in memory.
        local_address: source address to bind each connection to (e.g. ``"127.0.0.2"``), ``None``
            for the system's choice.
        start_traces: a request outside a traced handler (which carries its trace on) and without
            a ``traceparent`` (its own or the client's) starts a new W3C trace, so the server's
            logs and spans of each request can be told apart (a load generator's use).

    Errors are the ``HttpError`` tree: ``ConnectError``, ``ReadError``, ``WriteError``, the
    ``TimeoutError`` family, ``RemoteProtocolError`` (a malformed response, or one cut short),
    ``TooLargeError``, ``TooManyRedirects``. A 4xx/5xx is a normal response; call
    ``raise_for_status()`` to turn it into ``HTTPStatusError``.

    A task may be cancelled anywhere inside a request or while it reads a streamed body, with
    ``flowno_io.cancel(task)`` or flowno's ``TaskHandle.cancel()``: its connection is closed (never
    pooled half-read), its pool slot freed, and the client stays usable by other tasks
    (``docs/flowno-upstream.md`` §12).
    """

    def __init__(
        self,
        headers: HeadersLike | None = None,
        *,
        base_url: str | None = None,
        timeout: Timeout | float | None = DEFAULT_TIMEOUT,
        max_connections_per_host: int | None = DEFAULT_MAX_CONNECTIONS_PER_HOST,
        max_connections: int | None = None,
        keepalive_expiry: float = DEFAULT_KEEPALIVE_EXPIRY,
        follow_redirects: bool = False,
        max_redirects: int = DEFAULT_MAX_REDIRECTS,
        max_header_bytes: int = DEFAULT_MAX_RESPONSE_HEADER_BYTES,
        max_body_bytes: int | None = DEFAULT_MAX_RESPONSE_BODY_BYTES,
        verify: bool | str | ssl.SSLContext = True,
        user_agent: str = "flowno-io/0.1",
        auth: AuthLike | None = None,
        cookies: CookieJar | bool = True,
        proxy: str | None = None,
        trust_env: bool = True,
        transport: Transport | None = None,
        local_address: str | None = None,
        start_traces: bool = False,
    ) -> None:
        _check_options(
            base_url=base_url,
            timeout=timeout,
            max_connections_per_host=max_connections_per_host,
            max_connections=max_connections,
            keepalive_expiry=keepalive_expiry,
            follow_redirects=follow_redirects,
            max_redirects=max_redirects,
            max_header_bytes=max_header_bytes,
            max_body_bytes=max_body_bytes,
            verify=verify,
            user_agent=user_agent,
            start_traces=start_traces,
        )
        self.start_traces = start_traces
        #: Headers sent with every request; mutable.
        self.headers = Headers(headers) if not isinstance(headers, Headers) else headers
        self.base_url = base_url.rstrip("/") if base_url else None
        self.timeout = Timeout.coerce(timeout)
        self.follow_redirects = follow_redirects
        self.max_redirects = max_redirects
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        #: Authentication for every request (``BasicAuth``, ``DigestAuth``, any :class:`Auth`).
        self.auth = coerce_auth(auth)
        if cookies is True:
            cookies = CookieJar()
        if cookies is not False and not isinstance(cookies, CookieJar):
            raise TypeError(f"HttpClient cookies must be True, False or a CookieJar, not {cookies!r}")
        self._cookies = ClientCookies(cookies) if cookies is not False else None
        #: Requests sent, and those that failed before a response head, by origin (for
        #: ``client/metrics.py``; a plain dict update a request).
        self.requests_by_origin: dict[Origin, int] = {}
        self.errors_by_origin: dict[Origin, int] = {}
        if proxy is not None and not isinstance(proxy, str):
            raise TypeError(f"HttpClient proxy must be a URL (str) or None, not {proxy!r}")
        routes = ProxyRoutes(proxy, trust_env=trust_env)
        # (None: not a call per request; a transport stands in for the network, proxies too)
        self._proxies = routes if routes and transport is None else None
        # As the seed: no Accept header (httpbin echoes headers, and the seed's docs show them).
        self._base_fields: dict[str, list[str]] = {
            "user-agent": [user_agent],
            "accept-encoding": ["gzip, deflate"],
        }
        self._pool = ConnectionPool(
            ssl_context=ssl_context_for(verify),
            max_connections_per_host=max_connections_per_host,
            keepalive_expiry=keepalive_expiry,
            transport=transport,
            max_connections=max_connections,
            local_address=local_address,
        )
        self._urls: dict[str, _ParsedURL] = {}
        self._heads: dict[tuple[str, str], tuple[dict[str, list[str]], Origin, bytes]] = {}

    @property
    def override_headers(self) -> Headers:
        """The seed's name for :attr:`headers`."""
        return self.headers

    @property
    def cookies(self) -> CookieJar | None:
        """The client's ``http.cookiejar.CookieJar`` (``None`` when made with ``cookies=False``)."""
        return None if self._cookies is None else self._cookies.jar

    @property
    def pool(self) -> ConnectionPool:
        """The connection pool (for its counters: ``connections_opened``, ``idle_connections()``)."""
        return self._pool

    # -- lifecycle --------------------------------------------------------------------------

    def close(self) -> None:
        """Close pooled connections; requests in flight fail with ``ClosedResourceError``."""
        self._pool.close()

    async def aclose(self) -> None:
        """Async form of :meth:`close`."""
        self._pool.close()

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._pool.close()

    # -- the seed API ---------------------------------------------------------------------------

    async def get(self, url: str, **options: Any) -> Response:
        """GET ``url``; ``options`` are those of :meth:`request` (``params``, ``headers``, ...)."""
        return await self.request("GET", url, **options)

    async def post(self, url: str, json: Any = None, data: RequestData = None, **options: Any) -> Response:
        """POST ``json`` (encoded with orjson) or ``data`` to ``url``."""
        return await self.request("POST", url, data, json=json, **options)

    async def put(self, url: str, json: Any = None, data: RequestData = None, **options: Any) -> Response:
        """PUT ``json`` or ``data`` to ``url``."""
        return await self.request("PUT", url, data, json=json, **options)

    async def patch(self, url: str, json: Any = None, data: RequestData = None, **options: Any) -> Response:
        """PATCH ``json`` or ``data`` to ``url``."""
        return await self.request("PATCH", url, data, json=json, **options)

    async def delete(self, url: str, **options: Any) -> Response:
        """DELETE ``url``."""
        return await self.request("DELETE", url, **options)

    async def head(self, url: str, **options: Any) -> Response:
        """HEAD ``url`` (the response has headers and an empty body)."""
        return await self.request("HEAD", url, **options)

    async def options(self, url: str, **options: Any) -> Response:
        """OPTIONS ``url``."""
        return await self.request("OPTIONS", url, **options)

    async def request(
        self,
        method: str,
        url: str,
        data: RequestData = None,
        extra_headers: HeadersLike | None = None,
        *,
        json: Any = None,
        params: Params | None = None,
        headers: HeadersLike | None = None,
        timeout: Timeout | float | _Unset | None = _UNSET,
        follow_redirects: bool | None = None,
        max_body_bytes: int | _Unset | None = _UNSET,
        auth: AuthLike | _Unset | None = _UNSET,
        files: Files | None = None,
    ) -> Response:
        """Send a request and read the whole response.

        Args:
            method: any method (``"GET"``, ``"QUERY"``...).
            url: absolute, or relative to ``base_url``.
            data: the body: bytes, str, a form mapping, or an async iterable of bytes (chunked).
            extra_headers: headers for this request (the seed's name; ``headers`` is the same).
            json: a value to send as JSON instead of ``data``.
            params: query parameters added to the URL.
            timeout: overrides the client's timeouts for this request.
            follow_redirects: overrides the client's setting for this request.
            max_body_bytes: overrides the client's body limit for this request.
            auth: overrides the client's ``auth`` for this request (``None``: none).
            files: upload as ``multipart/form-data``: ``{"field": content}`` or
                ``{"field": (filename, content[, content_type])}``, content being bytes, str, a
                binary file (streamed, with a ``Content-Length`` when its size is known) or an
                async iterable of bytes (chunked); ``data`` (a mapping) adds form fields.

        Returns:
            The :class:`ClientResponse`, body decompressed (a 4xx/5xx is returned, not raised).
        """
        start = monotonic()
        if extra_headers is not None or (headers is not None and type(headers) is not Headers):
            headers = _merge_headers(extra_headers, headers)  # (else: already one Headers, or none)
        reader, final_url, history = await self._send(
            method, url, data, json, params, headers, timeout, follow_redirects, max_body_bytes, auth, files
        )
        body = reader.read_all_nowait()  # (the whole body usually came with the head)
        if body is None:
            body = await reader.read_all()
        return ClientResponse._of(reader.parser, body, final_url, history, monotonic() - start)

    async def stream_get(self, url: str, **options: Any) -> OkStreamingResponse[Any] | ErrStreamingResponse:
        """Streaming GET; see :meth:`stream_request`."""
        return await self.stream_request("GET", url, **options)

    async def stream_post(
        self, url: str, json: Any = None, data: RequestData = None, **options: Any
    ) -> OkStreamingResponse[Any] | ErrStreamingResponse:
        """Streaming POST of ``json`` or ``data``; see :meth:`stream_request`."""
        return await self.stream_request("POST", url, data, json=json, **options)

    async def stream_request(
        self,
        method: str,
        url: str,
        data: RequestData = None,
        extra_headers: HeadersLike | None = None,
        *,
        json: Any = None,
        params: Params | None = None,
        headers: HeadersLike | None = None,
        timeout: Timeout | float | _Unset | None = _UNSET,
        follow_redirects: bool | None = None,
        max_body_bytes: int | _Unset | None = _UNSET,
        auth: AuthLike | _Unset | None = _UNSET,
        files: Files | None = None,
    ) -> OkStreamingResponse[Any] | ErrStreamingResponse:
        """Send a request and return as soon as the response head arrives.

        A 2xx gives an :class:`OkStreamingResponse` whose ``body`` yields, as data arrives:
        each event's data parsed as JSON for ``text/event-stream`` (non-JSON data as ``str``),
        ending at ``data: [DONE]``; each line parsed for JSON lines (``application/x-ndjson``,
        ``application/jsonl``); for ``application/json``, each line's value when every line is
        JSON, else the whole document as one value; else decompressed byte chunks. The choice
        depends on the ``Content-Type`` only, never on the framing (``Content-Length``, chunked,
        compressed): the same endpoint yields the same values behind any proxy.
        ``response.events()`` yields whole ``ServerSentEvent`` s instead. Any other status gives
        an :class:`ErrStreamingResponse` with the whole body as ``bytes``. Arguments are those
        of :meth:`request`.

        Example (``async with`` closes the connection if the body is not read to the end):

        .. code-block:: python

            response = await client.stream_post(url, json={"stream": True})
            async with response:
                if streaming_response_is_ok(response):
                    async for chunk in response.body:
                        print(chunk)
                else:
                    print(response.status, await response.decode_json())
        """
        reader, final_url, history = await self._send(
            method,
            url,
            data,
            json,
            params,
            _merge_headers(extra_headers, headers),
            timeout,
            follow_redirects,
            max_body_bytes,
            auth,
            files,
        )
        parser = reader.parser
        status = f"HTTP/{parser.http_version} {parser.status_code} {parser.reason}".rstrip()
        response: OkStreamingResponse[Any] | ErrStreamingResponse
        if 200 <= parser.status_code < 300:
            response = OkStreamingResponse(self, status, parser.headers, body_iterator(reader), reader)
        else:
            response = ErrStreamingResponse(self, status, parser.headers, await reader.read_all())
        response.url = final_url
        response.history = history
        return response

    # -- one request ----------------------------------------------------------------------------

    def _resolve(self, url: str) -> _ParsedURL:
        resolved = self._urls.get(url)
        if resolved is None:
            full = url
            if self.base_url is not None and "://" not in url:
                full = f"{self.base_url}/{url.lstrip('/')}"
            resolved = _parse_url(full)
            if self._proxies is not None:
                origin, target, host_header, authorization, _ = resolved
                proxy = self._proxies.for_origin(origin)
                if proxy is not None and origin[0] == "http":  # forwarded: the absolute URL as target
                    resolved = (
                        origin,
                        f"http://{host_header}{target}",
                        host_header,
                        authorization,
                        proxy.authorization,
                    )
            if len(self._urls) >= _URL_CACHE_SIZE:
                self._urls.clear()
            self._urls[url] = resolved
        return resolved

    def _full_url(self, url: str, query: str | None) -> str:
        """The absolute URL of a request (``base_url`` applied, ``params`` appended)."""
        if self.base_url is not None and "://" not in url:
            url = f"{self.base_url}/{url.lstrip('/')}"
        if query:
            url = f"{url}{'&' if '?' in url else '?'}{query}"
        return url

    def _plain_head(self, method: str, url: str) -> tuple[Origin, bytes]:
        """The head of a request without body or own headers, cached per (method, URL).

        A cached head is used only while the client's headers still equal those it was made with.
        """
        key = (method, url)
        client_fields = self.headers._fields
        cached = self._heads.get(key)
        if cached is not None and cached[0] == client_fields:
            return cached[1], cached[2]
        origin, target, host_header, authorization, proxy_authorization = self._resolve(url)
        head = self._encode_head(
            method, target, host_header, None, None, None, authorization, None, proxy_authorization
        )
        if len(self._heads) >= _URL_CACHE_SIZE:
            self._heads.clear()
        self._heads[key] = ({name: list(values) for name, values in client_fields.items()}, origin, head)
        return origin, head

    def _appendable(self, method: str, headers: Headers) -> bool:
        """True when ``headers`` only add fields to the plain head of ``method`` (replace none).

        The plain head then followed by their lines is what :meth:`_encode_head` would build:
        the request's own headers come after the client's, in their order.
        """
        if method in _BODY_EXPECTED:
            return False  # (its Content-Length: 0 comes after the request's headers)
        base, client = self._base_fields, self.headers._fields
        for name in headers._fields:
            if name in base or name in client or name in _NOT_APPENDABLE:
                return False
        return True

    def _encode_head(
        self,
        method: str,
        target: str,
        host_header: str,
        body: RequestBody,
        content_type: str | None,
        headers: Headers | None,
        authorization: str | None = None,
        cookie: str | None = None,
        proxy_authorization: str | None = None,
    ) -> bytes:
        fields = {"host": [host_header], **self._base_fields, **self.headers._fields}
        if content_type is not None:
            fields["content-type"] = [content_type]
        if authorization is not None:
            fields["authorization"] = [authorization]
        if cookie is not None:
            fields["cookie"] = [cookie]
        if proxy_authorization is not None:
            fields["proxy-authorization"] = [proxy_authorization]
        if headers is not None:
            fields.update(headers._fields)
        if body is None:
            fields.pop("transfer-encoding", None)
            if method in _BODY_EXPECTED:
                fields["content-length"] = ["0"]
        elif isinstance(body, bytes):
            fields.pop("transfer-encoding", None)
            fields["content-length"] = [str(len(body))]
        elif isinstance(body, SizedBody):
            fields.pop("transfer-encoding", None)
            fields["content-length"] = [str(body.length)]
        else:
            fields.pop("content-length", None)
            fields["transfer-encoding"] = ["chunked"]
        return encode_request_head(
            method, target, [(name, v) for name, values in fields.items() for v in values]
        )

    async def _send(
        self,
        method: str,
        url: str,
        data: RequestData,
        json: Any,
        params: Params | None,
        headers: Headers | None,
        timeout: Timeout | float | _Unset | None,
        follow_redirects: bool | None,
        max_body_bytes: int | _Unset | None,
        auth_option: AuthLike | _Unset | None,
        files: Files | None,
    ) -> tuple[BodyReader, str, list[ClientResponse]]:
        """Send the request (following redirects if asked) and read the final response's head.

        Returns:
            The final response's body reader, its URL, and the redirect responses before it.
        """
        running_loop("HttpClient")  # under asyncio: a RuntimeError naming flowno.EventLoop, not "bad yield"
        method = method.upper()
        limits = self.timeout if isinstance(timeout, _Unset) else Timeout.coerce(timeout)
        deadline = None if limits.total is None else monotonic() + limits.total
        follow = self.follow_redirects if follow_redirects is None else follow_redirects
        body_limit = self.max_body_bytes if isinstance(max_body_bytes, _Unset) else max_body_bytes
        auth = self.auth if isinstance(auth_option, _Unset) else coerce_auth(auth_option)
        body, content_type = _encode_body(data, json, files)
        trace = None if slot_or_none(None) is None else current_trace.get()  # (server/tracing.py)
        started: str | None = None  # a new trace's traceparent, while not in ``headers``
        if trace is not None and (headers is None or "traceparent" not in headers):
            headers = Headers() if headers is None else headers.copy()
            headers.set("traceparent", trace.child_traceparent())
            if trace.tracestate:
                headers.set("tracestate", trace.tracestate)
        elif self.start_traces and "traceparent" not in self.headers._fields:
            if headers is None:
                started = new_traceparent()
            elif "traceparent" not in headers:
                headers = headers.copy()
                headers.set("traceparent", new_traceparent())
        query = None
        if params is not None:
            query = _encode_params(params)
        history: list[ClientResponse] = []
        auth_origin: Origin | None = None  # credentials go to the origin the request started at
        challenged: str | None = None  # the Authorization answering a 401, for the retry
        cookies = self._cookies
        while True:
            target: str | None = None
            plain = (
                body is None and query is None and auth is None and (cookies is None or not cookies.stored)
            )
            if plain and headers is None:
                origin, head = self._plain_head(method, url)
                if started is not None:  # (its line after the client's: as _encode_head orders it)
                    head = head[:-2] + f"traceparent: {started}\r\n\r\n".encode()
            elif plain and headers is not None and self._appendable(method, headers):
                origin, head = self._plain_head(method, url)
                head = head[:-2] + _field_lines(headers)
            else:
                if started is not None:  # (a head built from headers: then always with it)
                    headers, started = Headers({"traceparent": started}), None
                origin, target, host_header, authorization, proxy_authorization = self._resolve(url)
                if query:
                    target = f"{target}{'&' if '?' in target else '?'}{query}"
                if auth is not None:
                    if auth_origin is None:
                        auth_origin = origin
                    if origin == auth_origin:
                        authorization = challenged or auth.authorize(method, self._full_url(url, query), None)
                cookie = None if cookies is None else cookies.header_for(self._full_url(url, query))
                head = self._encode_head(
                    method,
                    target,
                    host_header,
                    body,
                    content_type,
                    headers,
                    authorization,
                    cookie,
                    proxy_authorization,
                )
            connection, parser = await self._exchange(method, origin, head, body, limits, deadline)
            reader = BodyReader(connection, parser, limits.read, deadline, body_limit)
            status = parser.status_code
            if cookies is not None and "set-cookie" in parser.headers._fields:
                cookies.extract(self._full_url(url, query), parser.headers)
            if (
                status == 401
                and auth is not None
                and challenged is None
                and origin == auth_origin
                and (body is None or isinstance(body, bytes))  # (an async iterable cannot be resent)
            ):
                challenged = auth.authorize(method, self._full_url(url, query), parser.headers)
                if challenged is not None:
                    await reader.discard(_MAX_DRAIN_BYTES)
                    continue
            challenged = None
            location = parser.headers.get("location") if follow and status in _REDIRECT_STATUSES else None
            if not location:
                if query is None and (self.base_url is None or "://" in url):
                    return reader, url, history
                return reader, self._full_url(url, query), history
            if len(history) >= self.max_redirects:
                reader.close()
                raise TooManyRedirects(f"more than {self.max_redirects} redirects")
            keep_body = status in (307, 308)
            if keep_body and body is not None and not isinstance(body, bytes):
                # an async iterable cannot be sent again: hand back the redirect
                return reader, self._full_url(url, query), history
            await reader.discard(_MAX_DRAIN_BYTES)
            history.append(_history_entry(parser, self._full_url(url, query)))
            next_url = urljoin(self._full_url(url, query), location)
            next_origin = self._resolve(next_url)[0]
            if next_origin != origin and headers is not None and "authorization" in headers:
                headers = headers.copy()
                headers.delete("authorization")
            if not keep_body:
                if method != "HEAD":
                    method = "GET"
                body, content_type = None, None
                if headers is not None and "content-type" in headers:
                    headers = headers.copy()
                    headers.delete("content-type")
            url, query = next_url, None

    async def _exchange(
        self,
        method: str,
        origin: Origin,
        head: bytes,
        body: RequestBody,
        limits: Timeout,
        deadline: float | None,
    ) -> tuple[Connection, ResponseParser]:
        """Send on a pooled connection and read the response head; retry once if it was stale.

        Counted in ``requests_by_origin``, and in ``errors_by_origin`` if it fails before the head.
        """
        requests = self.requests_by_origin
        requests[origin] = requests.get(origin, 0) + 1
        retriable = method in _IDEMPOTENT and (body is None or isinstance(body, bytes))
        try:
            retried = False
            while True:
                proxy = None if self._proxies is None else self._proxies.for_origin(origin)
                connection = self._pool.acquire_idle(
                    origin, proxy
                ) or await self._pool.acquire(  # (no coroutine)
                    origin,
                    connect_timeout=limits.connect,
                    pool_timeout=limits.pool,
                    deadline=deadline,
                    proxy=proxy,
                )
                reused = connection.requests > 0
                parser: ResponseParser | None = None
                try:
                    sent = connection.send_nowait(head, deadline) if body is None else 0  # (no coroutine)
                    if body is not None or sent < len(head):
                        await connection.send_request(
                            head[sent:], body, write_timeout=limits.write, deadline=deadline
                        )
                    parser = connection.start_response(
                        head_request=method == "HEAD", max_header_bytes=self.max_header_bytes
                    )
                    await connection.receive_head(read_timeout=limits.read, deadline=deadline)
                except (WriteError, ReadError, RemoteProtocolError) as exc:
                    # A kept-alive connection the server closed meanwhile fails before any response
                    # byte: send an idempotent request once more, on a new connection.
                    stale = reused and (parser is None or parser.bytes_received == 0)
                    if stale and retriable and not retried and not isinstance(exc, TooLargeError):
                        retried = True
                        continue
                    raise
                return connection, parser
        except HttpError:
            errors = self.errors_by_origin
            errors[origin] = errors.get(origin, 0) + 1
            raise
