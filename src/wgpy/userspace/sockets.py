"""Blocking, socket-like objects over the engine: TCP streams, listeners, UDP.

They behave as the standard library's sockets do where a program can tell:
timeouts (``settimeout``, ``TimeoutError``), non-blocking mode
(``BlockingIOError``), the exceptions a kernel's errno gives
(``ConnectionResetError`` after a RST, ``ConnectionRefusedError``...),
``recv`` returning ``b""`` at the end of the peer's data, ``shutdown``,
``makefile`` and the context manager.  They have no file descriptor
(``fileno()`` is -1): ``select`` cannot wait on them; use threads or the
asyncio API (``wgpy.userspace.aio``).
"""

from __future__ import annotations

import errno
import io
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from wgpy.netstack import Ready, State, TcpConnection, TcpListener, UdpEndpoint
from wgpy.netstack.ip import text
from wgpy.netstack.tcp import error_for
from wgpy.userspace.engine import Engine, Waiter

Address = tuple[str, int]

_KEEPALIVE_OPTS = {
    getattr(socket, "TCP_KEEPIDLE", 4): "idle",
    getattr(socket, "TCP_KEEPINTVL", 5): "interval",
    getattr(socket, "TCP_KEEPCNT", 6): "probes",
}
# Options that a kernel socket takes and that change nothing here: accepted so
# that libraries which set them (TCP_NODELAY above all) work unchanged.
_IGNORED_OPTS = {
    (socket.IPPROTO_TCP, socket.TCP_NODELAY),
    (socket.SOL_SOCKET, socket.SO_REUSEADDR),
    (socket.SOL_SOCKET, getattr(socket, "SO_REUSEPORT", 15)),
    (socket.SOL_SOCKET, socket.SO_SNDBUF),
    (socket.SOL_SOCKET, socket.SO_RCVBUF),
}


class _Blocking(Waiter):
    """A condition on the engine's lock, and the socket timeout rules."""

    def __init__(self, engine: Engine, timeout: float | None) -> None:
        self._engine = engine
        self._cond = threading.Condition(engine.lock)
        self._timeout = timeout
        self._closed = False

    def ready(self, flags: Ready) -> None:
        self._cond.notify_all()

    def settimeout(self, value: float | None) -> None:
        if value is not None and value < 0:
            raise ValueError("Timeout value out of range")
        self._timeout = value

    def gettimeout(self) -> float | None:
        return self._timeout

    def setblocking(self, flag: bool) -> None:
        self._timeout = None if flag else 0.0

    def fileno(self) -> int:
        return -1

    def wait_until(self, until: Callable[[], bool], timeout: float | None, what: str) -> None:
        """Wait, holding the engine's lock, until ``until()``.

        :raises BlockingIOError: non-blocking and not ready.
        :raises TimeoutError: not ready within ``timeout``."""
        if until():
            return
        if timeout == 0:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        engine = self._engine
        engine.settle()  # what this call queued must go out before we sleep
        deadline = None if timeout is None else time.monotonic() + timeout
        while not until():
            if engine.closed:
                raise OSError(errno.EBADF, "the tunnel is closed")
            if self._closed:
                raise OSError(errno.EBADF, "Bad file descriptor")
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                raise TimeoutError(f"timed out ({what})")
            self._cond.wait(remaining)

    def _check_open(self) -> None:
        if self._closed:
            raise OSError(errno.EBADF, "Bad file descriptor")


