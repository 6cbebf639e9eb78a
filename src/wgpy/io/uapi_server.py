"""The UAPI listening socket, ``/var/run/wireguard/NAME.sock``.

The socket is created (0600, in a 0700 directory) before the daemon forks,
so it exists by the time ``wgpyd`` returns, which wg-quick relies on.  A
stale socket left by a dead process is replaced; a live one means the
interface is already served, and we refuse.
"""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Callable
from pathlib import Path

from wgpy.control.uapi import EINVAL, SOCKET_DIR, socket_path
from wgpy.io.loop import EventLoop

Handler = Callable[[str, list[str]], str]

# Bounds on one client's request: lines, bytes of one line, bytes in all.
# A set of 65,536 peers or hundreds of thousands of allowed IPs fits.
MAX_REQUEST_LINES = 1 << 20
MAX_LINE = 1 << 16
MAX_REQUEST_BYTES = 32 << 20
# Connections served at once (each holds a descriptor); see UapiServer.
MAX_CONNECTIONS = 256
RECV_SIZE = 1 << 16


class UapiInUse(OSError):
    pass


def listen(interface: str, directory: Path = SOCKET_DIR) -> socket.socket:
    """Create and bind the listening socket for ``interface``."""
    old = os.umask(0o077)
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    finally:
        os.umask(old)
    # Only root may reach a device's configuration (wireguard-go leaves 0755).
    os.chmod(directory, 0o700)
    path = socket_path(interface, directory)
    if path.exists():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink(missing_ok=True)  # stale: nobody is listening
        else:
            raise UapiInUse(f"{path} is in use by another process")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o077)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)
    os.chmod(path, 0o600)
    sock.listen(socket.SOMAXCONN)
    sock.setblocking(False)
    return sock


def adopt_listener(fd: int) -> socket.socket:
    """A listening unix socket a launcher opened for us (``WG_UAPI_FD``)."""
    sock = socket.socket(fileno=fd)
    if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise OSError(errno.EINVAL, "not a unix stream socket")
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()
        raise OSError(errno.EINVAL, "not a listening socket")
    sock.setblocking(False)
    return sock


class RequestReader:
    """The UAPI framing, sans I/O: bytes in, complete requests out.

    ``feed`` returns ``(op, lines)`` for each complete request: ``("get", [])``,
    ``("set", [...])`` or ``("invalid", [])`` (answered with ``errno=-22``).
    After an invalid request, an unknown operation or the end of input,
    ``done`` is set and the connection should be closed once the replies are
    out.  The real ``wg`` opens and closes an empty connection before each
    command: that, and any garbage, ends the connection quietly.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._state = "op"
        self._lines: list[str] = []
        self._size = 0  # bytes of the set request being read
        self.done = False

    def feed(self, data: bytes) -> list[tuple[str, list[str]]]:
        if self.done:
            return []
        if not data:
            self.done = True  # EOF: a request cut short is not answered
            return []
        buf = self._buf
        buf += data
        out: list[tuple[str, list[str]]] = []
        pos = 0
        while not self.done:
            if self._state == "get":
                if len(buf) <= pos:
                    break
                if buf[pos] == 0x0A:
                    out.append(("get", []))
                    self._state = "op"
                else:
                    out.append(("invalid", []))
                    self.done = True
                pos += 1
                continue
            end = buf.find(b"\n", pos)
            if end < 0:
                if len(buf) - pos > MAX_LINE:
                    if self._state == "set":
                        out.append(("invalid", []))
                    self.done = True
                break
            if end - pos >= MAX_LINE:
                if self._state == "set":
                    out.append(("invalid", []))
                self.done = True
                break
            line = bytes(buf[pos:end])
            pos = end + 1
            if self._state == "op":
                if line == b"get=1":
                    self._state = "get"
                elif line == b"set=1":
                    self._state = "set"
                    self._lines = []
                    self._size = 0
                else:
                    self.done = True
            elif not line:
                out.append(("set", self._lines))
                self._lines = []
                self._state = "op"
            elif (
                len(self._lines) >= MAX_REQUEST_LINES
                or self._size + len(line) + 1 > MAX_REQUEST_BYTES
            ):
                out.append(("invalid", []))
                self.done = True
            else:
                self._size += len(line) + 1
                self._lines.append(line.decode("utf-8", "replace"))
        del buf[:pos]
        return out


class UapiServer:
    """Serves the listening socket on an ``EventLoop``: one ``RequestReader`` per
    client, replies computed synchronously by ``handler(op, lines)``.

    Monitoring agents and configuration tools may poll one device at once,
    and a client may connect and then say nothing: every connection is
    accepted (the listen backlog is the system's maximum, as wireguard-go's),
    and when MAX_CONNECTIONS are open the one idle longest (nothing to send
    back) is closed to make room, so a crowd of silent clients cannot lock
    ``wg`` out.  Running out of file descriptors (EMFILE) is met the same way.
    """

    def __init__(self, loop: EventLoop, sock: socket.socket, handler: Handler) -> None:
        self.loop = loop
        self.handler = handler
        self._sock = sock
        self._conns: dict[int, _Connection] = {}
        loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        # One connection a wake-up: epoll is level-triggered, so a second one
        # (``wg`` opens an empty connection, then the real one) wakes the loop
        # again at once, where draining to EAGAIN would cost an exception in
        # the latency of every ``wg set``.
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE) and self._evict_idlest():
                return  # the next wake-up accepts it
            return
        if len(self._conns) >= MAX_CONNECTIONS:
            self._evict_idlest()
        conn.setblocking(False)
        c = _Connection(self, conn)
        self._conns[c.fd] = c
        self.loop.add_reader(c.fd, c.on_readable)

    def _evict_idlest(self) -> bool:
        """Close the connection that has been silent longest with nothing to send."""
        idle = [c for c in self._conns.values() if not c.out]
        if not idle:
            return False
        min(idle, key=lambda c: c.last_active).close()
        return True

    def forget(self, conn: _Connection) -> None:
        """Called by a connection that closed itself."""
        self._conns.pop(conn.fd, None)

    def close(self) -> None:
        self.loop.remove_reader(self._sock.fileno())
        for c in list(self._conns.values()):
            c.close()


class _Connection:
    def __init__(self, server: UapiServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.fd = sock.fileno()
        self.reader = RequestReader()
        self.out = bytearray()
        self.last_active = server.loop.time()

    def on_readable(self) -> None:
        self.last_active = self.server.loop.time()
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        for op, lines in self.reader.feed(data):
            if op == "invalid":
                reply = f"errno={EINVAL}\n\n"
            else:
                reply = self.server.handler(op, lines)
            self.out += reply.encode()
        self.flush()

    def flush(self) -> None:
        loop = self.server.loop
        while self.out:
            try:
                n = self.sock.send(self.out)
            except (BlockingIOError, InterruptedError):
                loop.add_writer(self.fd, self.flush)
                loop.remove_reader(self.fd)  # no more requests until the reply is out
                return
            except OSError:
                self.close()
                return
            del self.out[:n]
        loop.remove_writer(self.fd)
        if self.reader.done:
            self.close()
        else:
            loop.add_reader(self.fd, self.on_readable)

    def close(self) -> None:
        loop = self.server.loop
        loop.remove_reader(self.fd)
        loop.remove_writer(self.fd)
        self.server.forget(self)
        self.sock.close()
