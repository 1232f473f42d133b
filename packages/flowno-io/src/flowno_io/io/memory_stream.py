"""An in-memory stream pair with the interface of :class:`~flowno_io.io.socket_stream.SocketStream`.

For tests of code written against the seam: two connected streams on the running flowno loop, no
sockets, no kernel buffers, the same errors and timeouts (trio's ``memory_stream_pair``). Each
direction is a bounded buffer: ``send_all`` returns once every byte is buffered and waits while the
buffer is full, so a peer that does not read holds the sender back (and ``WriteTimeout`` can be
tested); ``receive_some`` returns what is buffered, up to ``max_bytes``.

The socket behaviours it mirrors:

- ``receive_some`` returns ``b""`` once the peer closed, shut down, or half-closed (``send_eof``)
  and the buffered bytes are read.
- ``send_all`` to a peer that closed or shut down raises :class:`WriteError` (a broken pipe);
  so does sending after our own ``send_eof`` or ``shutdown``.
- Using a stream after our own ``close`` raises :class:`ClosedResourceError`.
- A timeout shuts the stream down (the peer sees the end) and leaves it dead: later calls raise
  the timeout again, as a timed-out socket stream does.
- A task parked in ``receive_some``/``send_all`` wakes up on ``shutdown``/``close`` of either side;
  cancelling it (``flowno_io.cancel`` or ``TaskHandle.cancel()``) leaves the stream usable.

Waits use :class:`~flowno_io.io.wakeup.Wakeup`; deadlines use the loop's :mod:`~flowno_io.io.clock`.
"""

from __future__ import annotations

from time import monotonic

from .._errors import ClosedResourceError, ReadTimeout, WriteError, WriteTimeout
from .clock import StreamDeadline
from .socket_stream import DEFAULT_RECEIVE_SIZE, read_until_closed
from .wakeup import Wakeup

__all__ = ["DEFAULT_MEMORY_BUFFER", "MemoryStream", "memory_stream_pair"]

#: Bytes one direction buffers before ``send_all`` waits for the reader (a socket pair on Linux
#: buffers a few hundred KiB; smaller makes backpressure easy to reach in tests).
DEFAULT_MEMORY_BUFFER = 64 * 1024


class _Pipe:
    """One direction: bytes written by one stream, read by the other."""

    __slots__ = ("buffer", "eof", "max_bytes", "readable", "reader_gone", "writable")

    def __init__(self, max_bytes: int) -> None:
        self.buffer = bytearray()
        self.max_bytes = max_bytes
        self.eof = False  # the writer will send nothing more
        self.reader_gone = False  # the reader will read nothing more
        self.readable = Wakeup()
        self.writable = Wakeup()

    def end_writing(self) -> None:
        self.eof = True
        self.readable.set()
        self.writable.set()  # a writer parked on a full buffer wakes to see it

    def end_reading(self) -> None:
        self.reader_gone = True
        self.buffer.clear()
        self.readable.set()  # a reader parked on it wakes to see it
        self.writable.set()


