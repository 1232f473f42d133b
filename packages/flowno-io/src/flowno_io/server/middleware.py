"""Middleware: code that wraps every exchange of an :class:`~flowno_io.HttpServer`.

A middleware is an async callable ``(request, call_next) -> response`` (Starlette's shape):

* **before the handler** it sees the :class:`~flowno_io.Request` (and may answer it itself, as
  CORS does for a preflight, without calling ``call_next``);
* ``await call_next(request)`` runs the rest of the chain, then routing and the handler, and returns
  the response the handler chose: a :class:`~flowno_io.Response` or a streaming response
  (``StreamingResponse``/``EventSourceResponse``), never a ``dict`` or ``str``;
* **after the response head is chosen** it may read or change the returned response's
  ``status_code`` and ``headers`` (and a plain response's ``body``) before the server frames it.
  The server frames whatever comes out (``protocol/framing.py``): a middleware never writes
  ``Content-Length``, ``Transfer-Encoding`` or ``Connection`` itself; those it sets are replaced.

A middleware that changes a response it did not create uses :func:`copy_response` first: a
handler may return the same ``Response`` object for every request (a constant), and changing it
in place would change every later answer. A middleware that wraps a streaming response in an
object of its own makes that object show the wrapped one's ``status_code``, ``headers`` and
``body`` (as the access log's wrapper does), so the middleware outside it still sees the head.

**Errors the server answers itself** — the parser's 400/413/431/505, and the 500 of a handler (or
middleware) that raised — never reach ``call_next``'s caller as a response. A middleware that
wants to see them also has an ``on_error(answer)`` method (or a plain function is given to
``server.add_error_hook``): a plain function called with an :class:`ErrorAnswer` just before the
error is framed; it may add headers to ``answer.headers`` (CORS does, so a browser can read the
error) and must not block.

Cost: the chain is built once, when a middleware is added. A server without middleware runs
exactly the code it ran before middleware existed (one attribute test per request).

Example:
    >>> import urllib.request
    >>> from flowno_io import HttpServer
    >>> from flowno_io.testing import ServerThread
    >>> async def server_timing(request, call_next):
    ...     response = copy_response(await call_next(request))
    ...     response.headers.set("X-Handled-By", "flowno-io")
    ...     return response
    >>> server = HttpServer("127.0.0.1", 0, routes={"/": lambda r: "hi"}, middleware=[server_timing])
    >>> with ServerThread(server) as url:
    ...     urllib.request.urlopen(url + "/").headers["X-Handled-By"]
    'flowno-io'
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeAlias

from ..protocol.headers import Headers
from ..protocol.http11_server import RequestParser
from ..protocol.models import Response
from .request import Request

__all__ = [
    "CallNext",
    "ErrorAnswer",
    "ErrorHook",
    "Middleware",
    "MiddlewareWithErrorHook",
    "add_vary",
    "build_chain",
    "copy_response",
    "error_hooks_of",
    "run_error_hooks",
]

logger = logging.getLogger("flowno_io.server")

#: The rest of the chain: routing, then the handler; returns a response object.
CallNext: TypeAlias = Callable[[Request], Awaitable[Any]]
#: ``async def middleware(request, call_next) -> response``.
Middleware: TypeAlias = Callable[[Request, CallNext], Awaitable[Any]]


class ErrorAnswer:
    """An error the server answers itself, as its error hooks see it.

    Attributes:
        client: the peer's ``(host, port)``.
        status: 400, 413, 431 or 505 (the request could not be parsed), 500 (a handler raised),
            or the status hint of a bad body read by a handler (400, 413).
        reason: the error message (also in the JSON body).
        method: the request's method, or ``None`` when the request line was not parsed.
        path: the request's path, or ``None`` when unknown.
        request_headers: the request's headers when they were parsed, else ``None``.
        headers: the answer's response headers; hooks may add fields (framing fields are the
            server's and are replaced).
        request: the :class:`~flowno_io.Request` when a handler was called (its ``state`` holds
            what middleware stored there), else ``None``.
        size: bytes of the answer's body (0 for HEAD).
    """

    __slots__ = (
        "client",
        "headers",
        "method",
        "path",
        "reason",
        "request",
        "request_headers",
        "size",
        "status",
    )

    def __init__(
        self,
        client: tuple[str, int],
        status: int,
        reason: str,
        method: str | None,
        path: str | None,
        request_headers: Headers | None,
        headers: Headers,
        request: Request | None = None,
        size: int = 0,
    ) -> None:
        self.client = client
        self.status = status
        self.reason = reason
        self.method = method
        self.path = path
        self.request_headers = request_headers
        self.headers = headers
        self.request = request
        self.size = size

    def __repr__(self) -> str:
        return f"<ErrorAnswer {self.status} {self.method} {self.path} from {self.client}: {self.reason}>"

    @classmethod
    def of(
        cls,
        client: tuple[str, int],
        parser: RequestParser,
        status: int,
        reason: str,
        request: Request | None,
        headers: Headers,
    ) -> ErrorAnswer:
        """The answer to ``request``, or (``None``) to what ``parser`` read of a request that failed."""
        if request is not None:
            return cls(
                client, status, reason, request.method, request.path, request.headers, headers, request
            )
        target = parser.message_target.split(b"?", 1)[0]
        path = target.decode("latin-1") if target else None
        return cls(client, status, reason, parser.message_method, path, None, headers)


#: ``def hook(answer: ErrorAnswer) -> None``; plain (it runs while the answer is being made).
ErrorHook: TypeAlias = Callable[[ErrorAnswer], None]


class MiddlewareWithErrorHook(Protocol):
    """A middleware that also sees the errors the server answers itself."""

    async def __call__(self, request: Request, call_next: CallNext) -> Any: ...

    def on_error(self, answer: ErrorAnswer) -> None: ...


def _link(middleware: Middleware, call_next: CallNext) -> CallNext:
    async def call(request: Request) -> Any:
        return await middleware(request, call_next)

    return call


def build_chain(
    middleware: Sequence[Middleware], endpoint: CallNext, to_response: Callable[[Any], Any]
) -> CallNext:
    """Compose ``middleware`` (the first one outermost) around ``endpoint``.

    Args:
        middleware: the middleware, outermost first.
        endpoint: routing and the handler; returns a response object.
        to_response: turns what the outermost middleware returned into a response object (a
            middleware may return what a handler may: ``dict``, ``str``, ``None``...).
    """
    call = endpoint
    for layer in reversed(middleware):
        call = _link(layer, call)
    inner = call

    async def chain(request: Request) -> Any:
        return to_response(await inner(request))

    return chain


def error_hooks_of(middleware: Sequence[Middleware]) -> list[ErrorHook]:
    """The ``on_error`` methods of the middleware that have one, outermost first."""
    hooks: list[ErrorHook] = []
    for layer in middleware:
        hook = getattr(layer, "on_error", None)
        if callable(hook):
            hooks.append(hook)
    return hooks


def run_error_hooks(hooks: Sequence[ErrorHook], answer: ErrorAnswer) -> None:
    """Call every hook; one that raises is logged and does not stop the answer."""
    for hook in hooks:
        try:
            hook(answer)
        except Exception:
            logger.exception("an error hook raised")


def copy_response(response: Any) -> Any:
    """A plain ``Response`` copied with its own ``headers``, safe for a middleware to change.

    The body is shared (not copied). A streaming response is returned as it is: it is made for one
    request (its producer can be consumed once), so it is changed in place, and a wrapper around
    one (an access log's) stays the object the server sends.

    Example:
        >>> from flowno_io import Response
        >>> shared = Response("hi")
        >>> mine = copy_response(shared)
        >>> mine.headers.set("X-A", "1")
        >>> "x-a" in shared.headers, mine.body is shared.body
        (False, True)
    """
    if not isinstance(response, Response):
        return response
    clone = copy.copy(response)
    clone.headers = response.headers.copy()
    return clone


def add_vary(headers: Headers, field: str) -> None:
    """Add ``field`` to the ``Vary`` header unless it (or ``*``) is already there.

    Example:
        >>> h = Headers({"Vary": "Accept-Encoding"})
        >>> add_vary(h, "Origin"); add_vary(h, "origin")
        >>> h.get("vary")
        'Accept-Encoding, Origin'
    """
    current = headers.get("vary")
    if current is None:
        headers.set("Vary", field)
        return
    tokens = {token.strip().lower() for token in current.split(",")}
    if field.lower() not in tokens and "*" not in tokens:
        headers.set("Vary", f"{current}, {field}")
