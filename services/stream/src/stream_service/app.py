"""The stream service: Server-Sent Events, a shared ticker, and OpenAI-style token streams.

Routes:

* ``GET /events?count=&interval_ms=&size=`` → ``count`` SSE events with ids ``1..count``, one every
  ``interval_ms``, each carrying ``size`` characters of payload. A reconnect with
  ``Last-Event-ID: k`` (or ``?last_event_id=k``) resumes at ``k + 1``; with nothing left, 204
  (which tells an EventSource to stop reconnecting).
* ``GET /ticker?count=`` → one shared clock: every subscriber gets the same ``tick`` events (ids
  are the tick sequence); ``count`` ends the stream after that many ticks.
* ``POST /v1/chat/completions`` → an OpenAI-compatible chat completion (see ``_chat.py``):
  ``"stream": true`` streams ``chat.completion.chunk`` objects then ``data: [DONE]``, at the
  service's tokens per second (or the request's ``tokens_per_second``); otherwise one
  ``chat.completion`` JSON after the same generation time.
* ``GET /v1/models`` → the one model, as the OpenAI API lists models.
* ``GET /health`` → uptime, open connections, requests served, active streams, ticker subscribers.
* ``GET /`` → the route list.

Bad input → 400 with a JSON error body ``{"error": message, "status": 400, ...}`` (on ``/v1/...``
the OpenAI shape, ``{"error": {"message": ...}, "status": 400}``, which OpenAI clients read).

Example:
    >>> from flowno_io.testing import ServerThread
    >>> import urllib.request
    >>> with ServerThread(build_server("127.0.0.1", 0)) as url:
    ...     print(urllib.request.urlopen(url + "/events?count=2&interval_ms=0").read().decode())
    id: 1
    retry: 1000
    data: {"n":1,"count":2,"payload":""}
    <BLANKLINE>
    id: 2
    data: {"n":2,"count":2,"payload":""}
    <BLANKLINE>
    <BLANKLINE>
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from typing import Any

from flowno_io import (
    EventSourceResponse,
    HttpServer,
    ProtocolError,
    Request,
    Response,
    ServerSentEvent,
    StreamingResponse,
    sleep,
)
from flowno_io.service import RouteTable, json_error

from ._chat import (
    DEFAULT_MODEL,
    ChatRequest,
    CompletionChunks,
    InvalidRequest,
    completion,
    error_body,
    parse_request,
    reply_tokens,
)
from ._ticker import Ticker

__all__ = [
    "DEFAULT_TICKER_INTERVAL",
    "DEFAULT_TOKENS_PER_SECOND",
    "MAX_EVENTS",
    "MAX_EVENT_SIZE",
    "MAX_INTERVAL_MS",
    "build_server",
]

#: Tokens per second of chat completions when neither the command line nor the request says.
DEFAULT_TOKENS_PER_SECOND = 50.0
#: Seconds between ticker ticks by default.
DEFAULT_TICKER_INTERVAL = 1.0
#: Most events one ``/events`` stream may ask for (more → 400).
MAX_EVENTS = 100_000
#: Longest ``interval_ms`` of ``/events`` (more → 400).
MAX_INTERVAL_MS = 60_000
#: Largest ``size`` of ``/events`` payloads, in characters (more → 400).
MAX_EVENT_SIZE = 64 * 1024
#: Most ticks one ``/ticker`` stream may ask for with ``count`` (more → 400).
MAX_TICKS = 1_000_000
#: The reconnection delay (ms) the streams tell EventSource clients to use.
RETRY_MS = 1000

_PAYLOAD_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def _payload(size: int) -> str:
    repeats, rest = divmod(size, len(_PAYLOAD_ALPHABET))
    return _PAYLOAD_ALPHABET * repeats + _PAYLOAD_ALPHABET[:rest]


class _BadParameter(ValueError):
    """A query parameter or header out of range; ``response`` is the 400 to answer with."""

    def __init__(self, response: Response) -> None:
        super().__init__("bad parameter")
        self.response = response


def _int_value(value: str | None, name: str, default: int, low: int, high: int) -> int:
    """``value`` as an int within ``[low, high]`` (``default`` when absent).

    Raises:
        _BadParameter: not a non-negative integer, or out of range (carries the 400 response).
    """
    if value is None or value == "":
        return default
    if not value.isascii() or not value.isdigit():
        raise _BadParameter(
            json_error(400, f"{name} must be a non-negative integer", param=name, value=value)
        )
    # Compare digits before converting: int() refuses over 4,300 digits, and the value is echoed
    # back as the text it was (JSON numbers beyond 64 bits cannot be encoded).
    number = int(value) if len(value.lstrip("0")) <= len(str(high)) else None
    if number is None or not low <= number <= high:
        raise _BadParameter(json_error(400, f"{name} must be within {low}-{high}", param=name, value=value))
    return number


class _Counters:
    """``/events`` and chat streams open right now (for ``/health``, with the ticker's subscribers)."""

    def __init__(self) -> None:
        self.active_streams = 0


def build_server(
    host: str = "127.0.0.1",
    port: int = 8081,
    *,
    access_log: bool = False,
    tokens_per_second: float = DEFAULT_TOKENS_PER_SECOND,
    ticker_interval: float = DEFAULT_TICKER_INTERVAL,
    **limits: Any,
) -> HttpServer:
    """The stream service's :class:`HttpServer` (not yet bound), with every route.

    Args:
        host: address to bind.
        port: port to bind (``0``: any free one).
        access_log: write one JSON access-log line per request (logger ``stream_service.access``).
        tokens_per_second: the default pace of chat completions.
        ticker_interval: seconds between ``/ticker`` ticks.
        limits: passed to :class:`HttpServer` (``max_body_bytes``, timeouts...).
    """
    if not 0 < tokens_per_second <= 1_000_000:
        raise ValueError(f"tokens_per_second must be within (0, 1e6], not {tokens_per_second}")
    server = HttpServer(host, port, **limits)
    table = RouteTable("stream_service", access_log=access_log)
    ticker = Ticker(ticker_interval)
    counters = _Counters()
    started = time.monotonic()

    @table.route("/", methods=["GET"], summary="this list of routes")
    def index(request: Request) -> dict[str, Any]:
        return {"service": "stream", "routes": table.describe()}

    @table.route("/health", methods=["GET"], summary="uptime, connections, requests, streams, pid")
    def health(request: Request) -> dict[str, Any]:
        return {
            "status": "ok",
            "service": "stream",
            "uptime_s": round(time.monotonic() - started, 3),
            "open_connections": server.open_connections,
            "requests_served": server.stats["requests_served"],
            "connections_accepted": server.stats["connections_accepted"],
            "active_streams": counters.active_streams + ticker.subscribers,
            "ticker_subscribers": ticker.subscribers,
            "ticker_seq": ticker.seq,
            "ticker_interval_ms": round(ticker.interval * 1000, 3),
            "tokens_per_second": tokens_per_second,
            "pid": os.getpid(),
        }

    # -- /events ----------------------------------------------------------------------------

    async def numbered_events(first: int, count: int, interval: float, size: int) -> AsyncIterator[bytes]:
        counters.active_streams += 1
        try:
            payload = _payload(size)
            for n in range(first, count + 1):
                if n > first and interval:
                    await sleep(interval)
                data = {"n": n, "count": count, "payload": payload}
                yield ServerSentEvent(data, id=str(n), retry=RETRY_MS if n == first else None).encode()
        finally:
            counters.active_streams -= 1

    @table.route("/events", methods=["GET"], summary="count SSE events with ids; resumes after Last-Event-ID")
    def events(request: Request) -> Response | EventSourceResponse:
        query = request.query_params
        try:
            count = _int_value(query.get("count"), "count", 10, 1, MAX_EVENTS)
            interval_ms = _int_value(query.get("interval_ms"), "interval_ms", 100, 0, MAX_INTERVAL_MS)
            size = _int_value(query.get("size"), "size", 0, 0, MAX_EVENT_SIZE)
            resume_from = request.last_event_id or query.get("last_event_id")
            last_id = _int_value(resume_from, "Last-Event-ID", 0, 0, MAX_EVENTS)
        except _BadParameter as exc:
            return exc.response
        if last_id >= count:
            return Response(b"", 204)
        return EventSourceResponse(numbered_events(last_id + 1, count, interval_ms / 1000, size))

    # -- /ticker ----------------------------------------------------------------------------

    # A comment only: clients ignore it (a retry field here would make httpx-sse dispatch it).
    greeting = ServerSentEvent(comment=f"ticker every {round(ticker.interval * 1000)} ms").encode()

    async def counted_ticks(max_ticks: int) -> AsyncIterator[bytes]:
        subscription = ticker.ticks(max_ticks)
        try:
            yield greeting
            async for tick in subscription:
                yield tick
        finally:
            await subscription.aclose()

    @table.route("/ticker", methods=["GET"], summary="one shared clock for every subscriber (?count=N)")
    async def ticker_stream(request: Request) -> Response | EventSourceResponse:
        text = request.query_params.get("count")
        try:
            count = _int_value(text, "count", 0, 1, MAX_TICKS) if text else None
        except _BadParameter as exc:
            return exc.response
        if count is not None:
            return EventSourceResponse(counted_ticks(count))
        # The subscription itself as the body: the stream waits between ticks without a task and
        # each tick is sent from the fan-out (issue 20). /health counts it among the subscribers.
        subscription = await ticker.subscribe()
        subscription.push(greeting)
        return EventSourceResponse(subscription)

    # -- OpenAI-compatible ------------------------------------------------------------------

    async def chat_stream(chat: ChatRequest, tokens: list[str], created: int) -> AsyncIterator[bytes]:
        counters.active_streams += 1
        try:
            chunks = CompletionChunks(chat, created)
            yield ServerSentEvent(chunks.first()).encode()
            start = time.monotonic()
            for index, token in enumerate(tokens):
                delay = start + (index + 1) / chat.tokens_per_second - time.monotonic()
                if delay > 0:
                    await sleep(delay)
                yield ServerSentEvent(chunks.token(token)).encode()
            yield ServerSentEvent(chunks.last()).encode()
            if chat.include_usage:
                yield ServerSentEvent(chunks.usage(len(tokens))).encode()
            yield b"data: [DONE]\n\n"
        finally:
            counters.active_streams -= 1

    @table.route(
        "/v1/chat/completions",
        methods=["POST"],
        summary="OpenAI-compatible chat completion; stream: true → chunks then [DONE]",
    )
    async def chat_completions(request: Request) -> Response | StreamingResponse:
        try:
            body = await request.json()
        except ProtocolError as exc:
            status = exc.status_hint
            return Response.json(error_body(str(exc), status=status), status, {"Connection": "close"})
        try:
            chat = parse_request(body, tokens_per_second)
        except InvalidRequest as exc:
            return Response.json(error_body(str(exc), exc.param), 400)
        tokens = reply_tokens(chat)
        created = int(time.time())
        if chat.stream:
            # A StreamingResponse (not an EventSourceResponse): a started completion runs to its
            # end during a graceful shutdown, and no heartbeat comments go to OpenAI clients.
            return StreamingResponse(
                chat_stream(chat, tokens, created),
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
                content_type="text/event-stream; charset=utf-8",
            )
        await sleep(len(tokens) / chat.tokens_per_second)
        return Response.json(completion(chat, tokens, created))

    @table.route("/v1/models", methods=["GET"], summary="the model this service answers as")
    def models(request: Request) -> dict[str, Any]:
        model = {"id": DEFAULT_MODEL, "object": "model", "created": 0, "owned_by": "flowno-io"}
        return {"object": "list", "data": [model]}

    table.install(server)
    return server
