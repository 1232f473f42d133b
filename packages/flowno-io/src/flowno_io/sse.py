"""Server-Sent Events, sans-IO: the encoder the server uses and the decoder the client uses.

Example:
    >>> from flowno_io.sse import ServerSentEvent, SSEDecoder
    >>> wire = ServerSentEvent({"n": 1}, event="tick", id="7").encode()
    >>> [(e.event, e.data, e.id) for e in SSEDecoder().feed(wire)]
    [('tick', '{"n":1}', '7')]
"""

from .protocol.sse import DEFAULT_MAX_EVENT_BYTES, ServerSentEvent, SSEDecoder, encode_comment, encode_event

__all__ = ["DEFAULT_MAX_EVENT_BYTES", "SSEDecoder", "ServerSentEvent", "encode_comment", "encode_event"]
