"""A service's route table: JSON errors, a structured access log, 404/405 answers, the route list.

Every handler is wrapped so that each request writes one access-log line (method, path, status,
bytes, duration in ms), a handler that raises is logged with its traceback and answered with a
500 JSON error, and a bad request body (invalid JSON, too large, broken framing) becomes a 4xx
JSON error. A client that disconnects (or stalls) while its request is handled is logged as 499
(or 408) and the connection is closed, without an error traceback. A catch-all route answers
unknown paths (404) and wrong methods (405) in the same JSON shape, so they are logged too.
Requests the server rejects before any handler runs (malformed framing, a body over the limit
announced in ``Content-Length``, headers too large) are answered by the server and not logged.

``echo_service`` and ``stream_service`` share it (``HttpServer`` has no middleware or
access-log hook of its own).

Example:
    >>> table = RouteTable("demo", access_log=False)
    >>> @table.route("/items/{id:int}", methods=["GET"], summary="one item")
    ... def item(request):
    ...     return {"id": request.path_params["id"]}
    >>> table.describe()
    [{'path': '/items/{id:int}', 'methods': ['GET', 'HEAD'], 'summary': 'one item'}]
"""

from __future__ import annotations

import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from time import perf_counter
from typing import Any, TypeAlias

from .. import HttpServer, NetworkError, ProtocolError, Request, Response, TimeoutError
from ..server.access_log import CountingWriter
from ..server.routing import Route

__all__ = ["Handler", "RouteTable", "json_error"]

Handler: TypeAlias = Callable[[Request], Awaitable[Any] | Any]

#: Access-log status of a request whose client closed the connection first (nginx's convention).
_CLIENT_CLOSED = 499
#: Access-log status of a request whose client stalled past the server's body timeout.
_CLIENT_TIMEOUT = 408


def _unrouted(request: Request) -> None:
    """The handler of the routes a table keeps only for matching (never called)."""


def json_error(status: int, message: str, headers: dict[str, str] | None = None, **details: Any) -> Response:
    """A JSON error response: ``{"error": message, "status": status, **details}``.

    Example:
        >>> from flowno_io.service import json_error
        >>> json_error(400, "count must be an integer", param="count").body
        b'{"error":"count must be an integer","status":400,"param":"count"}'
    """
    return Response.json({"error": message, "status": status, **details}, status, headers)


@dataclass(frozen=True)
class _RouteSpec:
    path: str
    methods: tuple[str, ...] | None
    summary: str
    handler: Handler
    route: Route[Handler]


