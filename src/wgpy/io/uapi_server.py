"""The UAPI listening socket, ``/var/run/wireguard/NAME.sock``, and its clients.

The socket is created (0600, in a 0700 directory) before the daemon forks,
so it exists by the time ``wgpyd`` returns, which wg-quick relies on.  A
stale socket left by a dead process is replaced; a live one means the
interface is already served, and we refuse.  A launcher may pass a socket
it made instead (``WG_UAPI_FD``, see ``adopt_listener``).

Clients are served on the daemon's one event loop, so none of them can hold
it: wireguard-go gives each connection a goroutine, we give each a
``RequestReader`` and an output buffer, and never block on either.  What a
client can still take is a file descriptor and memory, so both are bounded:

* the backlog is the system's maximum (``net.core.somaxconn``), as Go's
  listeners use, so a burst of clients is queued by the kernel, not refused;
* at most ``MAX_CONNECTIONS`` are open; a new one closes the connection
  that has been idle longest (idle: no byte read or written), and one idle
  for ``IDLE_TIMEOUT`` is closed anyway, so clients that connect and send
  nothing, stop half-way or never read cannot starve ``wg``;
* a request is at most ``MAX_REQUEST_BYTES`` from ``set=1`` to its blank
  line (and ``MAX_REQUEST_LINES`` lines of under ``MAX_LINE`` bytes), and
  one request is answered at a time: the next is read once the last reply
  is out, so a client that does not read holds one reply, not one per
  request it sent.

A request beyond the bounds is answered ``errno=-22``; the connection is
then half-closed and its input discarded until the client has sent it all
(at most ``MAX_DISCARD`` bytes, within the idle timeout), so the client
gets to read the answer instead of a broken pipe.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from collections import deque
from collections.abc import Callable
from pathlib import Path

from wgpy.control.uapi import EINVAL, EIO, SOCKET_DIR, socket_path
from wgpy.io.loop import EventLoop, Timer

Handler = Callable[[str, list[str]], str]
Request = tuple[str, list[str]]

MAX_REQUEST_LINES = 1 << 20
MAX_LINE = 1 << 16
# A set of the largest configuration the tests load (130,560 allowed IPs,
# tests/hardening/test_kernel_scenarios.py) is about 3 MB; 16 MiB leaves room
# for five times that while bounding what one client makes us hold.
MAX_REQUEST_BYTES = 16 << 20
MAX_DISCARD = 16 * MAX_REQUEST_BYTES
MAX_CONNECTIONS = 128
IDLE_TIMEOUT = 60.0
# After EMFILE/ENFILE with no client to close: try accepting again this much later.
ACCEPT_RETRY = 0.1
RECV_SIZE = 1 << 16
# Operations that are one line and a blank line: get=1, and wgpy's stats=1.
_BARE_OPS = ("get", "stats")


class UapiInUse(OSError):
    pass


class UapiFdError(OSError):
    """An inherited UAPI socket (``WG_UAPI_FD``) that cannot be used."""


def _backlog() -> int:
    # What Go's listeners ask for; the kernel caps any larger value at it.
    try:
        return max(int(Path("/proc/sys/net/core/somaxconn").read_text()), socket.SOMAXCONN)
    except (OSError, ValueError):
        return socket.SOMAXCONN


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
    sock.listen(_backlog())
    sock.setblocking(False)
    return sock


def adopt_listener(fd: int) -> tuple[socket.socket, Path]:
    """A listening socket a launcher made and left open as ``fd`` (``WG_UAPI_FD``),
    and the path it is bound to (the daemon exits when that path goes away).

    :raises UapiFdError: ``fd`` is not a listening UNIX stream socket bound to a
        path; the message says which.
    """
    try:
        if not stat.S_ISSOCK(os.fstat(fd).st_mode):
            raise UapiFdError(errno.ENOTSOCK, f"file descriptor {fd} is not a socket")
        sock = socket.socket(fileno=fd)
    except UapiFdError:
        raise
    except OSError as e:
        raise UapiFdError(e.errno, f"file descriptor {fd}: {e.strerror}") from None
    try:
        if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_STREAM:
            raise UapiFdError(errno.EINVAL, f"file descriptor {fd} is not a UNIX stream socket")
        if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
            raise UapiFdError(errno.EINVAL, f"file descriptor {fd} is not listening")
        name = sock.getsockname()
        if not isinstance(name, str) or not name or name.startswith("\0"):
            raise UapiFdError(errno.EINVAL, f"file descriptor {fd} is not bound to a path")
        try:
            on_disk = os.stat(name).st_mode
        except OSError:
            on_disk = 0
        if not stat.S_ISSOCK(on_disk):
            raise UapiFdError(errno.ENOENT, f"file descriptor {fd} is bound to {name}, "
                              "which is no longer there")
    except BaseException:
        sock.detach()  # the launcher's fd: an error leaves it as it was
        raise
    sock.set_inheritable(False)
    sock.setblocking(False)
    return sock, Path(name)


class RequestReader:
    """The UAPI framing, sans I/O: bytes in, complete requests out.

    ``feed`` returns ``(op, lines)`` for each complete request: ``("get", [])``,
    ``("stats", [])`` (wgpy's extension, see ``control.uapi``), ``("set",
    [...])`` or ``("invalid", [])`` (answered with ``errno=-22``: a get or
    stats with more than its blank line, or a set over the bounds).  After an
    invalid request, an unknown operation or the end of input, ``done`` is set
    and the connection should be closed once the replies are out; ``eof``
    says whether the input ended.  The real ``wg`` opens and closes an empty
    connection before each command: that, and any garbage, ends the
    connection quietly.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._state = "op"
        self._lines: list[str] = []
        self._size = 0
        self.done = False
        self.eof = False

    def feed(self, data: bytes) -> list[Request]:
        if self.done:
            return []
        if not data:
            self.done = self.eof = True  # a request cut short is not answered
            return []
        buf = self._buf
        buf += data
        out: list[Request] = []
        pos = 0
        while not self.done:
            if self._state in _BARE_OPS:
                if len(buf) <= pos:
                    break
                if buf[pos] == 0x0A:
                    out.append((self._state, []))
                    self._state = "op"
                else:
                    out.append(("invalid", []))
                    self.done = True
                pos += 1
                continue
            end = buf.find(b"\n", pos)
            if end < 0:
                if len(buf) - pos > MAX_LINE:
                    self._refuse(out)
                break
            if end - pos >= MAX_LINE:
                self._refuse(out)
                break
            line = bytes(buf[pos:end])
            pos = end + 1
            if self._state == "op":
                if line == b"get=1":
                    self._state = "get"
                elif line == b"stats=1":
                    self._state = "stats"
                elif line == b"set=1":
                    self._state = "set"
                    self._lines = []
                    self._size = len(line) + 1
                else:
                    self.done = True
                continue
            if not line:
                out.append(("set", self._lines))
                self._lines = []
                self._state = "op"
                continue
            self._size += len(line) + 1
            # The request's bytes from ``set=1`` to the blank line that must follow.
            if len(self._lines) >= MAX_REQUEST_LINES or self._size + 1 > MAX_REQUEST_BYTES:
                self._refuse(out)
            else:
                self._lines.append(line.decode("utf-8", "replace"))
        del buf[:pos]
        return out

    def _refuse(self, out: list[Request]) -> None:
        """A request over the bounds: a set is answered errno=-22, garbage is not."""
        if self._state == "set":
            out.append(("invalid", []))
            self._lines = []
        self._buf.clear()
        self.done = True


