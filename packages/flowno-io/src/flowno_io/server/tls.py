"""Serving one HTTPS connection: the handshake, then HTTP/1.1 over ``io/tls_stream.py``.

``HttpServer.use_tls(context)`` (or ``ssl_context=``) makes the driver start each accepted
connection here, inline until its first wait, then on a worker task:

* **Handshake with its own timeout** (``tls_handshake_timeout``, each read and write and the whole
  handshake): a client that sends nothing or garbage, or rejects our certificate, is closed
  without an answer and costs nothing more.
* **HTTP/2 when ALPN chose ``h2``** (``server/http2.py``): the connection task owns it from then on.
* **Then it is an ordinary connection**: its stream is a
  :class:`~flowno_io.io.tls_stream.ServerTlsStream`, whose socket view decrypts on ``recv`` and
  encrypts on ``send``, so the driver parks it between requests in its poller and answers its
  requests inline like a cleartext one (same parser, limits, middleware, framing, streaming
  responses, idle cost: no task).
* **Bytes hidden in the TLS object**: a read that waited (a request body) may have taken more
  records from the socket than it decrypted; the socket then no longer says "readable" for them.
  Such a connection is not parked: the driver serves it on its next turn (``server._tls_ready``).
"""

from __future__ import annotations

import logging
from time import monotonic
from typing import TYPE_CHECKING

from .._errors import NetworkError, TimeoutError
from ..io.socket_stream import DEFAULT_RECEIVE_SIZE, SocketStream
from ..io.tls_stream import ServerTlsStream
from .http2 import serve_http2

if TYPE_CHECKING:
    from .connection import Connection
    from .server import HttpServer

__all__ = ["serve_tls"]

logger = logging.getLogger("flowno_io.server")


async def serve_tls(server: HttpServer, connection: Connection) -> bool:
    """Handshake, then answer what already arrived; True to park the connection in the driver."""
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
    if stream.alpn_protocol == "h2":
        return await serve_http2(server, connection, b"")
    try:  # the first request often came with the handshake's last flight: already read
        data = stream.sock.recv(DEFAULT_RECEIVE_SIZE)
    except BlockingIOError:
        return True
    except OSError as exc:
        logger.debug("TLS error from %s:%s: %s", *connection.client, exc)
        return False
    if not data:
        return False
    return await server._exchange(connection, data)
