"""Bidirectional copy between a client and an origin TCP connection.

Theory of operation
-------------------
A :class:`Pipe` owns two non-blocking sockets, one :class:`_Side` each, and
drives them straight from readiness callbacks of a
:class:`~wgpy.proxy.poller.Poller`: no asyncio transports, protocols, tasks
or handles per connection, which were most of what a short connection used
to cost.  Bytes read on one side are
sent to the other at once; what the kernel does not take waits in that
side's buffer until the socket is writable again.

Backpressure: when a side's buffer reaches ``bufsize`` we stop *reading* the
opposite side, and read it again once the buffer has drained to a quarter.
So at most about ``bufsize`` plus one read are held per direction, however
slow either end is.

Half-close: an EOF from one side becomes ``shutdown(SHUT_WR)`` on the other
(after its buffer drains) and the other direction keeps flowing.  When both
directions have ended, both sockets close (each after its buffer drains).
A reset on one side, or an error sending to it, is passed on as a reset
(``SO_LINGER`` 0) on the other.  Idle time is measured with an injected
clock; the server's sweeper asks :meth:`Pipe.idle_for` and closes.

An origin that ends the connection before sending a single byte, while the
client has not finished, is remembered (:attr:`Pipe.origin_silent`): the
client sees only an empty reply, so the server names it in its log and
counters (the usual cause is a PROXY header the origin did not expect).
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable
from typing import Protocol

from .poller import IN, OUT, READABLE, WRITABLE, Poller

_LINGER_RST = struct.pack("ii", 1, 0)
MAX_READ = 256 * 1024  # bytes per recv(), as asyncio's transports read


class ByteCounter(Protocol):
    bytes_up: int
    bytes_down: int


class _Side:
    """One socket of a pipe: what it read, what waits to be sent to it."""

    __slots__ = ("pipe", "name", "sock", "fd", "peer", "buf", "reading", "paused", "writing",
                 "eof_pending", "closing", "got_eof", "lost", "received", "_cb")  # fmt: skip

    def __init__(self, pipe: Pipe, name: str) -> None:
        self.pipe = pipe
        self.name = name
        self.sock: socket.socket | None = None
        self.fd = -1
        self.peer: _Side = self
        self.buf = bytearray()  # bytes for this side's socket the kernel has not taken
        self.reading = False  # registered with add_reader
        self.paused = False  # not reading because the peer's buffer is full
        self.writing = False  # registered with add_writer
        self.eof_pending = False  # shutdown(SHUT_WR) once buf drains
        self.closing = False  # close once buf drains
        self.got_eof = False
        self.lost = False
        self.received = 0  # bytes read from this side's socket
        self._cb = self._ready

    def attach(self, sock: socket.socket) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self._read_on()

    # -- readiness ---------------------------------------------------------
    def _ready(self, events: int) -> None:
        if events & WRITABLE and self.writing:
            self._on_writable()
        if events & READABLE and self.reading:
            self._on_readable()

    def _watch(self) -> None:
        self.pipe.poller.watch(self.fd, (IN if self.reading else 0) | (OUT if self.writing else 0),
                               self._cb)  # fmt: skip

    def _read_on(self) -> None:
        if not self.reading and not self.lost:
            self.reading = True
            self._watch()

    def _read_off(self) -> None:
        if self.reading:
            self.reading = False
            self._watch()

    def _write_on(self) -> None:
        if not self.writing:
            self.writing = True
            self._watch()

    def _write_off(self) -> None:
        if self.writing:
            self.writing = False
            self._watch()

    # -- reading -----------------------------------------------------------
    def _on_readable(self) -> None:
        assert self.sock is not None
        try:
            data = self.sock.recv(MAX_READ)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            self._gone(e)
            return
        pipe = self.pipe
        pipe.last_activity = pipe.clock()
        if not data:
            self._read_off()
            pipe.note_end(self)
            self.got_eof = True
            self.peer.write_eof()
            pipe.maybe_finish()
            return
        n = len(data)
        self.received += n
        if self is pipe.client:
            pipe.counter.bytes_up += n
        else:
            pipe.counter.bytes_down += n
        self.peer.write(data)

    def pause(self) -> None:
        self.paused = True
        self._read_off()

    def resume(self) -> None:
        if self.paused:
            self.paused = False
            if not self.got_eof and not self.closing:
                self._read_on()

    # -- writing -----------------------------------------------------------
    def write(self, data: bytes) -> None:
        """Send ``data`` to this side's socket, buffering what the kernel refuses."""
        if self.lost or self.closing or self.sock is None:
            return
        if not self.buf:
            try:
                n = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError as e:
                self._gone(e)
                return
            if n == len(data):
                return
            data = data[n:]
            self._write_on()
        self.buf += data
        if len(self.buf) >= self.pipe.bufsize:
            self.peer.pause()

    def _on_writable(self) -> None:
        assert self.sock is not None
        if self.buf:
            try:
                n = self.sock.send(self.buf)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self._gone(e)
                return
            del self.buf[:n]
            if len(self.buf) <= self.pipe.bufsize // 4:
                self.peer.resume()
            if self.buf:
                return
        self._write_off()
        if self.closing:
            self._close_now()
        elif self.eof_pending:
            self._shutdown_wr()

    def write_eof(self) -> None:
        """Half-close our write direction (the other side sent EOF)."""
        if self.lost or self.closing or self.sock is None:
            return
        if self.buf:
            self.eof_pending = True
        else:
            self._shutdown_wr()

    def _shutdown_wr(self) -> None:
        self.eof_pending = False
        assert self.sock is not None
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            self._gone(e)

    # -- ending ------------------------------------------------------------
    def close(self) -> None:
        """Close once what is buffered for this side has been sent."""
        if self.lost or self.sock is None:
            return
        self.closing = True
        self._read_off()
        if not self.buf:
            self._close_now()

    def abort(self, rst: bool) -> None:
        """Close now, dropping the buffer; with ``rst`` the peer sees a reset."""
        if self.lost or self.sock is None:
            return
        if rst:
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
            except OSError:
                pass
        self.buf.clear()
        self._close_now()

    def _gone(self, exc: OSError) -> None:
        """The socket failed (reset, broken pipe): close it and reset the peer."""
        self.buf.clear()
        self._close_now(exc)

    def _close_now(self, exc: OSError | None = None) -> None:
        if self.reading or self.writing:
            self.reading = self.writing = False
            self._watch()
        assert self.sock is not None
        self.sock.close()
        self.lost = True
        self.pipe.side_lost(self, exc)

    def buffered(self) -> int:
        return 0 if self.lost else len(self.buf)


