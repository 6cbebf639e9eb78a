"""Name resolution through the tunnel, with the configuration's ``DNS`` servers.

dnspython builds and parses the messages; they travel over the tunnel's
own UDP sockets (and TCP when an answer is truncated, RFC 7766), never the
host's resolver: a name that only the far side's DNS knows resolves, and
nothing about it leaks to the local network.  Search domains from the
``DNS`` line apply to names without a dot, as resolv.conf's ``ndots:1``.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

from wgpy.netstack.ip import pack

DNS_PORT = 53
UDP_TRIES = 2  # per server and question


class DatagramSocket(Protocol):
    def settimeout(self, value: float | None) -> None: ...
    def connect(self, address: tuple[str, int]) -> None: ...
    def send(self, data: bytes) -> int: ...
    def recv(self, bufsize: int) -> bytes: ...
    def close(self) -> None: ...


class StreamSocket(Protocol):
    def settimeout(self, value: float | None) -> None: ...
    def sendall(self, data: bytes) -> None: ...
    def recv(self, bufsize: int) -> bytes: ...
    def close(self) -> None: ...


class Transport:
    """What the resolver needs from a tunnel: a UDP socket and a TCP stream."""

    def __init__(self, udp: Callable[[], DatagramSocket],
                 tcp: Callable[[str, int, float], StreamSocket]) -> None:
        self.udp = udp
        self.tcp = tcp


def literal(host: str) -> bytes | None:
    """``host`` packed, when it is an IP address; None for a name."""
    try:
        return pack(host)
    except ValueError:
        return None


def resolve(host: str, servers: Sequence[str], search: Sequence[str], families: Sequence[int],
            transport: Transport, timeout: float) -> list[str]:
    """The addresses of ``host`` (A for AF_INET, AAAA for AF_INET6 in
    ``families``' order), asked of ``servers`` through the tunnel.

    :raises socket.gaierror: no such name, no server, or no answer in time.
    """
    if literal(host) is not None:
        return [host.split("%", 1)[0]]
    if not servers:
        raise socket.gaierror(
            socket.EAI_NONAME,
            f"cannot resolve {host!r}: the tunnel's configuration has no DNS server "
            "(add a DNS line to [Interface], or use an address)")
    names = _candidates(host, search)
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    for qname in names:
        found: list[str] = []
        nxdomain = False
        for family in families:
            rdtype = dns.rdatatype.A if family == socket.AF_INET else dns.rdatatype.AAAA
            try:
                found += _ask(qname, rdtype, servers, transport, deadline)
            except _NoSuchName:
                nxdomain = True
                break
            except (OSError, dns.exception.DNSException) as e:
                last = e
        if found:
            return found
        if nxdomain:
            continue
    if last is not None:
        raise socket.gaierror(socket.EAI_AGAIN,
                              f"cannot resolve {host!r}: no answer from {', '.join(servers)} "
                              f"through the tunnel within {timeout:g} s ({last})")
    raise socket.gaierror(socket.EAI_NONAME, f"cannot resolve {host!r}: no such name "
                          f"(asked {', '.join(servers)} through the tunnel)")


class _NoSuchName(Exception):
    pass


def _candidates(host: str, search: Sequence[str]) -> list[str]:
    if host.endswith("."):
        return [host]
    # resolv.conf's ndots:1: a name with a dot is tried as it is first.
    searched = [f"{host}.{d.rstrip('.')}." for d in search]
    return [host + ".", *searched] if "." in host else [*searched, host + "."]


def _ask(qname: str, rdtype: dns.rdatatype.RdataType, servers: Sequence[str],
         transport: Transport, deadline: float) -> list[str]:
    query = dns.message.make_query(dns.name.from_text(qname), rdtype)
    wire = query.to_wire()
    last: Exception = TimeoutError("no DNS server answered")
    for server in servers:
        for _ in range(UDP_TRIES):
            left = deadline - time.monotonic()
            if left <= 0:
                raise last
            try:
                response = _udp(wire, server, transport, min(left, 2.0))
                if response.flags & dns.flags.TC:
                    response = _tcp(wire, server, transport, deadline - time.monotonic())
            except (OSError, dns.exception.DNSException) as e:
                last = e
                continue
            if not query.is_response(response):
                continue
            rcode = response.rcode()
            if rcode == dns.rcode.NXDOMAIN:
                raise _NoSuchName(qname)
            if rcode != dns.rcode.NOERROR:
                last = OSError(f"{server} answered {dns.rcode.to_text(rcode)}")
                break
            if not isinstance(response, dns.message.QueryMessage):
                continue
            answer = response.resolve_chaining().answer
            if answer is None:
                return []
            return [rd.address for rd in answer if rd.rdtype == rdtype]
    raise last


def _udp(wire: bytes, server: str, transport: Transport, timeout: float) -> dns.message.Message:
    sock = transport.udp()
    try:
        sock.settimeout(timeout)
        sock.connect((server, DNS_PORT))
        sock.send(wire)
        data = sock.recv(65535)
    finally:
        sock.close()
    return dns.message.from_wire(data)


def _tcp(wire: bytes, server: str, transport: Transport, timeout: float) -> dns.message.Message:
    sock = transport.tcp(server, DNS_PORT, timeout)
    try:
        sock.settimeout(timeout)
        sock.sendall(struct.pack("!H", len(wire)) + wire)
        head = _read_exact(sock, 2)
        body = _read_exact(sock, struct.unpack("!H", head)[0])
    finally:
        sock.close()
    return dns.message.from_wire(body)


def _read_exact(sock: StreamSocket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            raise OSError("DNS server closed the TCP connection early")
        out += chunk
    return bytes(out)
