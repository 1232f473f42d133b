"""URLs for ``HttpClient``: an absolute http(s) URL taken apart into what a request needs (origin,
request target, ``Host``, credentials), internationalised host names as IDNA, and ``params`` as a
query string (httpx's rules).

Example:
    >>> origin, target, host_header, authorization, _ = _parse_url("http://u:pw@Bücher.example:8080/a b?q=1")
    >>> origin, target, host_header, authorization
    (('http', 'xn--bcher-kva.example', 8080), '/a%20b?q=1', 'xn--bcher-kva.example:8080', 'Basic dTpwdw==')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, TypeAlias
from urllib.parse import quote, unquote, urlencode, urlsplit

from .._errors import LocalProtocolError
from .auth import BasicAuth

__all__ = ["Params"]

Origin = tuple[str, str, int]
Params: TypeAlias = Mapping[str, Any] | Sequence[tuple[str, Any]] | str
# (origin, request target, Host header, Authorization from the URL's user:password or None,
# Proxy-Authorization when forwarded through a proxy or None)
_ParsedURL: TypeAlias = tuple[Origin, str, str, str | None, str | None]

_DEFAULT_PORTS: Final = {"http": 80, "https": 443}
# Characters left as they are when percent-encoding a path and a query (RFC 3986 pchar + "/?").
_PATH_SAFE: Final = "/:@!$&'()*+,;=-._~%"
_QUERY_SAFE: Final = "/?:@!$&'()*+,;=-._~%"


def _parse_url(url: str) -> _ParsedURL:
    """``(origin, request target, Host header, Basic Authorization or None)`` of an absolute
    http(s) URL; the last from its ``user:password@``."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise LocalProtocolError(f"invalid URL {url!r}: {exc}") from None
    scheme = parts.scheme.lower()
    default_port = _DEFAULT_PORTS.get(scheme)
    if default_port is None:
        raise LocalProtocolError(f"unsupported URL {url!r}: only http:// and https:// are supported")
    host = parts.hostname
    if not host:
        raise LocalProtocolError(f"invalid URL {url!r}: no host")
    if not host.isascii():
        host = _idna(host, url)
    port = port or default_port
    host_header = f"[{host}]" if ":" in host else host
    if port != default_port:
        host_header = f"{host_header}:{port}"
    target = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        target = f"{target}?{quote(parts.query, safe=_QUERY_SAFE)}"
    authorization = None
    if parts.username is not None:
        credentials = BasicAuth(unquote(parts.username), unquote(parts.password or ""))
        authorization = credentials.authorize("GET", url, None)
    return (scheme, host, port), target, host_header, authorization, None


def _idna(host: str, url: str) -> str:
    """An internationalised host name as ASCII (IDNA, ``bücher.example`` → ``xn--bcher-kva.example``).

    >>> _idna("bücher.example", "")
    'xn--bcher-kva.example'
    """
    try:
        return host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise LocalProtocolError(f"invalid host name in URL {url!r}: {exc}") from None


def _query_value(value: Any) -> str:
    if value is True:
        return "true"
    if value is False:
        return "false"
    return value if isinstance(value, str) else str(value)


def _encode_params(params: Params) -> str:
    """A query string from ``params``, as httpx: ``None`` values are left out, booleans are
    ``true``/``false``, a list or tuple value repeats its name.

    >>> _encode_params({"q": "a b", "n": None, "t": True, "f": False, "ids": [1, 2]})
    'q=a+b&t=true&f=false&ids=1&ids=2'
    """
    if isinstance(params, str):
        return params
    pairs: list[tuple[str, str]] = []
    items = params.items() if isinstance(params, Mapping) else params
    for name, value in items:
        if isinstance(value, list | tuple):
            pairs.extend((name, _query_value(item)) for item in value if item is not None)
        elif value is not None:
            pairs.append((name, _query_value(value)))
    return urlencode(pairs)