class UapiServer:
    """Serves the listening socket on an ``EventLoop``: one ``Connection`` per
    client, replies computed synchronously by ``handler(op, lines)``.

    ``closed_idle`` counts the connections closed to make room or for being
    idle ``idle_timeout`` seconds; ``connections`` is how many are open."""

    def __init__(
        self,
        loop: EventLoop,
        sock: socket.socket,
        handler: Handler,
        *,
        max_connections: int = MAX_CONNECTIONS,
        idle_timeout: float = IDLE_TIMEOUT,
    ) -> None:
        self.loop = loop
        self.handler = handler
        self.max_connections = max_connections
        self.idle_timeout = idle_timeout
        self.closed_idle = 0
        self._sock = sock
        # Least recently active first (``touch`` moves a connection to the end).
        self._conns: dict[int, Connection] = {}
        self._sweep: Timer | None = None
        self._accepting = True
        loop.add_reader(sock.fileno(), self._accept)

    @property
    def connections(self) -> int:
        return len(self._conns)

    def _accept(self) -> None:
        # One connection a wake-up: epoll is level-triggered, so a second one
        # (``wg`` opens an empty connection, then the real one) wakes the loop
        # again at once, and draining to EAGAIN would cost an exception in the
        # latency of every ``wg set``.  A burst is taken one per loop round,
        # between the data path's events.
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as e:
            if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                # Out of descriptors: make room, or (nothing of ours to close)
                # stop polling the socket for a moment instead of spinning on it.
                if self._conns:
                    self._close_oldest()
                else:
                    self._pause_accepting()
            return
        if len(self._conns) >= self.max_connections:
            self._close_oldest()
        conn.setblocking(False)
        c = Connection(self, conn)
        self._conns[c.fd] = c
        c.last_active = self.loop.time()
        c.start()
        if self._sweep is None:
            self._sweep = self.loop.call_later(self.idle_timeout, self._expire_idle)

    def touch(self, conn: Connection) -> None:
        """Call after a connection read or wrote something: it is not idle."""
        conn.last_active = self.loop.time()
        if self._conns.pop(conn.fd, None) is not None:
            self._conns[conn.fd] = conn

    def forget(self, conn: Connection) -> None:
        """Call when a connection is closed."""
        if self._conns.get(conn.fd) is conn:
            del self._conns[conn.fd]

    def _close_oldest(self) -> None:
        oldest = next(iter(self._conns.values()))
        self.closed_idle += 1
        oldest.close()

    def _expire_idle(self) -> None:
        self._sweep = None
        deadline = self.loop.time() - self.idle_timeout
        while self._conns:
            oldest = next(iter(self._conns.values()))
            if oldest.last_active > deadline:
                when = oldest.last_active + self.idle_timeout
                self._sweep = self.loop.call_at(when, self._expire_idle)
                return
            self.closed_idle += 1
            oldest.close()

    def _pause_accepting(self) -> None:
        if self._accepting:
            self._accepting = False
            self.loop.remove_reader(self._sock.fileno())
            self.loop.call_later(ACCEPT_RETRY, self._resume_accepting)

    def _resume_accepting(self) -> None:
        if not self._accepting and self._sock.fileno() >= 0:
            self._accepting = True
            self.loop.add_reader(self._sock.fileno(), self._accept)

    def close(self) -> None:
        self._accepting = False
        self.loop.remove_reader(self._sock.fileno())
        if self._sweep is not None:
            self._sweep.cancel()
            self._sweep = None
        for c in list(self._conns.values()):
            c.close()


