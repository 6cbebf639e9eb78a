"""TLS over a tunnel socket (``ssl.SSLObject`` on memory BIOs).

A ``TunnelSocket`` has no file descriptor, so ``SSLContext.wrap_socket``
cannot take it; ``wrap_bio`` can.  The context decides everything about
verification, exactly as it would for a kernel socket.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import Callable
from typing import TypeVar

from wgpy.userspace.sockets import TunnelSocket

TLS_READ = 1 << 16
T = TypeVar("T")


class TlsStream:
    """A TLS client (or server) session over ``sock``; the handshake runs in
    the constructor.  :raises ssl.SSLError: the handshake failed (e.g. the
    certificate did not verify)."""

    def __init__(self, sock: TunnelSocket, context: ssl.SSLContext,
                 server_hostname: str | None = None, server_side: bool = False) -> None:
        self.sock = sock
        self._in = ssl.MemoryBIO()
        self._out = ssl.MemoryBIO()
        self.ssl = context.wrap_bio(self._in, self._out, server_side=server_side,
                                    server_hostname=server_hostname)
        self._retry(self.ssl.do_handshake)

    def _flush(self) -> None:
        data = self._out.read()
        if data:
            self.sock.sendall(data)

    def _retry(self, op: Callable[[], T]) -> T:
        while True:
            try:
                result = op()
            except ssl.SSLWantReadError:
                self._flush()
                data = self.sock.recv(TLS_READ)
                if data:
                    self._in.write(data)
                else:
                    self._in.write_eof()
                continue
            except ssl.SSLWantWriteError:
                self._flush()
                continue
            self._flush()
            return result

    def recv(self, max_bytes: int = TLS_READ) -> bytes:
        """Up to ``max_bytes`` of plaintext; b"" at the end of the stream."""
        try:
            return self._retry(functools.partial(self.ssl.read, max_bytes))
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            return b""

    def sendall(self, data: bytes | bytearray | memoryview) -> None:
        mv = memoryview(data)
        while mv:
            n = self._retry(functools.partial(self.ssl.write, mv))
            mv = mv[n:]

    def settimeout(self, value: float | None) -> None:
        self.sock.settimeout(value)

    def close(self) -> None:
        try:
            self.ssl.unwrap()
            self._flush()
        except (ssl.SSLError, OSError):
            pass
        self.sock.close()