class MemoryStream(StreamDeadline):
    """One end of a :func:`memory_stream_pair`: ``receive_some``, ``send_all``, ``aclose`` and the rest.

    Make them with :func:`memory_stream_pair`, not directly.
    """

    __slots__ = ("_closed", "_incoming", "_outgoing")

    def __init__(self, incoming: _Pipe, outgoing: _Pipe) -> None:
        self._incoming = incoming
        self._outgoing = outgoing
        StreamDeadline.__init__(self)
        self._closed = False

    # -- receiving ------------------------------------------------------------------------------

    async def receive_some(
        self,
        max_bytes: int = DEFAULT_RECEIVE_SIZE,
        *,
        timeout: float | None = None,
        deadline: float | None = None,
    ) -> bytes:
        """Receive up to ``max_bytes``; ``b""`` means the peer closed its side.

        Args:
            max_bytes: the most bytes to return (at least 1).
            timeout: seconds to wait for data, counted from this call.
            deadline: an absolute ``time.monotonic()`` limit (the earlier of the two applies).

        Raises:
            ReadTimeout: nothing arrived in time (the stream is then shut down).
            ClosedResourceError: the stream was closed by us.
        """
        if max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        if self._closed:
            raise ClosedResourceError("stream is closed")
        if self._expired:
            raise ReadTimeout("stream already timed out")
        pipe = self._incoming
        if not (pipe.buffer or pipe.eof or pipe.reader_gone):
            if timeout is not None:
                limit = monotonic() + timeout
                deadline = limit if deadline is None else min(deadline, limit)
            if deadline is not None:
                await self._arm(deadline)
            try:
                while not (pipe.buffer or pipe.eof or pipe.reader_gone):
                    await pipe.readable.wait()
                    if self._closed:
                        raise ClosedResourceError("stream was closed while receiving")
                    if self._expired:
                        raise ReadTimeout("timed out waiting for data")
            finally:
                if deadline is not None:
                    self._disarm()
        if pipe.reader_gone:
            return b""
        data = bytes(pipe.buffer[:max_bytes])
        del pipe.buffer[:max_bytes]
        if data:
            pipe.writable.set()
        return data

    # -- sending --------------------------------------------------------------------------------

    async def send_all(self, data: bytes | bytearray | memoryview, *, timeout: float | None = None) -> None:
        """Send every byte of ``data`` (it returns once all are buffered for the peer).

        Args:
            data: what to send.
            timeout: seconds the peer may go without reading any byte (an inactivity limit,
                re-armed after each partial send, as :meth:`SocketStream.send_all` does).

        Raises:
            WriteTimeout: the peer read nothing for ``timeout`` seconds.
            WriteError: the peer closed or shut down, or we ended our sending side.
            ClosedResourceError: the stream was closed by us.
        """
        if self._closed:
            raise ClosedResourceError("stream is closed")
        if self._expired:
            raise WriteTimeout("stream already timed out")
        pipe = self._outgoing
        view = memoryview(data).cast("B")
        try:
            while True:
                if pipe.reader_gone:
                    raise WriteError("send failed: the peer closed the stream")
                if pipe.eof:
                    raise WriteError("send failed: the sending side was shut down")
                room = pipe.max_bytes - len(pipe.buffer)
                if room > 0 and view:
                    pipe.buffer += view[:room]
                    view = view[room:]
                    pipe.readable.set()
                if not view:
                    return
                if timeout is not None:
                    await self._arm(monotonic() + timeout)
                await pipe.writable.wait()
                if self._closed:
                    raise ClosedResourceError("stream was closed while sending")
                if self._expired:
                    raise WriteTimeout("timed out waiting for the peer to read")
        finally:
            if timeout is not None:
                self._disarm()

    async def wait_closed_by_peer(self) -> None:
        """Wait until the peer closes (incoming bytes are read and dropped)."""
        await read_until_closed(self)

    # -- closing --------------------------------------------------------------------------------

    def send_eof(self) -> None:
        """Half-close: the peer reads the end after what is buffered; we may still receive.

        The socket equivalent is ``sock.shutdown(socket.SHUT_WR)``.
        """
        self._outgoing.end_writing()

    def shutdown(self) -> None:
        """Shut both directions down now; a task parked on this stream (or its peer) wakes up."""
        self._outgoing.end_writing()
        self._incoming.end_reading()

    def close(self) -> None:
        """Close the stream: the peer reads the end, its sends fail, our own calls fail from now on."""
        if not self._closed:
            self._closed = True
            self._disarm()
            self.shutdown()

    async def aclose(self) -> None:
        """Close the stream (async form)."""
        self.close()

    @property
    def closed(self) -> bool:
        """True after :meth:`close`."""
        return self._closed


def memory_stream_pair(max_buffer_bytes: int = DEFAULT_MEMORY_BUFFER) -> tuple[MemoryStream, MemoryStream]:
    """Two connected in-memory streams: what one sends, the other receives.

    Args:
        max_buffer_bytes: bytes each direction holds before ``send_all`` waits for the reader.

    Example:
        >>> from flowno_io.testing import memory_stream_pair, run
        >>> async def main():
        ...     left, right = memory_stream_pair()
        ...     await left.send_all(b"ping")
        ...     data = await right.receive_some(timeout=1.0)
        ...     await left.aclose()
        ...     return data, await right.receive_some()
        >>> run(main())
        (b'ping', b'')
    """
    if max_buffer_bytes < 1:
        raise ValueError("max_buffer_bytes must be >= 1")
    a_to_b, b_to_a = _Pipe(max_buffer_bytes), _Pipe(max_buffer_bytes)
    return MemoryStream(b_to_a, a_to_b), MemoryStream(a_to_b, b_to_a)
