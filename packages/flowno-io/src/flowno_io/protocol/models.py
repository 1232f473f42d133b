"""``Response``: one type for what a handler returns and what the client receives.

Example (server side):
    >>> r = Response.json({"ok": True}, status=201)
    >>> r.status_code, r.status, r.headers.get("content-type"), r.body
    (201, 'HTTP/1.1 201 Created', 'application/json', b'{"ok":true}')

Example (client side, as ``flowno.io``'s ``Response``):
    >>> r = Response(b'{"a": 1}', status="HTTP/1.1 200 OK", headers={"Content-Type": "application/json"})
    >>> r.is_ok, r.is_json(), r.decode_json()
    (True, True, {'a': 1})
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import orjson

from .._errors import HTTPStatusError
from .headers import Headers

__all__ = ["Response", "reason_phrase"]

_TEXT_PLAIN = "text/plain; charset=utf-8"
# Content types known to be valid header values (set without re-validating them).
_KNOWN_TYPES = frozenset(
    {_TEXT_PLAIN, "text/plain", "application/json", "application/octet-stream", "text/event-stream"}
)
_REASONS: dict[int, str] = {status.value: status.phrase for status in HTTPStatus}
_new_headers = Headers.__new__


def reason_phrase(status_code: int) -> str:
    """The standard reason phrase of a status code (``""`` for unknown codes).

    >>> reason_phrase(404)
    'Not Found'
    """
    return _REASONS.get(status_code, "")


class Response:
    """An HTTP response with its whole body in memory.

    Args:
        body: ``bytes`` or ``str`` (encoded as UTF-8).
        status: a status code (``404``) or a full status line (``"HTTP/1.1 404 Not Found"``).
        headers: a :class:`Headers` or a mapping of names to values.
        content_type: shorthand for the ``Content-Type`` header; ``str`` bodies default to
            ``text/plain; charset=utf-8``.

    Raises:
        ValueError: a status code outside 100-999 or a malformed status line.
    """

    __slots__ = ("body", "headers", "http_version", "reason", "status_code")

    def __init__(
        self,
        body: bytes | str = b"",
        status: int | str = 200,
        headers: Headers | Mapping[str, str | list[str]] | None = None,
        *,
        content_type: str | None = None,
    ) -> None:
        self.http_version = "1.1"
        if isinstance(status, str):
            self.http_version, self.status_code, self.reason = _parse_status_line(status)
        else:
            if not 100 <= status <= 999:
                raise ValueError(f"invalid status code {status}")
            self.status_code = status
            self.reason = _REASONS.get(status, "")
        if headers is None:  # Headers(), without the call
            headers = _new_headers(Headers)
            headers._fields = {}
        elif not isinstance(headers, Headers):
            headers = Headers(headers)
        self.headers = headers
        fields = headers._fields
        if isinstance(body, str):
            body = body.encode()
            if content_type is None and "content-type" not in fields:
                fields["content-type"] = [_TEXT_PLAIN]
        if content_type is not None:
            if content_type in _KNOWN_TYPES:
                fields["content-type"] = [content_type]
            else:
                headers.set("Content-Type", content_type)
        self.body: bytes = body

    @classmethod
    def json(
        cls,
        data: Any,
        status: int = 200,
        headers: Headers | Mapping[str, str | list[str]] | None = None,
    ) -> Response:
        """A response whose body is ``data`` encoded with orjson (``application/json``).

        Raises:
            TypeError: ``data`` holds a value orjson cannot encode (an integer beyond 64 bits, a
                non-``str`` dict key, an unsupported type); the message names it and where it is.

        Example:
            >>> Response.json({"n": 2**70})
            Traceback (most recent call last):
            ...
            TypeError: Response.json cannot encode data['n'] = 1180591620717411303424: integers must fit ...
        """
        try:
            body = orjson.dumps(data)
        except orjson.JSONEncodeError as exc:
            raise TypeError(f"Response.json cannot encode {_unencodable(data, 'data', str(exc))}") from None
        return cls(body, status, headers, content_type="application/json")

    @property
    def status(self) -> str:
        """The status line without CRLF, e.g. ``"HTTP/1.1 200 OK"`` (as in ``flowno.io``)."""
        line = f"HTTP/{self.http_version} {self.status_code}"
        return f"{line} {self.reason}" if self.reason else line

    @property
    def is_ok(self) -> bool:
        """True for a 2xx status."""
        return 200 <= self.status_code < 300

    def is_json(self) -> bool:
        """True when ``Content-Type`` is JSON (``application/json`` or ``*+json``, any parameters)."""
        return _is_json_type(self.headers.get("content-type"))

    def decode_json(self) -> Any:
        """The body parsed as JSON (orjson).

        Raises:
            orjson.JSONDecodeError: (a ``ValueError``) when the body is not JSON.
        """
        return orjson.loads(self.body)

    @property
    def text(self) -> str:
        """The body decoded as UTF-8 (invalid bytes replaced)."""
        return self.body.decode("utf-8", errors="replace")

    def raise_for_status(self) -> Response:
        """Raise :class:`HTTPStatusError` for a 4xx or 5xx status; return self otherwise."""
        if self.status_code >= 400:
            kind = "client error" if self.status_code < 500 else "server error"
            raise HTTPStatusError(f"{kind} '{self.status}'", response=self)
        return self

    def __repr__(self) -> str:
        return f"<Response [{self.status_code} {self.reason}] {len(self.body)} bytes>"


_INT_RANGE = range(-(2**63), 2**64)


def _unencodable(value: Any, where: str, reason: str) -> str:
    """Where in ``value`` orjson fails, and why (``reason``: orjson's message, when none is found)."""
    # orjson names an unsupported type as "Type is not JSON serializable: <name>".
    unsupported = reason.rpartition(": ")[2] if "not JSON serializable" in reason else None
    stack = [(value, where)]
    while stack:
        item, path = stack.pop()
        if isinstance(item, bool) or item is None or isinstance(item, str | float):
            continue
        if isinstance(item, int):
            if item not in _INT_RANGE:
                return f"{path} = {item}: integers must fit in 64 bits (send a larger one as str(value))"
        elif isinstance(item, dict):
            for key, child in reversed(item.items()):
                if not isinstance(key, str):
                    return f"the key {key!r} of {path}: JSON object keys must be str"
                stack.append((child, f"{path}[{key!r}]"))
        elif isinstance(item, list | tuple):
            stack.extend((child, f"{path}[{index}]") for index, child in reversed(list(enumerate(item))))
        elif type(item).__name__ == unsupported:
            hint = " (a missing 'await'?)" if inspect.iscoroutine(item) else ""
            return f"{path} = {item!r}: {type(item).__name__} is not JSON serializable{hint}"
    return f"{where}: {reason}"


def _is_json_type(content_type: str | list[str] | None) -> bool:
    if not isinstance(content_type, str):
        return False
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or mime.endswith("+json")


def _parse_status_line(line: str) -> tuple[str, int, str]:
    parts = line.split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit() or len(parts[1]) != 3:
        raise ValueError(f"malformed status line {line!r}")
    return parts[0][5:], int(parts[1]), parts[2] if len(parts) == 3 else ""
