"""An access log as a middleware: one JSON line per response, including the server's own answers.

:class:`AccessLogMiddleware` writes one line (a JSON object, at ``INFO`` on its logger) for:

* every response a handler (or another middleware) chose: plain ones when the chain returns,
  streaming ones when they end (with the bytes the producer wrote and the whole duration; a stream
  cut short by the client is logged with its status and ``"error"``);
* every error the server answers itself, through the error hook: malformed requests (400), bodies
  over the limit (413), heads too large (431), an unsupported version (505), and the 500 of a
  handler that raised — with the method and path when they were parsed;
* a request whose client left (or stalled past the body timeout) while its handler read the body:
  status 499 (408), nginx's conventions, with ``"error"``; nothing was answered.

Fields: ``ts`` (UTC, ms), ``method``, ``path``, ``status``, ``bytes`` (body bytes), ``duration_ms``
(from the chain's start; ``null`` for an error answered before any handler), ``client``
(``host:port``), and ``query``, ``error``, ``service``, ``trace_id`` (the W3C trace id, when
``TracingMiddleware`` runs outside this one) when there are some. Put it first in the
middleware list: it then logs what the other middleware made of the response (a CORS preflight,
a compressed size).

Example:
    >>> import logging, urllib.request
    >>> from flowno_io import HttpServer
    >>> from flowno_io.testing import ServerThread
    >>> lines = []
    >>> class Keep(logging.Handler):
    ...     def emit(self, record): lines.append(record.getMessage())
    >>> log = logging.getLogger("doctest.access"); log.addHandler(Keep()); log.setLevel(logging.INFO)
    >>> server = HttpServer("127.0.0.1", 0, routes={"/": lambda r: "hi"},
    ...                     middleware=[AccessLogMiddleware(log)])
    >>> with ServerThread(server) as url:
    ...     _ = urllib.request.urlopen(url + "/?x=1").read()
    >>> import json; record = json.loads(lines[0])
    >>> record["method"], record["path"], record["status"], record["bytes"], record["query"]
    ('GET', '/', 200, 2, 'x=1')
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from time import perf_counter
from typing import Any

import orjson

from .._errors import NetworkError, TimeoutError
from ..protocol.headers import Headers
from ..protocol.models import Response
from .middleware import CallNext, ErrorAnswer
from .request import Request

__all__ = ["CLIENT_CLOSED_STATUS", "CLIENT_TIMEOUT_STATUS", "AccessLogMiddleware", "CountingWriter"]

#: Logged status of a request whose client closed the connection first (nginx's 499).
CLIENT_CLOSED_STATUS = 499
#: Logged status of a request whose client stalled past the server's body timeout.
CLIENT_TIMEOUT_STATUS = 408
_STARTED = "access_log.started"


class AccessLogMiddleware:
    """Log every response as one JSON line (see the module docstring).

    Args:
        logger: a :class:`logging.Logger` or a logger name (default ``flowno_io.access``).
        service: a ``"service"`` field for every line (``None`` leaves it out).
    """

    def __init__(
        self, logger: logging.Logger | str = "flowno_io.access", *, service: str | None = None
    ) -> None:
        self.logger = logging.getLogger(logger) if isinstance(logger, str) else logger
        self.service = service

    def __repr__(self) -> str:
        return f"<AccessLogMiddleware {self.logger.name}>"

    async def __call__(self, request: Request, call_next: CallNext) -> Any:
        start = perf_counter()
        request.state[_STARTED] = start
        try:
            response = await call_next(request)
        except (NetworkError, TimeoutError) as exc:  # the client left or stalled: nothing answered
            status = CLIENT_TIMEOUT_STATUS if isinstance(exc, TimeoutError) else CLIENT_CLOSED_STATUS
            self.log(
                request.method,
                request.path,
                status,
                0,
                start,
                request.client,
                request.query_string,
                exc,
                trace_id=_trace_id(request),
            )
            raise
        if isinstance(response, Response):
            size = 0 if request.method == "HEAD" else len(response.body)
            self.log(
                request.method,
                request.path,
                response.status_code,
                size,
                start,
                request.client,
                request.query_string,
                trace_id=_trace_id(request),
            )
            return response
        return _LoggedStream(self, request, response, start)

    def on_error(self, answer: ErrorAnswer) -> None:
        """Log an error the server answers itself."""
        request = answer.request
        start = request.state.get(_STARTED) if request is not None else None
        query = request.query_string if request is not None else ""
        trace_id = _trace_id(request) if request is not None else None
        self.log(
            answer.method,
            answer.path,
            answer.status,
            answer.size,
            start,
            answer.client,
            query,
            answer.reason,
            trace_id=trace_id,
        )

    def log(
        self,
        method: str | None,
        path: str | None,
        status: int,
        size: int,
        start: float | None,
        client: tuple[str, int],
        query: str = "",
        error: BaseException | str | None = None,
        *,
        trace_id: str | None = None,
    ) -> None:
        """Write one line (when the logger is enabled for ``INFO``)."""
        logger = self.logger
        if not logger.isEnabledFor(logging.INFO):
            return
        record: dict[str, Any] = {
            "ts": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "method": method,
            "path": path,
            "status": status,
            "bytes": size,
            "duration_ms": None if start is None else round((perf_counter() - start) * 1000, 3),
            "client": f"{client[0]}:{client[1]}",
        }
        if query:
            record["query"] = query
        if error is not None:
            record["error"] = error if isinstance(error, str) else type(error).__name__
        if self.service is not None:
            record["service"] = self.service
        if trace_id is not None:
            record["trace_id"] = trace_id
        logger.info(orjson.dumps(record).decode())


def _trace_id(request: Request) -> str | None:
    trace = request.trace
    return None if trace is None else trace.trace_id


class CountingWriter:
    """Stands in for the server's ``ResponseWriter``: remembers the status, counts body bytes."""

    def __init__(self, writer: Any) -> None:
        object.__setattr__(self, "_writer", writer)
        object.__setattr__(self, "status", 0)
        object.__setattr__(self, "size", 0)

    async def write_head(self, status_code: int, headers: Headers) -> None:
        object.__setattr__(self, "status", status_code)
        await self._writer.write_head(status_code, headers)

    async def write(self, data: bytes) -> None:
        await self._writer.write(data)
        if not self._writer.head_only:
            object.__setattr__(self, "size", self.size + len(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._writer, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._writer, name, value)


class _LoggedStream:
    """A streaming response that writes its access-log line when it ends (or fails)."""

    def __init__(self, log: AccessLogMiddleware, request: Request, inner: Any, start: float) -> None:
        self._log = log
        self._request = request
        self._inner = inner
        self._start = start

    # The wrapped response's head, for the middleware outside this one (read and write).
    @property
    def status_code(self) -> int:
        return self._inner.status_code  # type: ignore[no-any-return]

    @status_code.setter
    def status_code(self, value: int) -> None:
        self._inner.status_code = value

    @property
    def headers(self) -> Headers:
        return self._inner.headers  # type: ignore[no-any-return]

    @headers.setter
    def headers(self, value: Headers) -> None:
        self._inner.headers = value

    @property
    def body(self) -> Any:
        return self._inner.body

    @body.setter
    def body(self, value: Any) -> None:
        self._inner.body = value

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def send(self, writer: Any) -> None:
        counting = CountingWriter(writer)
        try:
            await self._inner.send(counting)
        except BaseException as exc:
            # Nothing sent and not a network failure: the server answers 500; on_error logs it.
            if counting.status or isinstance(exc, NetworkError | TimeoutError):
                self._write(counting.status or CLIENT_CLOSED_STATUS, counting.size, exc)
            raise
        self._write(counting.status, counting.size, None)

    def _write(self, status: int, size: int, error: BaseException | None) -> None:
        request = self._request
        self._log.log(
            request.method,
            request.path,
            status,
            size,
            self._start,
            request.client,
            request.query_string,
            error,
            trace_id=_trace_id(request),
        )
