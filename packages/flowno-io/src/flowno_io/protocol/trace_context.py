"""W3C Trace Context (``traceparent``/``tracestate``), sans-IO, and the current request's trace.

A ``traceparent`` is ``version-traceid-parentid-flags``: ``00-`` then 32 and 16 lowercase hex
digits and two of flags (https://www.w3.org/TR/trace-context/#traceparent-header). An invalid one
(wrong length, upper case, all-zero ids, version ``ff``) is ignored and a new trace is started, as
the spec asks.

:data:`current_trace` holds the :class:`TraceContext` of the request being handled; the server's
``TracingMiddleware`` (``server/tracing.py``) sets it around every step of the handler, and
``HttpClient`` reads it to send ``traceparent`` onward with a new parent id.

Example:
    >>> incoming = TraceContext.from_headers(
    ...     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "congo=t61rcWkgMzE")
    >>> incoming.trace_id, incoming.parent_id, incoming.sampled
    ('4bf92f3577b34da6a3ce929d0e0e4736', '00f067aa0ba902b7', True)
    >>> outgoing = incoming.child_traceparent()
    >>> outgoing[:36] == "00-4bf92f3577b34da6a3ce929d0e0e4736-", outgoing[-3:]
    (True, '-01')
    >>> TraceContext.from_headers("00-" + "0" * 32 + "-00f067aa0ba902b7-01").parent_id is None
    True
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from random import getrandbits
from typing import Protocol

__all__ = [
    "CurrentTrace",
    "TraceCarrier",
    "TraceContext",
    "TraceSlot",
    "current_trace",
    "new_span_id",
    "new_trace_id",
    "new_traceparent",
    "trace_slot",
]

_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16
#: ``tracestate`` longer than this is dropped rather than forwarded (the spec's 512-character hint).
MAX_TRACESTATE = 512


def new_trace_id() -> str:
    """32 random lowercase hex digits (never all zero)."""
    return "%032x" % (getrandbits(128) or 1)


def new_span_id() -> str:
    """16 random lowercase hex digits (never all zero)."""
    return "%016x" % (getrandbits(64) or 1)


#: Sets the lowest bit of both ids drawn at once by :func:`new_traceparent` (neither all zeros).
_NONZERO_IDS = (1 << 64) | 1


def new_traceparent() -> str:
    """A ``traceparent`` that starts a trace: new trace id and parent id, sampled.

    >>> value = new_traceparent()
    >>> TraceContext.from_headers(value).parent_id == value[36:52], value[:3], value[-3:]
    (True, '00-', '-01')
    """
    ids = (getrandbits(192) | _NONZERO_IDS).to_bytes(24, "big").hex()  # (faster than two formats)
    return f"00-{ids[:32]}-{ids[32:]}-01"


class TraceContext:
    """One request's place in a trace.

    Built from the request's headers without parsing them: the ids are parsed (or made) the first
    time one is read, so a request whose trace nobody reads costs one object.

    Attributes:
        trace_id: the trace's id (32 hex digits), kept from the caller or new.
        span_id: this server's span for the request (16 hex digits, new for every request).
        parent_id: the caller's span id from its ``traceparent``, ``None`` when this request
            started the trace.
        flags: the trace flags (``1``: sampled).
        tracestate: the caller's ``tracestate``, forwarded unchanged (``None`` when absent).
    """

    __slots__ = ("_flags", "_parent_id", "_raw", "_span_id", "_trace_id", "_tracestate")

    def __init__(
        self,
        trace_id: str,
        span_id: str,
        parent_id: str | None = None,
        flags: int = 1,
        tracestate: str | None = None,
    ) -> None:
        #: What ``_parse`` reads the ids from: the two header values, or the request's fields.
        self._raw: tuple[str | None, str | None] | dict[str, list[str]] | None = None
        self._trace_id = trace_id
        self._span_id = span_id
        self._parent_id = parent_id
        self._flags = flags
        self._tracestate = tracestate

    @classmethod
    def from_headers(cls, traceparent: str | None, tracestate: str | None = None) -> TraceContext:
        """The context of a request carrying these headers; a new trace when ``traceparent`` is bad."""
        context = cls.__new__(cls)
        context._raw = (traceparent, tracestate)
        return context

    @classmethod
    def from_fields(cls, fields: dict[str, list[str]]) -> TraceContext:
        """The context of a request with these header fields (lower-case names, as ``Headers``
        keeps them); nothing is read until an id is (a repeated ``traceparent``: the first)."""
        context = cls.__new__(cls)
        context._raw = fields
        return context

    def _parse(self) -> None:
        raw = self._raw
        self._raw = None
        if type(raw) is tuple:
            traceparent, tracestate = raw
        else:
            parent, state = raw.get("traceparent"), raw.get("tracestate")  # type: ignore[union-attr]
            traceparent = None if parent is None else parent[0]
            tracestate = None if state is None else ",".join(state)
        self._span_id = new_span_id()
        if traceparent is not None:
            match = _TRACEPARENT.fullmatch(traceparent.strip())
            if match is not None:
                version, trace_id, parent_id, flags = match.groups()
                if version != "ff" and trace_id != _ZERO_TRACE and parent_id != _ZERO_SPAN:
                    if tracestate is not None and len(tracestate) > MAX_TRACESTATE:
                        tracestate = None
                    self._trace_id, self._parent_id = trace_id, parent_id
                    self._flags, self._tracestate = int(flags, 16), tracestate
                    return
        self._trace_id, self._parent_id, self._flags, self._tracestate = new_trace_id(), None, 1, None

    @property
    def trace_id(self) -> str:
        if self._raw is not None:
            self._parse()
        return self._trace_id

    @property
    def span_id(self) -> str:
        if self._raw is not None:
            self._parse()
        return self._span_id

    @property
    def parent_id(self) -> str | None:
        if self._raw is not None:
            self._parse()
        return self._parent_id

    @property
    def flags(self) -> int:
        if self._raw is not None:
            self._parse()
        return self._flags

    @property
    def tracestate(self) -> str | None:
        if self._raw is not None:
            self._parse()
        return self._tracestate

    @property
    def sampled(self) -> bool:
        """The ``sampled`` flag."""
        return bool(self.flags & 1)

    @property
    def traceparent(self) -> str:
        """This span as a ``traceparent`` (the value a call made from it would carry)."""
        return f"00-{self.trace_id}-{self.span_id}-{self.flags:02x}"

    def child_traceparent(self) -> str:
        """A ``traceparent`` for an outgoing call: same trace, a new span id as its parent id."""
        return f"00-{self.trace_id}-{new_span_id()}-{self.flags:02x}"

    def __repr__(self) -> str:
        return f"<TraceContext {self.traceparent} parent={self.parent_id}>"


class TraceCarrier(Protocol):
    """What holds a trace made only when read: the server's ``Request`` (its ``trace`` property)."""

    @property
    def trace(self) -> TraceContext | None: ...


