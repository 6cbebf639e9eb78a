"""``IP_TRANSPARENT`` sockets: the TPROXY listeners and UDP reply sockets.

One TCP and one UDP listener per address family serve every port of every
published prefix: the nftables ``tproxy`` statement hands them packets whose
destination is any address and port of the prefix.  An accepted TCP socket's
``getsockname()`` is the address the client dialled; for UDP the kernel
passes it in an ``IP_ORIGDSTADDR``/``IPV6_ORIGDSTADDR`` control message.
Replies to a UDP client must come *from* that original address, so each UDP
flow gets a transparent socket bound to it and connected to the client; the
TPROXY lookup then prefers that connected socket for the flow's later packets.
"""

from __future__ import annotations

import socket
import struct

from wgpy.control.endpoint import Endpoint

SOL_IP = 0
SOL_IPV6 = 41
IP_TRANSPARENT = 19
IP_RECVORIGDSTADDR = 20
IP_ORIGDSTADDR = IP_RECVORIGDSTADDR
IPV6_RECVORIGDSTADDR = 74
IPV6_ORIGDSTADDR = IPV6_RECVORIGDSTADDR
IPV6_TRANSPARENT = 75
ANCILLARY_SIZE = socket.CMSG_SPACE(28)  # room for one sockaddr_in6
_LINGER_RST = struct.pack("ii", 1, 0)
_SIN = struct.Struct("=H")  # sa_family, host byte order


def _transparent(sock: socket.socket, family: int) -> None:
    if family == socket.AF_INET6:
        sock.setsockopt(SOL_IPV6, IPV6_TRANSPARENT, 1)
    else:
        sock.setsockopt(SOL_IP, IP_TRANSPARENT, 1)


def family_of(host: str) -> int:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _listener(
    host: str, port: int, kind: int, backlog: int | None = None, origdst: bool = False
) -> socket.socket:
    """A transparent, non-blocking socket of ``kind`` bound to ``host:port``;
    listening with ``backlog`` if given; reporting each datagram's original
    destination if ``origdst``."""
    fam = family_of(host)
    s = socket.socket(fam, kind)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _transparent(s, fam)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if origdst and fam == socket.AF_INET6:
            s.setsockopt(SOL_IPV6, IPV6_RECVORIGDSTADDR, 1)
        elif origdst:
            s.setsockopt(SOL_IP, IP_RECVORIGDSTADDR, 1)
        s.bind((host, port))
        if backlog is not None:
            s.listen(backlog)
        s.setblocking(False)
    except OSError:
        s.close()
        raise
    return s


def tcp_listener(host: str, port: int, backlog: int = 4096) -> socket.socket:
    """A transparent, non-blocking TCP listening socket at ``host:port``."""
    return _listener(host, port, socket.SOCK_STREAM, backlog=backlog)


def udp_listener(host: str, port: int) -> socket.socket:
    """A transparent UDP socket that reports each datagram's original destination."""
    return _listener(host, port, socket.SOCK_DGRAM, origdst=True)


def parse_origdst(ancdata: list[tuple[int, int, bytes]]) -> Endpoint | None:
    """The original destination from ``recvmsg`` control messages, if present."""
    for level, kind, data in ancdata:
        if level == SOL_IP and kind == IP_ORIGDSTADDR and len(data) >= 8:
            (fam,) = _SIN.unpack_from(data)
            if fam == socket.AF_INET:
                port = int.from_bytes(data[2:4], "big")
                return socket.inet_ntop(socket.AF_INET, data[4:8]), port
        if level == SOL_IPV6 and kind == IPV6_ORIGDSTADDR and len(data) >= 24:
            (fam,) = _SIN.unpack_from(data)
            if fam == socket.AF_INET6:
                port = int.from_bytes(data[2:4], "big")
                return socket.inet_ntop(socket.AF_INET6, data[8:24]), port
    return None


def udp_reply_socket(local: Endpoint, client: Endpoint) -> socket.socket:
    """A socket bound to the flow's original destination and connected to the client."""
    fam = family_of(local[0])
    s = socket.socket(fam, socket.SOCK_DGRAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        _transparent(s, fam)
        if fam == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.bind(local)
        s.connect(client)
        s.setblocking(False)
    except OSError:
        s.close()
        raise
    return s


def rst_close(sock: socket.socket) -> None:
    """Close so the peer sees a RST at once (SO_LINGER 0), never a hang."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RST)
    except OSError:
        pass
    sock.close()
