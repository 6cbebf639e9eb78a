"""The UAPI listening socket, ``/var/run/wireguard/NAME.sock``.

The socket is created (0600, in a 0700 directory) before the daemon forks,
so it exists by the time ``wgpyd`` returns, which wg-quick relies on.  A
stale socket left by a dead process is replaced; a live one means the
interface is already served, and we refuse.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path

from wgpy.control.uapi import EINVAL, SOCKET_DIR, socket_path
from wgpy.io.loop import EventLoop

Handler = Callable[[str, list[str]], str]

MAX_REQUEST_LINES = 1 << 20
MAX_LINE = 1 << 16
MAX_CONNECTIONS = 64
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
    sock.listen(16)
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
                else:
                    self.done = True
            elif not line:
                out.append(("set", self._lines))
                self._lines = []
                self._state = "op"
            elif len(self._lines) >= MAX_REQUEST_LINES:
                out.append(("invalid", []))
                self.done = True
            else:
                self._lines.append(line.decode("utf-8", "replace"))
        del buf[:pos]
        return out


class UapiServer:
    """Serves the listening socket on an ``EventLoop``: one ``RequestReader`` per
    client, replies computed synchronously by ``handler(op, lines)``."""

    def __init__(self, loop: EventLoop, sock: socket.socket, handler: Handler) -> None:
        self._loop = loop
        self._sock = sock
        self._handler = handler
        self._conns: dict[int, _Connection] = {}
        loop.add_reader(sock.fileno(), self._accept)

    def _accept(self) -> None:
        # One connection a wake-up: epoll is level-triggered, so a second one
        # (``wg`` opens an empty connection, then the real one) wakes the loop
        # again at once, where draining to EAGAIN costs an exception: ~40 µs
        # when the daemon was asleep, in the latency of every ``wg set``.
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            return  # e.g. EMFILE: the client sees its connection refused
        if len(self._conns) >= MAX_CONNECTIONS:
            conn.close()
            return
        conn.setblocking(False)
        c = _Connection(self, conn)
        self._conns[conn.fileno()] = c
        self._loop.add_reader(conn.fileno(), c.on_readable)

    def close(self) -> None:
        self._loop.remove_reader(self._sock.fileno())
        for c in list(self._conns.values()):
            c.close()


class _Connection:
    def __init__(self, server: UapiServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.fd = sock.fileno()
        self.reader = RequestReader()
        self.out = bytearray()

    def on_readable(self) -> None:
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
                reply = self.server._handler(op, lines)
            self.out += reply.encode()
        self.flush()

    def flush(self) -> None:
        loop = self.server._loop
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
        loop = self.server._loop
        loop.remove_reader(self.fd)
        loop.remove_writer(self.fd)
        self.server._conns.pop(self.fd, None)
        self.sock.close()
