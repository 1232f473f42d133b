"""HTTP proxies for ``HttpClient``: which proxy a request goes through (``proxy=``, or
``HTTP_PROXY``/``HTTPS_PROXY``/``ALL_PROXY`` with ``NO_PROXY``), and the ``CONNECT`` tunnel
(RFC 9110 §9.3.6) that carries an https request through one.

Plain http requests are forwarded: sent to the proxy with the absolute URL as the request target
and ``Proxy-Authorization``. https requests go through a tunnel: ``CONNECT host:port`` to the
proxy, then TLS with the origin, end to end (the proxy never sees the request).

Example:
    >>> routes = ProxyRoutes("http://user:pw@127.0.0.1:3128", trust_env=False)
    >>> proxy = routes.for_origin(("https", "example.com", 443))
    >>> proxy.host, proxy.port, proxy.authorization
    ('127.0.0.1', 3128, 'Basic dXNlcjpwdw==')
    >>> print(encode_connect("example.com", 443, proxy.authorization).decode().replace("\\r", ""))
    CONNECT example.com:443 HTTP/1.1
    Host: example.com:443
    Proxy-Authorization: Basic dXNlcjpwdw==
    <BLANKLINE>
    <BLANKLINE>
"""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass
from time import monotonic
from typing import Final
from urllib.parse import unquote, urlsplit

from .._errors import ConnectError, LocalProtocolError
from ..io.socket_stream import SocketStream
from .auth import BasicAuth

__all__ = ["Proxy", "ProxyRoutes", "encode_connect", "open_tunnel"]

#: The head of a proxy's answer to CONNECT (curl allows 100 KiB for any head; 16 KiB is plenty).
MAX_CONNECT_RESPONSE_BYTES: Final = 16 * 1024

Origin = tuple[str, str, int]


@dataclass(frozen=True, slots=True)
class Proxy:
    """An http proxy: where it listens and the ``Proxy-Authorization`` its URL's credentials give."""

    host: str
    port: int
    authorization: str | None = None

    @classmethod
    def from_url(cls, url: str) -> Proxy:
        """Parse ``http://[user:password@]host[:port]`` (port 80 by default).

        Raises:
            LocalProtocolError: not an ``http://`` URL with a host.
        """
        try:
            parts = urlsplit(url if "://" in url else f"http://{url}")
            port = parts.port
        except ValueError as exc:
            raise LocalProtocolError(f"invalid proxy URL {url!r}: {exc}") from None
        if parts.scheme.lower() != "http" or not parts.hostname:
            raise LocalProtocolError(f"unsupported proxy URL {url!r}: only http:// proxies are supported")
        authorization = None
        if parts.username is not None:
            basic = BasicAuth(unquote(parts.username), unquote(parts.password or ""))
            authorization = basic.authorize("CONNECT", url, None)
        return cls(parts.hostname, port or 80, authorization)


class ProxyRoutes:
    """Which :class:`Proxy` (or none) each origin goes through; decided once per origin.

    Args:
        proxy: a proxy URL for every request, or ``None``.
        trust_env: with no ``proxy``, read ``HTTP_PROXY``, ``HTTPS_PROXY``, ``ALL_PROXY`` and
            ``NO_PROXY`` (either case) as curl and httpx do.
    """

    __slots__ = ("_by_scheme", "_bypass", "_decided")

    def __init__(self, proxy: str | None, *, trust_env: bool) -> None:
        self._decided: dict[Origin, Proxy | None] = {}
        self._bypass: dict[str, str] = {}
        self._by_scheme: dict[str, Proxy] = {}
        if proxy is not None:
            single = Proxy.from_url(proxy)
            self._by_scheme = {"http": single, "https": single}
        elif trust_env:
            found = urllib.request.getproxies_environment()
            for scheme in ("http", "https"):
                url = found.get(scheme) or found.get("all")
                if url:
                    self._by_scheme[scheme] = Proxy.from_url(url)
            if "no" in found:
                self._bypass = {"no": found["no"]}

    def __bool__(self) -> bool:
        return bool(self._by_scheme)

    def for_origin(self, origin: Origin) -> Proxy | None:
        """The proxy for requests to ``origin``, ``None`` to connect directly."""
        try:
            return self._decided[origin]
        except KeyError:
            pass
        scheme, host, port = origin
        proxy = self._by_scheme.get(scheme)
        bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
        if proxy is not None and self._bypass and bypass(f"{host}:{port}", self._bypass):
            proxy = None
        self._decided[origin] = proxy
        return proxy


def encode_connect(host: str, port: int, authorization: str | None) -> bytes:
    """The CONNECT request that opens a tunnel to ``host:port``."""
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
    if authorization is not None:
        lines.append(f"Proxy-Authorization: {authorization}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


async def open_tunnel(
    stream: SocketStream, proxy: Proxy, host: str, port: int, *, deadline: float | None
) -> None:
    """Ask the proxy on ``stream`` for a tunnel to ``host:port``; return once it is open.

    Raises:
        ConnectError: the proxy refused (its status line in the message: 407 when proxy
            authentication failed), closed, or answered with something other than HTTP.
        ConnectTimeout: (as ``ReadTimeout``/``WriteTimeout`` from the stream) past ``deadline``.
    """
    timeout = None if deadline is None else max(0.0, deadline - monotonic())
    await stream.send_all(encode_connect(host, port, proxy.authorization), timeout=timeout)
    received = b""
    while b"\r\n\r\n" not in received:
        data = await stream.receive_some(4096, deadline=deadline)
        if not data:
            raise ConnectError(f"proxy {proxy.host}:{proxy.port} closed the connection during CONNECT")
        received += data
        if len(received) > MAX_CONNECT_RESPONSE_BYTES:
            raise ConnectError(f"proxy {proxy.host}:{proxy.port} sent an oversized CONNECT response")
    head, _, rest = received.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = status_line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
        raise ConnectError(f"proxy {proxy.host}:{proxy.port} answered CONNECT with {status_line!r}")
    if not 200 <= int(parts[1]) < 300:
        raise ConnectError(f"proxy {proxy.host}:{proxy.port} refused CONNECT to {host}:{port}: {status_line}")
    if rest:
        raise ConnectError(f"proxy {proxy.host}:{proxy.port} sent data before the TLS handshake")
