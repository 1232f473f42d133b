"""Case-insensitive HTTP header fields, with the API of ``flowno.io.Headers``.

Example:
    >>> headers = Headers()
    >>> headers.set("Content-Type", "application/json")
    >>> headers.set("Accept-Encoding", ["gzip", "deflate"])
    >>> headers.get("CONTENT-TYPE")
    'application/json'
    >>> print(headers.stringify())
    content-type: application/json
    accept-encoding: gzip, deflate
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from typing import overload

__all__ = ["Headers"]

# RFC 9110 §5.6.2: token = 1*tchar
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Field values may hold visible characters, SP, HTAB and obs-text; never CR, LF, NUL or other CTLs.
_BAD_VALUE_CHAR = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def _check_name(name: str) -> str:
    if not isinstance(name, str) or _TOKEN.fullmatch(name) is None:
        raise ValueError(f"invalid header name {name!r}: must be an RFC 9110 token")
    return name.lower()


def _check_value(name: str, value: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"header {name!r}: value must be str, not {type(value).__name__}")
    if _BAD_VALUE_CHAR.search(value) is not None:
        raise ValueError(
            f"invalid value for header {name!r}: CR, LF, NUL and control characters are not allowed"
        )
    return value


class Headers:
    """Case-insensitive, order-keeping collection of HTTP header fields.

    ``set`` replaces a field, ``add`` appends another line of it (``Set-Cookie``). A list value is
    joined with ``", "``. Names must be RFC 9110 tokens and values may not hold CR, LF or NUL, so a
    header can never inject another line (``ValueError``).

    Example:
        >>> from flowno_io import Headers
        >>> h = Headers({"X-Trace": "1"})
        >>> h.add("Set-Cookie", "a=1")
        >>> h.add("Set-Cookie", "b=2")
        >>> h.get_all("set-cookie")
        ['a=1', 'b=2']
        >>> "x-trace" in h, len(h)
        (True, 3)
        >>> list(h)
        [('x-trace', '1'), ('set-cookie', 'a=1'), ('set-cookie', 'b=2')]
        >>> h.set("X-Bad", "v\\r\\nInjected: 1")
        Traceback (most recent call last):
        ...
        ValueError: invalid value for header 'X-Bad': CR, LF, NUL and control characters are not allowed
    """

    __slots__ = ("_fields",)

    def __init__(
        self,
        fields: Headers | Mapping[str, str | list[str]] | Iterable[tuple[str, str]] | None = None,
    ) -> None:
        self._fields: dict[str, list[str]] = {}
        if fields is None:
            return
        if isinstance(fields, Headers):
            self._fields = {name: list(values) for name, values in fields._fields.items()}
        elif isinstance(fields, Mapping):
            for name, value in fields.items():
                self.set(name, value)
        else:
            for name, value in fields:
                self.add(name, value)

    @classmethod
    def _from_trusted(cls, fields: dict[str, list[str]]) -> Headers:
        """Wrap fields that a parser already validated and lower-cased (no copy, no checks)."""
        headers = cls.__new__(cls)
        headers._fields = fields
        return headers

    def set(self, name: str, value: str | list[str]) -> None:
        """Set a field, replacing every earlier value; a list is joined with ``", "``.

        Example:
            >>> h = Headers()
            >>> h.set("Accept", ["text/html", "application/json"])
            >>> h.get("accept")
            'text/html, application/json'
        """
        key = _check_name(name)
        if isinstance(value, list):
            value = ", ".join(value)
        self._fields[key] = [_check_value(name, value)]

    def add(self, name: str, value: str | list[str]) -> None:
        """Append one more line of a field, keeping the earlier ones (for ``Set-Cookie``)."""
        key = _check_name(name)
        if isinstance(value, list):
            value = ", ".join(value)
        value = _check_value(name, value)
        values = self._fields.get(key)
        if values is None:
            self._fields[key] = [value]
        else:
            values.append(value)

    @overload
    def get(self, name: str) -> str | None: ...
    @overload
    def get(self, name: str, default: str) -> str: ...
    @overload
    def get(self, name: str, default: str | list[str] | None) -> str | list[str] | None: ...

    def get(self, name: str, default: str | list[str] | None = None) -> str | list[str] | None:
        """The field's value (repeated lines joined with ``", "``), or ``default``.

        Example:
            >>> Headers().get("nonexistent-header", "default-value")
            'default-value'
        """
        values = self._fields.get(name.lower())
        if values is None:
            return default
        if len(values) == 1:
            return values[0]
        return ", ".join(values)

    def get_all(self, name: str) -> list[str]:
        """Every line of a field, in the order received (empty list when absent)."""
        return list(self._fields.get(name.lower(), ()))

    def delete(self, name: str) -> None:
        """Remove a field; removing an absent one does nothing.

        Example:
            >>> h = Headers({"X-Custom-Header": "value"})
            >>> h.delete("x-custom-header")
            >>> print(h.get("X-Custom-Header"))
            None
        """
        self._fields.pop(name.lower(), None)

    def merge(self, headers: Headers) -> None:
        """Copy every field of ``headers`` into this one, replacing fields of the same name.

        Example:
            >>> a = Headers({"Content-Type": "application/json"})
            >>> a.merge(Headers({"Content-Type": "text/plain", "Accept": "text/html"}))
            >>> a.get("Content-Type"), a.get("Accept")
            ('text/plain', 'text/html')
        """
        for name, values in headers._fields.items():
            self._fields[name] = list(values)

    def stringify(self) -> str:
        """The fields as HTTP lines: lower-case names, CRLF-joined, no trailing CRLF.

        Example:
            >>> print(Headers({"Content-Type": "application/json", "Accept": "text/html"}).stringify())
            content-type: application/json
            accept: text/html
        """
        return "\r\n".join(f"{name}: {value}" for name, value in self)

    def copy(self) -> Headers:
        """An independent copy."""
        return Headers(self)

    def items(self) -> list[tuple[str, str]]:
        """Every ``(name, value)`` line, as a list."""
        return list(self)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        for name, values in self._fields.items():
            for value in values:
                yield name, value

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._fields

    def __len__(self) -> int:
        return sum(len(values) for values in self._fields.values())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Headers):
            return NotImplemented
        return self._fields == other._fields

    def __repr__(self) -> str:
        return f"Headers({list(self)!r})"
