"""Server-Sent Events, sans-IO: events in, bytes out (``encode``); bytes in, events out (``SSEDecoder``).

The decoder follows the WHATWG HTML "server-sent events" parsing rules
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation).

Example:
    >>> ServerSentEvent({"n": 1}, event="tick", id="7").encode()
    b'event: tick\\nid: 7\\ndata: {"n":1}\\n\\n'
    >>> decoder = SSEDecoder()
    >>> decoder.feed(b"event: tick\\nid: 7\\ndata: {\\"n\\":1}\\n\\n")
    [ServerSentEvent(data='{"n":1}', event='tick', id='7', retry=None, comment=None)]
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from .._errors import TooLargeError

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "SSEDecoder",
    "ServerSentEvent",
    "encode_comment",
    "encode_event",
]

# One event (its field lines, not counting comment lines that are already complete) may hold this
# many bytes before ``SSEDecoder`` raises ``TooLargeError`` (status hint 413). Browsers set no limit;
# 1 MiB is far above what chat-completion or notification streams send per event.
DEFAULT_MAX_EVENT_BYTES = 1024 * 1024

# SSE lines end with CRLF, LF or CR (in that order of preference, so CRLF is one line end).
_LINE_END_BYTES = re.compile(rb"\r\n|\r|\n")
_LINE_END_TEXT = re.compile(r"\r\n|\r|\n")
_UTF8_BOM = b"\xef\xbb\xbf"


def _comment_lines(text: str) -> list[str]:
    return [f": {line}\n" for line in _LINE_END_TEXT.split(text)]


def _data_text(data: Any) -> str:
    if isinstance(data, str):
        return data
    if isinstance(data, bytes | bytearray | memoryview):
        return bytes(data).decode("utf-8")
    return orjson.dumps(data).decode("utf-8")


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    """One Server-Sent Event.

    On the sending side ``data`` may be a ``str``, UTF-8 ``bytes``, or any value ``orjson`` can
    serialise (dicts, lists, numbers...), which is sent as JSON. Events from ``SSEDecoder`` always
    carry ``data: str`` and ``comment=None``.

    Attributes:
        data: the payload; multi-line text becomes one ``data:`` line per line. ``None`` sends no
            ``data:`` line at all.
        event: the event type (``None`` means the default type, ``"message"``).
        id: the event ID, which the client sends back as ``Last-Event-ID`` when it reconnects.
        retry: the reconnection time in milliseconds the client should use from now on.
        comment: text sent as ``:`` comment lines, ignored by clients (heartbeats, padding).

    Example:
        >>> from flowno_io import ServerSentEvent
        >>> ServerSentEvent("line 1\\nline 2", retry=3000).encode()
        b'retry: 3000\\ndata: line 1\\ndata: line 2\\n\\n'
        >>> ServerSentEvent('{"ok": true}').json()
        {'ok': True}
        >>> ServerSentEvent(comment="keep-alive").encode()
        b': keep-alive\\n\\n'
        >>> ServerSentEvent("x", event="a\\nb").encode()
        Traceback (most recent call last):
        ...
        ValueError: SSE event may not contain CR, LF or NUL: 'a\\nb'
    """

    data: Any = ""
    event: str | None = None
    id: str | None = None
    retry: int | None = None
    comment: str | None = None

    def encode(self) -> bytes:
        """Serialise to the ``text/event-stream`` wire format, ending with a blank line.

        ``data=""`` is sent as one empty ``data:`` line (so the client dispatches an event with
        empty data), except when the event is only a comment, ``id`` and/or ``retry`` without an
        ``event`` type: then no ``data:`` line is written, and the client updates its state
        without dispatching anything, as the spec intends for such control messages.

        Raises:
            ValueError: ``event`` or ``id`` holds CR, LF or NUL; ``retry`` is not an int >= 0;
                ``data`` bytes are not UTF-8.
            TypeError: ``data`` cannot be serialised as JSON.
        """
        parts: list[str] = []
        if self.comment is not None:
            parts.extend(_comment_lines(self.comment))
        for name, value in (("event", self.event), ("id", self.id)):
            if value is None:
                continue
            if "\r" in value or "\n" in value or "\0" in value:
                raise ValueError(f"SSE {name} may not contain CR, LF or NUL: {value!r}")
            parts.append(f"{name}: {value}\n")
        if self.retry is not None:
            if isinstance(self.retry, bool) or not isinstance(self.retry, int) or self.retry < 0:
                raise ValueError(f"SSE retry must be an int >= 0, not {self.retry!r}")
            parts.append(f"retry: {self.retry}\n")
        if self.data is not None:
            text = _data_text(self.data)
            control_only = self.event is None and (
                self.comment is not None or self.id is not None or self.retry is not None
            )
            if text or not control_only:
                parts.extend(f"data: {line}\n" for line in _LINE_END_TEXT.split(text))
        parts.append("\n")
        return "".join(parts).encode("utf-8")

    def json(self) -> Any:
        """Parse ``data`` as JSON (``orjson.loads``); raises ``orjson.JSONDecodeError`` if it is not."""
        return orjson.loads(self.data)


def encode_event(
    data: Any = "",
    *,
    event: str | None = None,
    id: str | None = None,
    retry: int | None = None,
    comment: str | None = None,
) -> bytes:
    """Shorthand for ``ServerSentEvent(...).encode()``.

    Example:
        >>> from flowno_io.sse import encode_event
        >>> encode_event([1, 2], event="nums")
        b'event: nums\\ndata: [1,2]\\n\\n'
    """
    return ServerSentEvent(data, event=event, id=id, retry=retry, comment=comment).encode()


def encode_comment(text: str = "") -> bytes:
    """A comment-only message, as sent for heartbeats: clients ignore it, proxies see traffic.

    Example:
        >>> from flowno_io.sse import encode_comment
        >>> encode_comment("ping")
        b': ping\\n\\n'
    """
    return "".join([*_comment_lines(text), "\n"]).encode("utf-8")


class SSEDecoder:
    """Incremental ``text/event-stream`` parser (WHATWG rules), fed bytes split anywhere.

    * Lines end with CRLF, LF or CR; a CR at the end of one chunk and an LF at the start of the
      next are one line end.
    * Text is UTF-8; invalid bytes become U+FFFD. One leading byte order mark is skipped at the
      start of the stream only.
    * ``field: value`` loses one leading space from the value; a line without a colon is a field
      with an empty value; ``:`` lines are comments; unknown fields are ignored.
    * ``data`` lines are joined with ``"\\n"``. A blank line dispatches the event, but only if it
      had at least one ``data`` line; otherwise only ``last_event_id`` and ``retry`` change.
    * ``id`` persists across events (a value holding NUL is ignored); every event carries the
      current one. ``retry`` is accepted only when it is all ASCII digits; an event carries the
      ``retry`` sent in its own block, ``decoder.retry`` keeps the latest.

    Attributes:
        last_event_id: the ID to send as ``Last-Event-ID`` on reconnect; ``None`` until the
            stream sets one (``""`` when the stream reset it with an empty ``id``).
        retry: the latest reconnection time in milliseconds, or ``None``.

    Example:
        >>> from flowno_io import SSEDecoder
        >>> decoder = SSEDecoder()
        >>> decoder.feed(b"retry: 500\\nid: 1\\ndata: a\\r")
        []
        >>> decoder.feed(b"\\ndata: b\\r\\n\\r\\n: heartbeat\\n\\nevent: x\\ndata: c")
        [ServerSentEvent(data='a\\nb', event=None, id='1', retry=500, comment=None)]
        >>> decoder.close()  # the unterminated "x" event is discarded, as the spec says
        []
        >>> decoder.last_event_id, decoder.retry
        ('1', 500)
    """

    def __init__(self, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        """Create a decoder.

        Args:
            max_event_bytes: limit on the bytes of one event's lines, including an unfinished line;
                exceeding it raises ``TooLargeError`` (status hint 413).
        """
        self.max_event_bytes = max_event_bytes
        self.last_event_id: str | None = None
        self.retry: int | None = None
        self._partial = bytearray()  # bytes of the current, unfinished line
        self._pending_cr = False  # the last chunk ended with CR: skip an LF that starts the next
        self._at_stream_start = True  # no line completed yet: the first may start with a BOM
        self._event_bytes = 0  # bytes of the current event's completed field lines
        # The event being built.
        self._data: list[str] = []
        self._event_type = ""
        self._id_buffer: str | None = None
        self._event_retry: int | None = None

    def feed(self, data: bytes) -> list[ServerSentEvent]:
        """Parse the next chunk of the stream and return the events it completed.

        Raises:
            TooLargeError: an event grew beyond ``max_event_bytes``.
        """
        if not data:
            return []
        if self._pending_cr:
            self._pending_cr = False
            if data[:1] == b"\n":
                data = data[1:]
        events: list[ServerSentEvent] = []
        start = 0
        for match in _LINE_END_BYTES.finditer(data):
            piece = data[start : match.start()]
            start = match.end()
            if self._partial:
                self._partial += piece
                line = bytes(self._partial)
                self._partial.clear()
            else:
                line = piece
            event = self._process_line(line)
            if event is not None:
                events.append(event)
        if data[-1:] == b"\r":
            self._pending_cr = True
        self._partial += data[start:]
        if self._event_bytes + len(self._partial) > self.max_event_bytes:
            raise TooLargeError(
                f"Server-Sent Event larger than max_event_bytes={self.max_event_bytes}", status_hint=413
            )
        return events

    def close(self) -> list[ServerSentEvent]:
        """End of stream: discard an unfinished event (spec: it is never dispatched).

        ``last_event_id`` and ``retry`` are kept for the reconnect, and the decoder is ready to read
        the next connection's stream (which may again start with a byte order mark).

        Returns:
            Always ``[]``; the method exists so every incremental decoder can be drained alike.
        """
        self._partial.clear()
        self._pending_cr = False
        self._at_stream_start = True
        self._id_buffer = self.last_event_id  # an ``id`` in the discarded event does not count
        self._reset_event()
        return []

    def _process_line(self, raw: bytes) -> ServerSentEvent | None:
        if self._at_stream_start:
            self._at_stream_start = False
            if raw.startswith(_UTF8_BOM):
                raw = raw[len(_UTF8_BOM) :]
        if not raw:
            return self._dispatch()
        if raw[:1] == b":":
            return None
        self._event_bytes += len(raw)
        if self._event_bytes > self.max_event_bytes:
            raise TooLargeError(
                f"Server-Sent Event larger than max_event_bytes={self.max_event_bytes}", status_hint=413
            )
        # CR and LF never occur inside a multi-byte UTF-8 sequence, so decoding each line on its
        # own gives the same text as decoding the whole stream incrementally.
        name, _, value = raw.decode("utf-8", "replace").partition(":")
        if value[:1] == " ":  # (a line without a colon has an empty value)
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event_type = value
        elif name == "id":
            if "\0" not in value:
                self._id_buffer = value
        elif name == "retry" and value.isascii() and value.isdigit():
            try:
                retry = int(value)
            except ValueError:  # more digits than Python's int-from-str limit allows
                return None
            self._event_retry = self.retry = retry
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        self.last_event_id = self._id_buffer
        event = None
        if self._data:
            event = ServerSentEvent(
                data="\n".join(self._data),
                event=self._event_type or None,
                id=self._id_buffer,
                retry=self._event_retry,
            )
        self._reset_event()
        return event

    def _reset_event(self) -> None:
        self._data = []
        self._event_type = ""
        self._event_retry = None
        self._event_bytes = 0
