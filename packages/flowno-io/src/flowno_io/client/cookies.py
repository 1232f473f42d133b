"""The client's cookie jar: the stdlib ``http.cookiejar`` policy (RFC 6265 domains, paths, expiry,
``Secure``), fed from every response's ``Set-Cookie`` (redirects included) and asked for the
``Cookie`` header of every request.

The stdlib jar speaks ``urllib.request`` objects; this module adapts ours to it and does nothing
at all while the jar is empty and responses set no cookie (the request hot path).

Example:
    >>> from flowno_io import Headers
    >>> cookies = ClientCookies(CookieJar())
    >>> cookies.header_for("http://example.com/") is None
    True
    >>> set_cookies = Headers([("Set-Cookie", "sid=42; Path=/"), ("Set-Cookie", "theme=dark")])
    >>> cookies.extract("http://example.com/login", set_cookies)
    >>> cookies.header_for("http://example.com/account")
    'sid=42; theme=dark'
    >>> cookies.header_for("http://other.example/") is None
    True
"""

from __future__ import annotations

import urllib.request
from http.cookiejar import CookieJar

from ..protocol.headers import Headers

__all__ = ["ClientCookies", "CookieJar"]


class _ResponseInfo:
    """What ``CookieJar.extract_cookies`` reads from a response: ``info().get_all(name, default)``."""

    __slots__ = ("_headers",)

    def __init__(self, headers: Headers) -> None:
        self._headers = headers

    def info(self) -> _ResponseInfo:
        return self

    def get_all(self, name: str, default: list[str] | None = None) -> list[str] | None:
        return self._headers.get_all(name) or default


def _without_userinfo(url: str) -> str:
    """``url`` without ``user:password@`` (the stdlib would take it for part of the host)."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if "@" not in authority:
        return url
    return f"{scheme}{sep}{authority.rpartition('@')[2]}{slash}{path}"


class ClientCookies:
    """A ``CookieJar`` as the client uses it: a ``Cookie`` value per URL, ``Set-Cookie`` in."""

    __slots__ = ("jar", "stored")

    def __init__(self, jar: CookieJar) -> None:
        self.jar = jar
        #: Empty when the jar holds no cookie: the stdlib jar's own dict, read without a call on
        #: the hot path (a jar without one is always asked).
        self.stored: dict[object, object] = getattr(jar, "_cookies", {"?": "?"})

    def header_for(self, url: str) -> str | None:
        """The ``Cookie`` header value for a request to ``url``, or ``None``."""
        if not self.stored:
            return None
        request = urllib.request.Request(_without_userinfo(url))
        self.jar.add_cookie_header(request)
        return request.get_header("Cookie")

    def extract(self, url: str, headers: Headers) -> None:
        """Store the cookies a response to ``url`` sets (the jar's policy decides which)."""
        request = urllib.request.Request(_without_userinfo(url))
        self.jar.extract_cookies(_ResponseInfo(headers), request)  # type: ignore[arg-type]
