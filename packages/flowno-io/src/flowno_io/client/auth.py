"""Request authentication for ``HttpClient``: HTTP Basic (RFC 7617), Digest (RFC 7616), and the
small protocol any other scheme implements.

An :class:`Auth` is asked for an ``Authorization`` value before a request is sent, and once more
when the server answers ``401`` (with the challenge's headers); returning ``None`` sends no header
(first time) or gives up (after a ``401``, which is then returned). ``HttpClient`` asks it only for
requests to the origin the request started at: credentials never follow a redirect to another host.

Example (a bearer token from a refreshable source):
    >>> class TokenAuth:
    ...     def __init__(self, token: str) -> None:
    ...         self.token = token
    ...     def authorize(self, method, url, challenge):
    ...         return None if challenge is not None else f"Bearer {self.token}"
    >>> TokenAuth("t0k").authorize("GET", "http://h/", None)
    'Bearer t0k'
"""

from __future__ import annotations

import hashlib
import os
import re
from base64 import b64encode
from collections.abc import Callable
from typing import Final, Protocol, runtime_checkable
from urllib.parse import urlsplit

from ..protocol.headers import Headers

__all__ = ["Auth", "BasicAuth", "DigestAuth", "coerce_auth"]


@runtime_checkable
class Auth(Protocol):
    """What ``auth=`` takes: anything with this one method."""

    def authorize(self, method: str, url: str, challenge: Headers | None) -> str | None:
        """The ``Authorization`` header value for ``method url``, or ``None`` for none.

        Args:
            method: the request method (``"GET"``).
            url: the absolute request URL.
            challenge: ``None`` before the first attempt; the headers of the ``401`` response
                (``WWW-Authenticate``) when the server rejected it. Called at most once with a
                challenge per request.
        """
        ...


class BasicAuth:
    """HTTP Basic authentication (RFC 7617): ``user:password`` in base64, UTF-8 encoded.

    >>> from flowno_io import BasicAuth
    >>> BasicAuth("user", "pass").authorize("GET", "http://h/", None)
    'Basic dXNlcjpwYXNz'
    """

    __slots__ = ("_value",)

    def __init__(self, username: str, password: str) -> None:
        self._value = "Basic " + b64encode(f"{username}:{password}".encode()).decode("ascii")

    def authorize(self, method: str, url: str, challenge: Headers | None) -> str | None:
        return None if challenge is not None else self._value

    def __repr__(self) -> str:
        return "BasicAuth(...)"


_HASHES: Final[dict[str, Callable[[bytes], str]]] = {
    "MD5": lambda data: hashlib.md5(data).hexdigest(),
    "SHA-256": lambda data: hashlib.sha256(data).hexdigest(),
    "SHA-512-256": lambda data: hashlib.new("sha512_256", data).hexdigest(),
}
# auth-param = token BWS "=" BWS ( token / quoted-string )  (RFC 9110 §11.2)
_PARAM: Final = re.compile(r'([!#$%&\'*+\-.^_`|~0-9A-Za-z]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^,\s]*)')


def parse_digest_challenge(value: str) -> dict[str, str] | None:
    """The parameters of the ``Digest`` challenge in a ``WWW-Authenticate`` value (names lower-case).

    >>> parse_digest_challenge('Digest realm="me@h", nonce="n1", qop="auth,auth-int", algorithm=SHA-256')
    {'realm': 'me@h', 'nonce': 'n1', 'qop': 'auth,auth-int', 'algorithm': 'SHA-256'}
    >>> parse_digest_challenge('Basic realm="x"') is None
    True
    """
    start = value.lower().find("digest ")
    if start < 0:
        return None
    params: dict[str, str] = {}
    for match in _PARAM.finditer(value, start + 7):
        name, raw = match.group(1).lower(), match.group(2)
        if name in params:  # the next challenge (another scheme) started
            break
        if raw.startswith('"'):
            raw = re.sub(r"\\(.)", r"\1", raw[1:-1])
        params[name] = raw
    return params if "nonce" in params else None


class DigestAuth:
    """HTTP Digest authentication (RFC 7616): MD5, SHA-256, SHA-512-256 and their ``-sess``
    variants, ``qop=auth`` (or none, RFC 2069). The nonce of the last challenge is reused with an
    increasing nonce count, so later requests to the same server need no extra round trip.

    >>> from flowno_io import DigestAuth
    >>> auth = DigestAuth("Mufasa", "Circle of Life")
    >>> auth.authorize("GET", "http://h/dir/index.html", None) is None  # no challenge yet
    True
    """

    __slots__ = ("_challenge", "_nonce_count", "_password", "_username")

    def __init__(self, username: str, password: str) -> None:
        self._username = username
        self._password = password
        self._challenge: dict[str, str] | None = None
        self._nonce_count = 0

    def authorize(self, method: str, url: str, challenge: Headers | None) -> str | None:
        if challenge is not None:
            params = None
            for value in challenge.get_all("www-authenticate"):
                params = parse_digest_challenge(value)
                if params is not None:
                    break
            if params is None:
                return None
            self._challenge, self._nonce_count = params, 0
        if self._challenge is None:
            return None
        return self._header(method, url, self._challenge)

    def _header(self, method: str, url: str, params: dict[str, str]) -> str | None:
        algorithm = params.get("algorithm", "MD5")
        session = algorithm.upper().endswith("-SESS")
        digest = _HASHES.get(algorithm.upper().removesuffix("-SESS"))
        if digest is None:
            return None
        parts = urlsplit(url)
        uri = f"{parts.path or '/'}?{parts.query}" if parts.query else parts.path or "/"
        realm, nonce = params.get("realm", ""), params["nonce"]
        qops = [q.strip().lower() for q in params.get("qop", "").split(",") if q.strip()]
        if qops and "auth" not in qops:
            return None  # auth-int only: would need the body's hash
        self._nonce_count += 1
        nc = f"{self._nonce_count:08x}"
        cnonce = os.urandom(8).hex()
        ha1 = digest(f"{self._username}:{realm}:{self._password}".encode())
        if session:
            ha1 = digest(f"{ha1}:{nonce}:{cnonce}".encode())
        ha2 = digest(f"{method}:{uri}".encode())
        if qops:
            response = digest(f"{ha1}:{nonce}:{nc}:{cnonce}:auth:{ha2}".encode())
        else:
            response = digest(f"{ha1}:{nonce}:{ha2}".encode())
        fields = [
            f'username="{_quote(self._username)}"',
            f'realm="{_quote(realm)}"',
            f'nonce="{_quote(nonce)}"',
            f'uri="{_quote(uri)}"',
            f'response="{response}"',
            f"algorithm={algorithm}",
        ]
        if "opaque" in params:
            fields.append(f'opaque="{_quote(params["opaque"])}"')
        if qops:
            fields += ["qop=auth", f"nc={nc}", f'cnonce="{cnonce}"']
        return "Digest " + ", ".join(fields)

    def __repr__(self) -> str:
        return "DigestAuth(...)"


def _quote(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')


def coerce_auth(auth: Auth | tuple[str, str] | None) -> Auth | None:
    """``auth=`` as an :class:`Auth`: a ``(user, password)`` tuple means Basic (as in httpx).

    Raises:
        TypeError: neither a tuple nor an object with ``authorize``.
    """
    if auth is None or isinstance(auth, Auth):
        return auth
    if isinstance(auth, tuple) and len(auth) == 2:
        return BasicAuth(*auth)
    raise TypeError(f"auth must be (user, password), BasicAuth, DigestAuth or an Auth, not {auth!r}")
