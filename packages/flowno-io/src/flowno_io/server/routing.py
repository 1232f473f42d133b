"""Path routing: ``/users/{id}`` patterns to handlers, with 404 and 405 decided here.

Patterns: ``{name}`` matches one path segment, ``{name:int}`` digits (converted to ``int``),
``{name:path}`` the rest of the path including slashes. Static paths are a dict look-up.

Example:
    >>> router = Router()
    >>> _ = router.add("/users/{id:int}", "get_user", methods=["GET"])
    >>> _ = router.add("/files/{rest:path}", "get_file")
    >>> router.match("GET", "/users/42")
    ('get_user', {'id': 42})
    >>> router.match("GET", "/files/a/b.txt")
    ('get_file', {'rest': 'a/b.txt'})
    >>> router.match("DELETE", "/users/42")
    Traceback (most recent call last):
    ...
    flowno_io.server.routing.MethodNotAllowed: DELETE not allowed; allowed: GET, HEAD

Mistakes in a route are caught when it is added, not when a request fails to match:

    >>> router.add("/users/{id:float}", "h")
    Traceback (most recent call last):
    ...
    ValueError: route '/users/{id:float}': unknown converter 'float' in '{id:float}' (use str, int, path)
    >>> router.add("/users", "h", methods="GET")
    Traceback (most recent call last):
    ...
    TypeError: route '/users': methods must be a list of method names such as ["GET"], not the string 'GET'
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

__all__ = ["MethodNotAllowed", "NotFound", "Route", "Router", "check_methods", "check_pattern"]

H = TypeVar("H")

_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::(str|int|path))?\}")
#: Anything in braces: checked against ``_PARAM`` so a mistake is named instead of matched literally.
_BRACED = re.compile(r"\{([^{}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
#: A method is an HTTP token (RFC 9110 section 5.6.2).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")
_CONVERTERS: dict[str, tuple[str, type]] = {
    "str": (r"[^/]+", str),
    "int": (r"[0-9]+", int),
    "path": (r".*", str),
}


class NotFound(LookupError):
    """No route matches the path (→ 404)."""


class MethodNotAllowed(LookupError):
    """A route matches the path but not the method (→ 405 with ``Allow``)."""

    def __init__(self, method: str, allowed: list[str]) -> None:
        super().__init__(f"{method} not allowed; allowed: {', '.join(allowed)}")
        self.allowed = allowed


class Route(Generic[H]):
    """One path pattern with its handler and methods (``None``: every method)."""

    __slots__ = ("converters", "handler", "methods", "pattern", "regex")

    def __init__(self, pattern: str, handler: H, methods: Iterable[str] | None = None) -> None:
        check_pattern(pattern)
        self.pattern = pattern
        self.handler = handler
        if methods is None:
            self.methods: frozenset[str] | None = None
        else:
            upper = set(check_methods(pattern, methods))
            if "GET" in upper:
                upper.add("HEAD")  # HEAD is answered from GET, without the body
            self.methods = frozenset(upper)
        self.converters: dict[str, type] = {}
        self.regex: re.Pattern[str] | None = None
        if _PARAM.search(pattern):
            parts: list[str] = []
            position = 0
            for match in _PARAM.finditer(pattern):
                parts.append(re.escape(pattern[position : match.start()]))
                name, kind = match.group(1), match.group(2) or "str"
                regex, converter = _CONVERTERS[kind]
                parts.append(f"(?P<{name}>{regex})")
                self.converters[name] = converter
                position = match.end()
            parts.append(re.escape(pattern[position:]))
            self.regex = re.compile("".join(parts) + r"\Z")

    def allows(self, method: str) -> bool:
        """True when this route answers ``method``."""
        return self.methods is None or method in self.methods

    def match_path(self, path: str) -> dict[str, Any] | None:
        """The path parameters when ``path`` matches, else ``None``."""
        if self.regex is None:
            return {} if path == self.pattern else None
        match = self.regex.match(path)
        if match is None:
            return None
        return {name: self.converters[name](value) for name, value in match.groupdict().items()}


def check_pattern(pattern: str) -> None:
    """Raise ``TypeError``/``ValueError`` naming the mistake when ``pattern`` is not a valid route.

    >>> check_pattern("/u/{id")
    Traceback (most recent call last):
    ...
    ValueError: route '/u/{id': unbalanced '{' (a parameter is written {name} or {name:int})
    >>> check_pattern("/u/{1bad}")
    Traceback (most recent call last):
    ...
    ValueError: route '/u/{1bad}': invalid parameter name '1bad' (a Python identifier is needed)
    """
    if not isinstance(pattern, str):
        raise TypeError(f"a route pattern must be a str such as '/users/{{id}}', not {pattern!r}")
    if not pattern.startswith("/"):
        raise ValueError(f"route pattern must start with '/': {pattern!r}")
    names: set[str] = set()
    for match in _BRACED.finditer(pattern):
        name, _, converter = match.group(1).partition(":")
        if not _NAME.match(name):
            raise ValueError(
                f"route {pattern!r}: invalid parameter name {name!r} (a Python identifier is needed)"
            )
        if converter and converter not in _CONVERTERS:
            raise ValueError(
                f"route {pattern!r}: unknown converter {converter!r} in {match.group(0)!r} "
                f"(use {', '.join(_CONVERTERS)})"
            )
        if name in names:
            raise ValueError(f"route {pattern!r}: parameter {name!r} appears twice")
        names.add(name)
    rest = _BRACED.sub("", pattern)
    for brace in "{}":
        if brace in rest:
            raise ValueError(
                f"route {pattern!r}: unbalanced {brace!r} (a parameter is written {{name}} or {{name:int}})"
            )


def check_methods(pattern: str, methods: Iterable[str]) -> list[str]:
    """``methods`` upper-cased; ``TypeError``/``ValueError`` naming the mistake when not a list of tokens.

    >>> check_methods("/x", ["get", "POST"])
    ['GET', 'POST']
    >>> check_methods("/x", ["GET POST"])
    Traceback (most recent call last):
    ...
    ValueError: route '/x': 'GET POST' is not an HTTP method name (a token: "GET")
    """
    if isinstance(methods, str | bytes):
        raise TypeError(
            f'route {pattern!r}: methods must be a list of method names such as ["{methods!s}"], '
            f"not the string {methods!r}"
            if isinstance(methods, str)
            else f"route {pattern!r}: methods must be a list of str, not bytes"
        )
    try:
        names = list(methods)
    except TypeError:
        raise TypeError(
            f'route {pattern!r}: methods must be a list of method names such as ["GET"], '
            f"not {type(methods).__name__}"
        ) from None
    checked = []
    for method in names:
        if not isinstance(method, str):
            raise TypeError(f"route {pattern!r}: a method name must be a str, not {method!r}")
        if not _TOKEN.match(method):
            raise ValueError(f'route {pattern!r}: {method!r} is not an HTTP method name (a token: "GET")')
        checked.append(method.upper())
    if not checked:
        raise ValueError(f"route {pattern!r}: methods is empty (None answers every method)")
    return checked


class Router(Generic[H]):
    """Routes, tried in the order added (static paths first, by dict look-up)."""

    def __init__(self) -> None:
        self._static: dict[str, list[Route[H]]] = {}
        self._dynamic: list[Route[H]] = []

    def __len__(self) -> int:
        return sum(len(routes) for routes in self._static.values()) + len(self._dynamic)

    def add(self, pattern: str, handler: H, methods: Iterable[str] | None = None) -> Route[H]:
        """Add a route and return it."""
        route = Route(pattern, handler, methods)
        if route.regex is None:
            self._static.setdefault(pattern, []).append(route)
        else:
            self._dynamic.append(route)
        return route

    def match(self, method: str, path: str) -> tuple[H, dict[str, Any]]:
        """The handler and path parameters for a request.

        Raises:
            NotFound: no route matches the path.
            MethodNotAllowed: routes match the path, none of them the method.
        """
        route, params = self.match_route(method, path)
        return route.handler, params

    def match_route(self, method: str, path: str) -> tuple[Route[H], dict[str, Any]]:
        """The :class:`Route` (its ``pattern``, its ``handler``) and path parameters; as :meth:`match`."""
        static = self._static.get(path)
        if static is not None:
            for route in static:
                methods = route.methods
                if methods is None or method in methods:
                    return route, {}
        allowed: set[str] = set()
        if static is not None:
            for route in static:
                allowed |= route.methods or set()
        for route in self._dynamic:
            params = route.match_path(path)
            if params is None:
                continue
            if route.allows(method):
                return route, params
            allowed |= route.methods or set()
        if allowed:
            raise MethodNotAllowed(method, sorted(allowed))
        raise NotFound(path)

    def allowed_methods(self, path: str) -> list[str]:
        """Every method some route answers for ``path`` (``[]`` when none matches)."""
        allowed: set[str] = set()
        for route in [*self._static.get(path, []), *self._dynamic]:
            if route.match_path(path) is not None:
                if route.methods is None:
                    return ["*"]
                allowed |= route.methods
        return sorted(allowed)
