"""CORS (the Fetch standard's cross-origin protocol) as a middleware.

A page on ``https://app.example`` may read responses from this server only if they carry
``Access-Control-Allow-Origin`` for its origin; a request that is not "simple" (a JSON ``POST``,
custom headers) is first *preflighted* with an ``OPTIONS`` request the server must answer with the
methods and headers it allows. :class:`CORSMiddleware` does both:

* **Preflight** (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``): answered by
  the middleware itself, ``204`` with ``Access-Control-Allow-Origin``, ``-Allow-Methods``,
  ``-Allow-Headers``, ``-Max-Age`` (and ``-Allow-Credentials``), whether or not the route has an
  ``OPTIONS`` handler. A refused preflight (origin, method or a header not allowed) gets ``403``
  with no CORS headers, so the browser fails the request and logs why.
* **Actual requests** from an allowed origin get ``Access-Control-Allow-Origin`` (and
  ``-Allow-Credentials``, ``-Expose-Headers``); a refused origin's response is sent without any
  CORS header (the browser then hides it from the page). ``EventSource`` streams are ordinary
  ``GET`` requests and get the same headers.
* **Errors the server answers itself** (a 400 for a malformed body, the 500 of a crashing handler)
  get the same headers through the error hook, so the page can read them.
* ``Vary: Origin`` on every response whose CORS headers depend on the origin (all of them, unless
  the origins are ``*`` without credentials), so a shared cache never serves one origin's answer to
  another.

``*`` with credentials: the standard forbids ``Access-Control-Allow-Origin: *`` on credentialed
requests, so the request's own origin is sent back instead (as Starlette does).

Example:
    >>> import httpx
    >>> from flowno_io import HttpServer
    >>> from flowno_io.testing import ServerThread
    >>> cors = CORSMiddleware(["https://app.example"], allow_methods=["GET", "POST"])
    >>> server = HttpServer("127.0.0.1", 0, routes={"/": lambda r: "hi"}, middleware=[cors])
    >>> with ServerThread(server) as url:
    ...     r = httpx.options(url + "/", headers={"Origin": "https://app.example",
    ...                                           "Access-Control-Request-Method": "POST"})
    >>> r.status_code, r.headers["access-control-allow-origin"], r.headers["access-control-allow-methods"]
    (204, 'https://app.example', 'GET, HEAD, POST')
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..protocol.headers import Headers
from ..protocol.models import Response
from .middleware import CallNext, ErrorAnswer, add_vary, copy_response
from .request import Request

__all__ = ["DEFAULT_CORS_HEADERS", "DEFAULT_CORS_MAX_AGE", "DEFAULT_CORS_METHODS", "CORSMiddleware"]

#: Methods allowed cross-origin unless told otherwise (the safelisted ones, plus POST for JSON APIs).
DEFAULT_CORS_METHODS = ("GET", "HEAD", "POST")
#: Request headers allowed beyond the CORS-safelisted ones: ``Content-Type`` (a JSON body makes a
#: request non-simple) and ``Last-Event-ID`` (an ``EventSource`` resuming a stream).
DEFAULT_CORS_HEADERS = ("Content-Type", "Last-Event-ID")
#: Seconds a browser may cache a preflight answer (Chromium caps it at 7200, Firefox at 86400).
DEFAULT_CORS_MAX_AGE = 600


def _normalize_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


def _tokens(value: str) -> list[str]:
    return [token.strip() for token in value.split(",") if token.strip()]


class CORSMiddleware:
    """Answer preflights and add CORS headers for the allowed origins.

    Args:
        allow_origins: origins allowed to read responses (``"https://app.example:8443"``, scheme
            and host and port as the browser sends them), or ``"*"`` for every origin.
        allow_methods: methods allowed cross-origin, or ``["*"]`` for every method.
        allow_headers: request headers allowed beyond the safelisted ones (case-insensitive), or
            ``["*"]`` to allow whatever the preflight asks for.
        allow_credentials: let pages send cookies/HTTP auth (``Access-Control-Allow-Credentials``).
        expose_headers: response headers the page may read beyond the safelisted ones.
        max_age: seconds a browser may cache a preflight answer.

    Raises:
        ValueError: an origin is empty or is not ``scheme://host[:port]``.
    """

    def __init__(
        self,
        allow_origins: Iterable[str] = ("*",),
        *,
        allow_methods: Iterable[str] = DEFAULT_CORS_METHODS,
        allow_headers: Iterable[str] = DEFAULT_CORS_HEADERS,
        allow_credentials: bool = False,
        expose_headers: Iterable[str] = (),
        max_age: int = DEFAULT_CORS_MAX_AGE,
    ) -> None:
        origins = [_normalize_origin(origin) for origin in allow_origins]
        for origin in origins:
            if origin != "*" and ("://" not in origin or "/" in origin.split("://", 1)[1]):
                raise ValueError(f"a CORS origin is scheme://host[:port] or '*', not {origin!r}")
        self.allow_all_origins = "*" in origins
        self.allow_origins = frozenset(origins) - {"*"}
        methods = [method.upper() for method in allow_methods]
        self.allow_all_methods = "*" in methods
        if "GET" in methods and "HEAD" not in methods:
            methods.append("HEAD")  # the server answers HEAD from GET
        self.allow_methods = frozenset(methods) - {"*"}
        headers = [header.lower() for header in allow_headers]
        self.allow_all_headers = "*" in headers
        self.allow_headers = frozenset(headers) - {"*"}
        self.allow_credentials = allow_credentials
        self.expose_headers = ", ".join(expose_headers)
        if max_age < 0:
            raise ValueError(f"max_age must be >= 0, not {max_age}")
        self.max_age = max_age
        #: The answer depends on the request's Origin: caches must key on it.
        self.varies = not self.allow_all_origins or allow_credentials
        self._methods_value = ", ".join(sorted(self.allow_methods))
        self._headers_value = ", ".join(sorted(self.allow_headers))

    def __repr__(self) -> str:
        origins = "*" if self.allow_all_origins else sorted(self.allow_origins)
        return f"<CORSMiddleware origins={origins} credentials={self.allow_credentials}>"

    def origin_allowed(self, origin: str) -> bool:
        """True when ``origin`` (an ``Origin`` header value) may read responses."""
        return self.allow_all_origins or _normalize_origin(origin) in self.allow_origins

    # -- the middleware ------------------------------------------------------------------------

    async def __call__(self, request: Request, call_next: CallNext) -> Any:
        origin = request.headers.get("origin")
        if (
            origin is not None
            and request.method == "OPTIONS"
            and "access-control-request-method" in request.headers
        ):
            return self._preflight(request.headers, origin)
        response = await call_next(request)
        if origin is None or not self.origin_allowed(origin):
            if not self.varies:
                return response
            response = copy_response(response)
            add_vary(response.headers, "Origin")
            return response
        response = copy_response(response)
        self._allow(response.headers, origin)
        if self.expose_headers:
            response.headers.set("Access-Control-Expose-Headers", self.expose_headers)
        return response

    def on_error(self, answer: ErrorAnswer) -> None:
        """Let an allowed page read the errors the server answers itself."""
        if answer.request_headers is None:
            return  # the request was not parsed: no Origin to answer
        origin = answer.request_headers.get("origin")
        if origin is not None and self.origin_allowed(origin):
            self._allow(answer.headers, origin)
        elif self.varies:
            add_vary(answer.headers, "Origin")

    # -- helpers -------------------------------------------------------------------------------

    def _allow(self, headers: Headers, origin: str) -> None:
        if self.allow_all_origins and not self.allow_credentials:
            headers.set("Access-Control-Allow-Origin", "*")
        else:
            headers.set("Access-Control-Allow-Origin", origin)
            add_vary(headers, "Origin")
        if self.allow_credentials:
            headers.set("Access-Control-Allow-Credentials", "true")

    def _preflight(self, request_headers: Headers, origin: str) -> Response:
        method = request_headers.get("access-control-request-method", "").strip().upper()
        asked = [
            header.lower() for header in _tokens(request_headers.get("access-control-request-headers", ""))
        ]
        refusal = None
        if not self.origin_allowed(origin):
            refusal = f"origin {origin!r} is not allowed"
        elif not self.allow_all_methods and method not in self.allow_methods:
            refusal = f"method {method!r} is not allowed"
        elif not self.allow_all_headers:
            refused = [header for header in asked if header not in self.allow_headers]
            if refused:
                refusal = f"request headers not allowed: {', '.join(refused)}"
        if refusal is not None:
            response = Response.json({"error": f"CORS preflight refused: {refusal}", "status": 403}, 403)
            if self.varies:
                add_vary(response.headers, "Origin")
            return response
        response = Response(b"", 204)
        headers = response.headers
        self._allow(headers, origin)
        headers.set("Access-Control-Allow-Methods", method if self.allow_all_methods else self._methods_value)
        allowed_headers = ", ".join(asked) if self.allow_all_headers else self._headers_value
        if allowed_headers:
            headers.set("Access-Control-Allow-Headers", allowed_headers)
        headers.set("Access-Control-Max-Age", str(self.max_age))
        add_vary(headers, "Access-Control-Request-Method")
        add_vary(headers, "Access-Control-Request-Headers")
        return response
