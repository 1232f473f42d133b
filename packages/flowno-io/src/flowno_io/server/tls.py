"""Serving one HTTPS connection: the handshake, then HTTP/1.1 over ``io/tls_stream.py``.

``HttpServer.use_tls(context)`` (or ``ssl_context=``) makes the driver start each accepted
connection here, inline until its first wait, then on a worker task:

* **Handshake with its own timeout** (``tls_handshake_timeout``, each read and write and the whole
  handshake): a client that sends nothing or garbage, or rejects our certificate, is closed
  without an answer and costs nothing more.
* **Requests** are then read and answered as on a cleartext connection (``_next_head`` and
  ``_handle``: the same parser, limits, middleware, framing and streaming responses); the stream is
  a :class:`~flowno_io.io.tls_stream.ServerTlsStream`, whose socket view encrypts the writes made
  without waiting (heartbeats, topic fan-out).
* **A task per connection**: between requests the worker waits on the TLS stream (a cleartext
  connection waits in the driver's poller instead, since its bytes can be read without the TLS
  state). ``close()`` shuts the waiting ones down at once (``server._tls_waiting``).
"""

from __future__ import annotations

import logging
from time import monotonic
from typing import TYPE_CHECKING

from .._errors import NetworkError, RemoteProtocolError, TimeoutError
from ..io.socket_stream import SocketStream
from ..io.tls_stream import ServerTlsStream

if TYPE_CHECKING:
    from .server import HttpServer, _Connection

__all__ = ["serve_tls"]

logger = logging.getLogger("flowno_io.server")


async def serve_tls(server: HttpServer, connection: _Connection) -> bool:
    """Handshake, then serve ``connection``'s requests in this task; False (close) at the end."""
    transport = connection.stream
    if server.ssl_context is None or not isinstance(transport, SocketStream):
        return False
    stream = connection.stream = ServerTlsStream(transport, server.ssl_context)
    timeout = server.tls_handshake_timeout
    try:
        await stream.do_handshake(timeout=timeout, deadline=monotonic() + timeout)
    except (NetworkError, TimeoutError) as exc:  # silent, garbage, or refused our certificate
        logger.debug("TLS handshake with %s:%s failed: %s", *connection.client, exc)
        return False
    waiting = server._tls_waiting
    try:
        while not server.closing or connection.parser.has_events():
            waiting.add(connection)
            try:
                head = await server._next_head(connection)
            finally:
                waiting.discard(connection)
            if head is None or not await server._handle(connection, head):
                return False
    except RemoteProtocolError as exc:  # a corrupt TLS record
        logger.debug("TLS error from %s:%s: %s", *connection.client, exc)
    return False