class Connection:
    """One client: read a request, answer it, then read the next.

    Reading stops while a reply is waiting to go out (or requests already read
    wait for their turn), which bounds what a client that never reads can
    make us hold to one reply."""

    def __init__(self, server: UapiServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.fd = sock.fileno()
        self.reader = RequestReader()
        self.pending: deque[Request] = deque()
        self.out = bytearray()
        self.last_active = 0.0
        self.closed = False
        self._discarded = 0

    def start(self) -> None:
        self.server.loop.add_reader(self.fd, self.on_readable)

    def on_readable(self) -> None:
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""  # a reset is an end of input
        if data:
            self.server.touch(self)
        self.pending.extend(self.reader.feed(data))
        self._serve()

    def on_writable(self) -> None:
        if self._send():
            self._serve()

    def _send(self) -> bool:
        """Send what we can of ``out``; False once the connection is closed."""
        try:
            n = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            self.close()
            return False
        if n:
            del self.out[:n]
            self.server.touch(self)
        return True

    def _serve(self) -> None:
        """Answer waiting requests one at a time, each once the last is sent; then
        wait for the client to read (writer), for more input (reader), or finish."""
        loop = self.server.loop
        while not self.closed:
            if self.out:
                if not self._send():
                    return
                if self.out:
                    loop.remove_reader(self.fd)
                    loop.add_writer(self.fd, self.on_writable)
                    return
                continue
            if not self.pending:
                break
            op, lines = self.pending.popleft()
            self.out += self._answer(op, lines).encode()
        if self.closed:
            return
        loop.remove_writer(self.fd)
        if not self.reader.done:
            loop.add_reader(self.fd, self.on_readable)
        elif self.reader.eof:
            self.close()
        else:
            self._finish()

    def _answer(self, op: str, lines: list[str]) -> str:
        if op == "invalid":
            return f"errno={EINVAL}\n\n"
        try:
            return self.server.handler(op, lines)
        except Exception:
            # A bug in the handler: the client gets an error rather than silence,
            # the loop reports the traceback, and this connection ends.
            self.pending.clear()
            self.reader.done = True
            self.out += f"errno={EIO}\n\n".encode()
            self.server.loop.call_later(0, self._serve)
            raise

    def _finish(self) -> None:
        """The last reply is out but the client may still be sending (a request
        over the bounds, garbage): half-close, so it reads the reply and EOF,
        and drop its input until it is done."""
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_WR)
        self.server.loop.add_reader(self.fd, self._discard)

    def _discard(self) -> None:
        try:
            data = self.sock.recv(RECV_SIZE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        self._discarded += len(data)
        if not data or self._discarded > MAX_DISCARD:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        loop = self.server.loop
        loop.remove_reader(self.fd)
        loop.remove_writer(self.fd)
        self.server.forget(self)
        self.sock.close()