class Pipe:
    """One proxied TCP connection: client side, origin side and their state.

    :param bufsize: bytes buffered per direction before the other side's
        reading pauses.
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
        self.client.peer, self.origin.peer = self.origin, self.client
        self.last_activity = clock()
        self.reason = ""
        self.origin_silent = False  # the origin ended first, without a byte
        self._done = False
        self.poller: Poller  # set by start(); the sides use it after

    def start(self, poller: Poller, client: socket.socket, origin: socket.socket,
              first: bytes = b"") -> None:  # fmt: skip
        """Carry bytes between two connected non-blocking sockets watched by
        ``poller``, ``first`` (a PROXY header) sent to the origin before
        anything else.  The pipe owns both sockets from here on."""
        self.poller = poller
        self.origin.attach(origin)
        self.client.attach(client)
        if first:
            self.origin.write(first)

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

    def side_lost(self, side: _Side, exc: OSError | None) -> None:
        """One connection is gone: a reset is passed on as a reset, a close as a close."""
        self.note_end(side)
        peer = side.peer
        if exc is not None:
            self.reason = self.reason or f"{side.name} reset"
            peer.abort(rst=True)
        elif not peer.lost:
            self.reason = self.reason or f"{side.name} closed"
            peer.close()
        if self.client.lost and self.origin.lost and not self._done:
            self._done = True
            self.on_done(self)