class TraceSlot:
    """Where the trace of the handler running in one thread is kept (see :class:`CurrentTrace`):
    a :class:`TraceContext`, or the request it is made from when read (a traced request nobody
    asks the trace of makes none), or ``None``."""

    __slots__ = ("trace",)

    def __init__(self) -> None:
        self.trace: TraceContext | TraceCarrier | None = None


_slots: ContextVar[TraceSlot] = ContextVar("flowno_io_trace_slot")
#: ``slot_or_none(None)``: the current context's slot if it has one (a C call; ``trace_slot()``
#: makes it when not).
slot_or_none = _slots.get


def trace_slot() -> TraceSlot:
    """The slot of the current context (each thread starts with its own context, so its own slot).

    The server sets ``slot.trace`` around each step of a traced handler and puts the previous
    value back before the step returns to the loop: an attribute store, where ``ContextVar.set``
    and ``reset`` copy the context's mapping and make a token (~0.3 µs per request).
    """
    slot = _slots.get(None)
    if slot is None:
        slot = TraceSlot()
        _slots.set(slot)
    return slot


class CurrentTrace:
    """The trace of the request whose handler is running (``None`` outside one), read with
    :meth:`get`; the ``ContextVar`` interface (``get``, ``set``, ``reset``), kept per thread.

    flowno runs every task of a loop in its thread's one context, and the server sets the trace
    only for the synchronous steps of a handler, so one slot per thread holds it.
    """

    __slots__ = ()

    def get(self) -> TraceContext | None:
        """The current trace, ``None`` outside a traced handler."""
        slot = _slots.get(None)
        if slot is None:
            return None
        trace = slot.trace
        if trace is None or type(trace) is TraceContext:
            return trace
        return trace.trace  # type: ignore[union-attr]  # a TraceCarrier: the request

    def set(self, trace: TraceContext | TraceCarrier | None) -> TraceContext | TraceCarrier | None:
        """Make ``trace`` current; returns the token (what was current) for :meth:`reset`."""
        slot = trace_slot()
        previous = slot.trace
        slot.trace = trace
        return previous

    def reset(self, token: TraceContext | TraceCarrier | None) -> None:
        """Put back the trace current before the :meth:`set` that returned ``token``."""
        trace_slot().trace = token

    def __repr__(self) -> str:
        return f"<current_trace {self.get()!r}>"


#: The trace of the request whose handler is running (``None`` outside one).
current_trace = CurrentTrace()
