"""The UDP side: one socket per address family on the listen port.

As wireguard-go's ``conn.StdNetBind``: an IPv4 socket and an IPv6-only
socket share the port (chosen by the kernel when 0).  Receive buffers are
raised past ``rmem_max`` with ``SO_RCVBUFFORCE`` when we are root, because
the default 212 KB drops datagrams at speed.  ``SO_MARK`` carries the fwmark.
"""

from __future__ import annotations

import errno
import socket
from collections import Counter
from typing import Final

from wgpy.protocol.events import Endpoint

SOCKET_BUFFER: Final = 7 << 20
SO_RCVBUFFORCE: Final = 33
SO_SNDBUFFORCE: Final = 32
SO_MARK: Final = 36



def _raise_buffers(s: socket.socket) -> None:
    for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
        try:
            s.setsockopt(socket.SOL_SOCKET, force, SOCKET_BUFFER)
        except PermissionError:
            s.setsockopt(socket.SOL_SOCKET, plain, SOCKET_BUFFER)


class UdpBind:
    """The bound UDP sockets of a device."""

    def __init__(self, v4: socket.socket | None, v6: socket.socket | None, port: int) -> None:
        self.v4 = v4
        self.v6 = v6
        self.port = port

    @classmethod
    def open(cls, port: int, fwmark: int = 0) -> UdpBind:
        """Bind both families on ``port`` (0: any free port for both)."""
        for _ in range(10 if port == 0 else 1):
            v4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                v4.bind(("0.0.0.0", port))
            except OSError:
                v4.close()
                raise
            actual = v4.getsockname()[1]
            v6: socket.socket | None = None
            try:
                v6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
                v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                v6.bind(("::", actual))
            except OSError as e:
                if v6 is not None:
                    v6.close()
                v6 = None
                if e.errno == errno.EADDRINUSE and port == 0:
                    v4.close()
                    continue  # the v6 port was taken: try another pair
                if e.errno not in (errno.EAFNOSUPPORT, errno.EADDRNOTAVAIL):
                    v4.close()
                    raise
            bind = cls(v4, v6, actual)
            for s in bind.sockets():
                s.setblocking(False)
                _raise_buffers(s)
            if fwmark:
                # A new socket has mark 0, and SO_MARK needs CAP_NET_ADMIN even to
                # set 0: an unprivileged user (wgpy.userspace) never sets it.
                bind.set_fwmark(fwmark)
            return bind
        raise OSError(errno.EADDRINUSE, "no free port for both IPv4 and IPv6")

    def sockets(self) -> list[socket.socket]:
        return [s for s in (self.v4, self.v6) if s is not None]

    def set_fwmark(self, mark: int) -> None:
        for s in self.sockets():
            s.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)

    def socket_for(self, endpoint: Endpoint) -> socket.socket | None:
        return self.v6 if ":" in endpoint[0] else self.v4

    def send(self, data: bytes | bytearray, endpoint: Endpoint, errors: Counter[int]) -> bool:
        """Send one datagram; False when it could not be sent: then it is dropped,
        as UDP drops, and counted in ``errors`` by errno."""
        s = self.v6 if ":" in endpoint[0] else self.v4
        if s is None:
            errors[errno.EAFNOSUPPORT] += 1
            return False
        try:
            s.sendto(data, endpoint)
        except OSError as e:
            errors[e.errno or 0] += 1
            return False
        return True

    def close(self) -> None:
        for s in self.sockets():
            s.close()
        self.v4 = self.v6 = None