class TunnelSocket(_Blocking):
    """A connected TCP stream through the tunnel (``Tunnel.create_connection``,
    ``TunnelListener.accept``)."""

    type = socket.SOCK_STREAM
    proto = socket.IPPROTO_TCP

    def __init__(self, engine: Engine, conn: TcpConnection, timeout: float | None) -> None:
        super().__init__(engine, timeout)
        self.conn = conn
        self.family = socket.AF_INET6 if conn.path.v6 else socket.AF_INET
        self._shut_rd = False
        self._io_refs = 0
        self._close_pending = False
        conn.user = self

    def __repr__(self) -> str:
        state = "closed" if self._closed else self.conn.state.value
        return (f"<TunnelSocket {self._name(self.conn.path.src, self.conn.lport)} -> "
                f"{self._name(self.conn.path.dst, self.conn.rport)} {state}>")

    @staticmethod
    def _name(addr: bytes, port: int) -> str:
        t = text(addr)
        return f"[{t}]:{port}" if ":" in t else f"{t}:{port}"

    def __enter__(self) -> TunnelSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- data ---------------------------------------------------------------------------
    def send(self, data: bytes | bytearray | memoryview, flags: int = 0) -> int:
        self._check_open()
        conn = self.conn
        timeout = 0.0 if flags & socket.MSG_DONTWAIT else self._timeout
        with self._engine.locked():
            self.wait_until(lambda: conn.send_space > 0 or conn.error is not None
                       or conn.fin_queued or conn.state is State.CLOSED, timeout, "send")
            return conn.send(data, self._engine.now())

    def sendall(self, data: bytes | bytearray | memoryview, flags: int = 0) -> None:
        self._check_open()
        mv = memoryview(data).cast("B")
        conn = self.conn
        deadline = None if self._timeout is None else time.monotonic() + self._timeout
        with self._engine.locked():
            while mv:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                if left == 0.0 and self._timeout:
                    raise TimeoutError("timed out (sendall)")
                self.wait_until(lambda: conn.send_space > 0 or conn.error is not None
                           or conn.fin_queued or conn.state is State.CLOSED, left, "sendall")
                n = conn.send(mv, self._engine.now())
                mv = mv[n:]

    def recv(self, bufsize: int, flags: int = 0) -> bytes:
        if bufsize < 0:
            raise ValueError("negative buffersize in recv")
        self._check_open()
        conn = self.conn
        timeout = 0.0 if flags & socket.MSG_DONTWAIT else self._timeout
        with self._engine.locked():
            self.wait_until(self._can_read, timeout, "recv")
            if conn.readable:
                if flags & socket.MSG_PEEK:
                    return bytes(conn.rcvbuf[:bufsize])
                return conn.recv(bufsize, self._engine.now())
            if conn.error is not None and not conn.peer_closed:
                raise error_for(conn.error)
            return b""

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        self._check_open()
        mv = memoryview(buffer).cast("B")
        if nbytes:
            mv = mv[:nbytes]
        conn = self.conn
        timeout = 0.0 if flags & socket.MSG_DONTWAIT else self._timeout
        with self._engine.locked():
            self.wait_until(self._can_read, timeout, "recv_into")
            if conn.readable:
                return conn.recv_into(mv, self._engine.now())
            if conn.error is not None and not conn.peer_closed:
                raise error_for(conn.error)
            return 0

    def _can_read(self) -> bool:
        c = self.conn
        return bool(c.readable) or c.peer_closed or c.error is not None or self._shut_rd or (
            c.state is State.CLOSED)

    # -- the rest of the socket interface ----------------------------------------------
    def shutdown(self, how: int) -> None:
        self._check_open()
        with self._engine.locked() as now:
            if how in (socket.SHUT_RD, socket.SHUT_RDWR):
                self._shut_rd = True
                self._cond.notify_all()
            if how in (socket.SHUT_WR, socket.SHUT_RDWR):
                self.conn.shutdown(now)

    def close(self) -> None:
        """Close (a FIN after what is queued; a RST when unread data is left, as
        a kernel does).  The connection finishes closing in the background.
        While files from ``makefile`` are open, that waits for the last one
        (as ``socket.close`` does)."""
        if self._closed:
            return
        if self._io_refs > 0:
            self._close_pending = True
            return
        self._closed = True
        if self._engine.closed:
            return
        with self._engine.locked() as now:
            self.conn.user = None
            self.conn.close(now)
            self._cond.notify_all()

    def file_closed(self) -> None:
        """A file from ``makefile`` was closed (the last one lets a pending
        ``close`` happen)."""
        self._io_refs -= 1
        if self._io_refs <= 0 and self._close_pending:
            self.close()

    def getpeername(self) -> Address:
        return text(self.conn.path.dst), self.conn.rport

    def getsockname(self) -> Address:
        return text(self.conn.path.src), self.conn.lport

    def setsockopt(self, level: int, option: int, value: int | bytes) -> None:
        if level == socket.SOL_SOCKET and option == socket.SO_KEEPALIVE:
            with self._engine.locked() as now:
                self.conn.set_keepalive(bool(value), now)
            return
        if level == socket.IPPROTO_TCP and option in _KEEPALIVE_OPTS:
            if not isinstance(value, int) or value <= 0:
                raise OSError(errno.EINVAL, "Invalid argument")
            with self._engine.locked() as now:
                self.conn.set_keepalive(self.conn.keepalive, now,
                                        **{_KEEPALIVE_OPTS[option]: value})
            return
        if (level, option) in _IGNORED_OPTS:
            return
        raise OSError(errno.ENOPROTOOPT, "Protocol not available")

    def getsockopt(self, level: int, option: int, buflen: int = 0) -> int:
        if level == socket.SOL_SOCKET and option == socket.SO_ERROR:
            return self.conn.error or 0
        if level == socket.SOL_SOCKET and option == socket.SO_KEEPALIVE:
            return int(self.conn.keepalive)
        if level == socket.IPPROTO_TCP and option == socket.TCP_NODELAY:
            return 1
        raise OSError(errno.ENOPROTOOPT, "Protocol not available")

    def makefile(self, mode: str = "r", buffering: int | None = None, *,
                 encoding: str | None = None, errors: str | None = None,
                 newline: str | None = None) -> Any:
        """A file object over the stream, as ``socket.makefile`` makes one."""
        if not set(mode) <= {"r", "w", "b"}:
            raise ValueError(f"invalid mode {mode!r} (only r, w, b allowed)")
        writing = "w" in mode
        reading = "r" in mode or not writing
        raw = StreamIO(self, ("r" if reading else "") + ("w" if writing else ""))
        self._io_refs += 1
        if buffering is None:
            buffering = -1
        if buffering < 0:
            buffering = io.DEFAULT_BUFFER_SIZE
        if buffering == 0:
            if "b" not in mode:
                raise ValueError("unbuffered streams must be binary")
            return raw
        buffer: Any
        if reading and writing:
            buffer = io.BufferedRWPair(raw, raw, buffering)
        elif reading:
            buffer = io.BufferedReader(raw, buffering)
        else:
            buffer = io.BufferedWriter(raw, buffering)
        if "b" in mode:
            return buffer
        text_io = io.TextIOWrapper(buffer, encoding, errors, newline)
        text_io.mode = mode  # type: ignore[misc]
        return text_io