class RouteTable:
    """The routes of one service, installed on an :class:`HttpServer` with logging and errors.

    Args:
        service: the service name (logger names are ``<service>.access`` and ``<service>.errors``).
        access_log: write one access-log line per request.
    """

    def __init__(self, service: str, *, access_log: bool) -> None:
        self.service = service
        self.access_log = access_log
        self.access_logger = logging.getLogger(f"{service}.access")
        self.error_logger = logging.getLogger(f"{service}.errors")
        self._routes: list[_RouteSpec] = []

    def route(
        self, path: str, methods: Iterable[str] | None = None, summary: str = ""
    ) -> Callable[[Handler], Handler]:
        """Decorator: add a route (``methods=None`` answers every method).

        Raises:
            TypeError, ValueError: the pattern or the methods are invalid (see :class:`HttpServer`).
        """
        route: Route[Handler] = Route(path, _unrouted, methods)  # checks the pattern and methods now
        upper = tuple(sorted(route.methods)) if route.methods is not None else None

        def decorate(handler: Handler) -> Handler:
            self._routes.append(_RouteSpec(path, upper, summary, handler, route))
            return handler

        return decorate

    def describe(self) -> list[dict[str, Any]]:
        """The routes as JSON-ready dicts (for a ``GET /`` index)."""
        return [
            {"path": s.path, "methods": list(s.methods) if s.methods else ["*"], "summary": s.summary}
            for s in self._routes
        ]

    def install(self, server: HttpServer) -> None:
        """Add every route to ``server``, wrapped, then the catch-all that answers 404 and 405."""
        for spec in self._routes:
            server.add_route(spec.path, self._wrap(spec.handler), spec.methods)
        server.add_route("/{rest:path}", self._wrap(self._not_routed))

    # -- wrapping ---------------------------------------------------------------------------

    def _not_routed(self, request: Request) -> Response:
        allowed: set[str] = set()
        for spec in self._routes:
            if spec.route.match_path(request.path) is not None:
                if spec.methods is None:  # cannot happen: the server would have matched it
                    return json_error(500, "routing error")
                allowed.update(spec.methods)
        if allowed:
            methods = sorted(allowed)
            return json_error(
                405, f"method {request.method} not allowed", {"Allow": ", ".join(methods)}, allow=methods
            )
        return json_error(404, "not found", path=request.path)

    def _wrap(self, handler: Handler) -> Handler:
        async def logged(request: Request) -> Any:
            start = perf_counter()
            try:
                result = handler(request)
                if inspect.isawaitable(result):
                    result = await result
                response = _to_response(result, handler)
            except ProtocolError as exc:  # unreadable body: answer, then the server closes
                response = json_error(exc.status_hint, str(exc), {"Connection": "close"})
            except (NetworkError, TimeoutError) as exc:  # the client left or stalled: nothing to answer
                if self.access_log:
                    status = _CLIENT_TIMEOUT if isinstance(exc, TimeoutError) else _CLIENT_CLOSED
                    self.log_access(request, status, 0, start, type(exc).__name__)
                raise
            except Exception:
                self.error_logger.exception("%s %s failed", request.method, request.path)
                response = json_error(500, "internal server error")
            if isinstance(response, Response):
                if self.access_log:
                    self.log_access(request, response.status_code, len(response.body), start)
                return response
            if not self.access_log:
                return response  # unwrapped: a subscription stream may then wait without a task
            return _LoggedStream(self, request, response, start)

        logged.__name__ = getattr(handler, "__name__", "handler")
        logged.__qualname__ = getattr(handler, "__qualname__", logged.__name__)
        logged.__doc__ = handler.__doc__
        return logged

    def log_access(
        self, request: Request, status: int, size: int, start: float, error: str | None = None
    ) -> None:
        """Write one access-log line (JSON) for a finished request."""
        record: dict[str, Any] = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "service": self.service,
            "method": request.method,
            "path": request.path,
            "status": status,
            "bytes": size,
            "duration_ms": round((perf_counter() - start) * 1000, 3),
            "client": f"{request.client[0]}:{request.client[1]}",
        }
        if request.query_string:
            record["query"] = request.query_string
        if error is not None:
            record["error"] = error
        if request.trace is not None:
            record["trace_id"] = request.trace.trace_id
        self.access_logger.info(json.dumps(record, separators=(",", ":"), ensure_ascii=False))


def _to_response(result: Any, handler: Handler) -> Any:
    """A handler's return value as the server would see it (``Response`` or a streaming response)."""
    if isinstance(result, Response):
        return result
    if inspect.iscoroutine(result):
        result.close()
        raise TypeError(
            f"handler {getattr(handler, '__qualname__', handler)} returned a coroutine "
            f"({result.__qualname__}) that was never awaited, not a response: add the missing 'await'"
        )
    if result is None:
        return Response(b"", 204)
    if isinstance(result, bytes | str):
        return Response(result)
    if isinstance(result, dict | list):
        return Response.json(result)
    if hasattr(result, "send"):
        return result
    raise TypeError(f"a handler returned {type(result).__name__}, not a response")


class _LoggedStream:
    """A streaming response that writes its access-log line when it ends (or fails)."""

    def __init__(self, table: RouteTable, request: Request, inner: Any, start: float) -> None:
        self.table = table
        self.request = request
        self.inner = inner
        self.start = start

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)  # the head (status_code, headers) for server middleware

    async def send(self, writer: Any) -> None:
        counting = CountingWriter(writer)
        try:
            await self.inner.send(counting)
        except BaseException as exc:
            if self.table.access_log:
                status = counting.status or 500
                self.table.log_access(self.request, status, counting.size, self.start, type(exc).__name__)
            raise
        if self.table.access_log:
            self.table.log_access(self.request, counting.status, counting.size, self.start)
