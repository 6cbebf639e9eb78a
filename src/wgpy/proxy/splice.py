"""Bidirectional copy between a client and an origin TCP connection.

Theory of operation
-------------------
A :class:`Pipe` owns two asyncio protocols, one per socket.  Bytes read on
one side are written to the other.  Backpressure: each transport's write
buffer is capped at ``bufsize``; when the kernel cannot take more and the
buffer fills, asyncio calls ``pause_writing()`` on that side and we stop
*reading* the opposite side until ``resume_writing()``.  So at most about
``2 * bufsize`` bytes are held per connection, however slow either end is.

Half-close: an EOF from one side becomes ``shutdown(SHUT_WR)`` on the other
(after its buffer drains) and the other direction keeps flowing.  When both
directions have ended, both sockets close.  A reset on one side is passed on
as a reset (``SO_LINGER`` 0) on the other.  Idle time is measured with an
injected clock; the server's sweeper asks :meth:`Pipe.idle_for` and closes.

An origin that ends the connection before sending a single byte, while the
client has not finished, is remembered (:attr:`Pipe.origin_silent`): the
client sees only an empty reply, so the server names it in its log and
counters (the usual cause is a PROXY header the origin did not expect).
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Callable
from typing import Protocol

_LINGER_RST = struct.pack("ii", 1, 0)


class ByteCounter(Protocol):
    bytes_up: int
    bytes_down: int


class _Side(asyncio.Protocol):
    def __init__(self, pipe: Pipe, name: str) -> None:
        self.pipe = pipe
        self.name = name
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []  # for this side, before it is attached
        self.pending_eof = False
        self.got_eof = False
        self.lost = False
        self.received = 0  # bytes read from this side's socket

    @property
    def peer(self) -> _Side:
        return self.pipe.origin if self is self.pipe.client else self.pipe.client

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        hi = self.pipe.bufsize
        transport.set_write_buffer_limits(high=hi, low=hi // 4)
        for chunk in self.pending:
            transport.write(chunk)
        self.pending.clear()
        if self.pending_eof:
            self.write_eof()
        if self.peer.lost:
            self.close()  # the other side ended before this one was attached
        elif self.peer.transport is not None:
            self.peer.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        self.pipe.last_activity = self.pipe.clock()
        self.received += len(data)
        peer = self.peer
        if self is self.pipe.client:
            self.pipe.counter.bytes_up += len(data)
        else:
            self.pipe.counter.bytes_down += len(data)
        if peer.transport is None:
            peer.pending.append(data)
            assert self.transport is not None
            self.transport.pause_reading()
        elif not peer.lost and not peer.transport.is_closing():
            peer.transport.write(data)

    def eof_received(self) -> bool:
        self.pipe.note_end(self)
        self.got_eof = True
        self.pipe.last_activity = self.pipe.clock()
        if self.peer.transport is None:
            self.peer.pending_eof = True
        else:
            self.peer.write_eof()
        self.pipe.maybe_finish()
        return True  # keep our write direction open

    def pause_writing(self) -> None:
        if self.peer.transport is not None and not self.peer.lost:
            self.peer.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.peer.transport is not None and not self.peer.lost:
            self.peer.transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.pipe.side_lost(self, exc)

    # helpers
    def write_eof(self) -> None:
        """Half-close our write direction (the other side sent EOF)."""
        t = self.transport
        if t is not None and not self.lost and not t.is_closing() and t.can_write_eof():
            t.write_eof()

    def abort(self, rst: bool) -> None:
        t = self.transport
        if t is None or self.lost:
            return
        if rst:
            sock = t.get_extra_info("socket")
            if sock is not None:
                try:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
                except OSError:
                    pass
        t.abort()

    def close(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.close()

    def buffered(self) -> int:
        t = self.transport
        return t.get_write_buffer_size() if t is not None and not self.lost else 0


class Pipe:
    """One proxied TCP connection: client side, origin side and their state.

    :param bufsize: write-buffer high-water mark per side, in bytes.
    :param clock: monotonic seconds (``loop.time`` in the server).
    :param counter: receives ``bytes_up``/``bytes_down`` as they flow.
    :param on_done: called once, after both sockets are closed.
    :param idle_timeout: seconds without traffic after which the sweeper closes it.
    """

    def __init__(
        self,
        bufsize: int,
        clock: Callable[[], float],
        counter: ByteCounter,
        on_done: Callable[[Pipe], None],
        idle_timeout: float = 300.0,
    ) -> None:
        self.bufsize = bufsize
        self.idle_timeout = idle_timeout
        self.clock = clock
        self.counter = counter
        self.on_done = on_done
        self.client = _Side(self, "client")
        self.origin = _Side(self, "origin")
        self.last_activity = clock()
        self.reason = ""
        self.origin_silent = False  # the origin ended first, without a byte
        self._done = False

    def idle_for(self, now: float) -> float:
        return now - self.last_activity

    def close(self, reason: str) -> None:
        """Close both sides: FIN when buffers are empty, else reset."""
        self.reason = self.reason or reason
        stuck = self.client.buffered() or self.origin.buffered()
        for side in (self.client, self.origin):
            side.abort(rst=True) if stuck else side.close()

    def abort(self, reason: str) -> None:
        """Reset both sides now."""
        self.reason = self.reason or reason
        self.client.abort(rst=True)
        self.origin.abort(rst=True)

    def maybe_finish(self) -> None:
        """Close both connections once each side has sent its EOF."""
        if self.client.got_eof and self.origin.got_eof:
            self.reason = self.reason or "closed"
            self.client.close()
            self.origin.close()

    def note_end(self, side: _Side) -> None:
        """``side`` sent EOF or went away: note an origin that did so first, silently."""
        if (side is self.origin and not side.received and not self.reason
                and not side.got_eof and not self.client.got_eof and not self.client.lost):
            self.origin_silent = True  # fmt: skip

    def side_lost(self, side: _Side, exc: Exception | None) -> None:
        """One connection is gone: a reset is passed on as a reset, a close as a close."""
        self.note_end(side)
        peer = side.peer
        if exc is not None:
            self.reason = self.reason or f"{side.name} reset"
            peer.abort(rst=True)
        elif not peer.lost:
            self.reason = self.reason or f"{side.name} closed"
            if peer.transport is None:
                peer.pending_eof = True
            else:
                peer.close()
        if self.client.lost and self.origin.lost and not self._done:
            self._done = True
            self.on_done(self)