class StreamIO(io.RawIOBase):
    """The raw file under ``TunnelSocket.makefile`` (socket.SocketIO's twin)."""

    def __init__(self, sock: TunnelSocket, mode: str) -> None:
        super().__init__()
        self._sock = sock
        self._mode = mode

    def readinto(self, b: Any) -> int:
        return self._sock.recv_into(b)

    def write(self, b: Any) -> int:
        return self._sock.send(b)

    def readable(self) -> bool:
        return "r" in self._mode

    def writable(self) -> bool:
        return "w" in self._mode

    def close(self) -> None:
        if not self.closed:
            self._sock.file_closed()
        super().close()


class TunnelListener(_Blocking):
    """A listening TCP port on the tunnel's address (``Tunnel.listen``)."""

    type = socket.SOCK_STREAM

    def __init__(self, engine: Engine, listener: TcpListener, timeout: float | None) -> None:
        super().__init__(engine, timeout)
        self.listener = listener
        listener.user = self

    def __enter__(self) -> TunnelListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def accept(self) -> tuple[TunnelSocket, Address]:
        self._check_open()
        lst = self.listener
        with self._engine.locked():
            self.wait_until(lambda: bool(lst.queue) or lst.closed, self._timeout, "accept")
            conn = lst.accept()
            if conn is None:
                raise OSError(errno.EBADF, "Bad file descriptor")
            sock = TunnelSocket(self._engine, conn, None)
            if conn.readable or conn.peer_closed or conn.error is not None:
                sock.ready(Ready.READABLE)
            return sock, (text(conn.path.dst), conn.rport)

    def getsockname(self) -> Address:
        addr = self.listener.local
        return (text(addr) if addr is not None else "0.0.0.0"), self.listener.port

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._engine.closed:
            return
        with self._engine.locked() as now:
            self._engine.stack.close_listener(self.listener, now)
            self._cond.notify_all()


class TunnelUdpSocket(_Blocking):
    """A UDP socket on the tunnel (``Tunnel.udp_socket``)."""

    type = socket.SOCK_DGRAM

    def __init__(self, engine: Engine, ep: UdpEndpoint, resolve: Callable[[str], bytes],
                 timeout: float | None) -> None:
        super().__init__(engine, timeout)
        self.ep = ep
        self._resolve = resolve
        self._peer: tuple[bytes, int] | None = None
        ep.user = self

    def __enter__(self) -> TunnelUdpSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self, address: Address) -> None:
        """Send to ``address`` by default, and receive only from it."""
        self._peer = (self._resolve(address[0]), int(address[1]))

    def getsockname(self) -> Address:
        local = self.ep.local
        return (text(local) if local is not None else "0.0.0.0"), self.ep.port

    def getpeername(self) -> Address:
        if self._peer is None:
            raise OSError(errno.ENOTCONN, "Transport endpoint is not connected")
        return text(self._peer[0]), self._peer[1]

    def sendto(self, data: bytes | bytearray | memoryview, address: Address) -> int:
        self._check_open()
        remote = self._resolve(address[0])
        with self._engine.locked():
            self._engine.stack.udp_send(self.ep, remote, int(address[1]), data)
        return len(data)

    def send(self, data: bytes | bytearray | memoryview) -> int:
        if self._peer is None:
            raise OSError(errno.EDESTADDRREQ, "Destination address required")
        return self.sendto(data, (text(self._peer[0]), self._peer[1]))

    def recvfrom(self, bufsize: int) -> tuple[bytes, Address]:
        self._check_open()
        ep = self.ep
        with self._engine.locked():
            while True:
                self.wait_until(lambda: bool(ep.queue) or ep.error is not None, self._timeout,
                           "recvfrom")
                if ep.error is not None and not ep.queue:
                    code, ep.error = ep.error, None
                    raise error_for(code)
                item = ep.take()
                assert item is not None
                data, src, port = item
                if self._peer is None or (src, port) == self._peer:
                    return data[:bufsize], (text(src), port)

    def recv(self, bufsize: int) -> bytes:
        return self.recvfrom(bufsize)[0]

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._engine.closed:
            return
        with self._engine.locked():
            self._engine.stack.udp_close(self.ep)
            self._cond.notify_all()
