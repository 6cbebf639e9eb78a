"""IPv4 and IPv6 headers: parse what arrives, build what leaves.

Theory of operation.  The stack sees whole IP packets (what a WireGuard
device decrypts, what it encrypts): no link layer, no ARP or neighbour
discovery.  ``parse`` reads the version, addresses, protocol and payload of
a packet (IPv6 extension headers that carry no data for us are skipped;
fragments are refused: the stack sets DF and sizes segments to the tunnel
MTU, and a fragmented packet through WireGuard is rare enough to drop and
count).  ``Path`` is a (source, destination, protocol) triple with what
every packet on it shares precomputed: the header fields and the
pseudo-header's part of the transport checksum.

Addresses are packed bytes (4 or 16 long) everywhere inside the stack; the
family follows from the length.
"""

from __future__ import annotations

import ipaddress
import struct
from typing import Final

from wgpy.protocol.ippacket import checksum

Buffer = bytes | bytearray | memoryview

PROTO_ICMP: Final = 1
PROTO_TCP: Final = 6
PROTO_UDP: Final = 17
PROTO_ICMPV6: Final = 58

IPV4_HEADER: Final = struct.Struct("!BBHHHBBH4s4s")
IPV6_HEADER: Final = struct.Struct("!IHBB16s16s")
IPV4_HEADER_LEN: Final = IPV4_HEADER.size  # 20: we send no options
IPV6_HEADER_LEN: Final = IPV6_HEADER.size  # 40
DEFAULT_TTL: Final = 64
_DF: Final = 0x4000
# IPv6 extension headers skipped on receive (hop-by-hop, routing, destination
# options); a fragment header (44) makes the packet a fragment: refused.
_IPV6_SKIPPABLE: Final = frozenset({0, 43, 60})
_IPV6_FRAGMENT: Final = 44


class Malformed(ValueError):
    """A packet that is not a well-formed, unfragmented IPv4/IPv6 packet; the
    message is the reason the stack counts it under."""


class Packet:
    """A parsed IP packet: addresses, protocol and a view of the payload."""

    __slots__ = ("src", "dst", "proto", "payload", "ttl")

    def __init__(self, src: bytes, dst: bytes, proto: int, payload: memoryview, ttl: int) -> None:
        self.src = src
        self.dst = dst
        self.proto = proto
        self.payload = payload
        self.ttl = ttl


def parse(packet: Buffer, verify: bool = True) -> Packet:
    """Parse ``packet``; ``verify`` checks the IPv4 header checksum.

    :raises Malformed: with the reason.
    """
    mv = memoryview(packet)
    size = len(mv)
    if not size:
        raise Malformed("empty")
    v = mv[0] >> 4
    if v == 4:
        ihl = (mv[0] & 0x0F) * 4
        if ihl < IPV4_HEADER_LEN or size < ihl:
            raise Malformed("bad IPv4 header length")
        total = (mv[2] << 8) | mv[3]
        if total < ihl or total > size:
            raise Malformed("bad IPv4 total length")
        if (mv[6] & 0x3F) or mv[7]:  # MF or a fragment offset
            raise Malformed("fragment")
        if verify and checksum(mv[:ihl]) != 0:
            raise Malformed("bad IPv4 header checksum")
        return Packet(bytes(mv[12:16]), bytes(mv[16:20]), mv[9], mv[ihl:total], mv[8])
    if v == 6:
        if size < IPV6_HEADER_LEN:
            raise Malformed("short IPv6 header")
        end = IPV6_HEADER_LEN + ((mv[4] << 8) | mv[5])
        if end > size:
            raise Malformed("bad IPv6 payload length")
        nh = mv[6]
        off = IPV6_HEADER_LEN
        while nh in _IPV6_SKIPPABLE:
            if off + 8 > end:
                raise Malformed("truncated IPv6 extension header")
            nh, off = mv[off], off + (mv[off + 1] + 1) * 8
        if nh == _IPV6_FRAGMENT:
            raise Malformed("fragment")
        if off > end:
            raise Malformed("truncated IPv6 extension header")
        return Packet(bytes(mv[8:24]), bytes(mv[24:40]), nh, mv[off:end], mv[7])
    raise Malformed("not IPv4 or IPv6")


class Path:
    """What every packet from ``src`` to ``dst`` of one protocol shares."""

    __slots__ = ("src", "dst", "proto", "v6", "header_len", "_pseudo", "_addrs")

    def __init__(self, src: bytes, dst: bytes, proto: int) -> None:
        if len(src) != len(dst) or len(src) not in (4, 16):
            raise ValueError("source and destination must both be IPv4 or both IPv6")
        self.src = src
        self.dst = dst
        self.proto = proto
        self.v6 = len(src) == 16
        self.header_len = IPV6_HEADER_LEN if self.v6 else IPV4_HEADER_LEN
        # The pseudo-header (RFC 793 3.1, RFC 8200 8.1) without its length: the
        # addresses' words and the protocol, as one partial sum.
        self._pseudo = int.from_bytes(src + dst, "big") + proto
        self._addrs = src + dst

    def packet(self, payload_len: int) -> bytearray:
        """A packet with this path's IP header filled in and ``payload_len`` zero
        bytes of payload after it, for the caller to fill."""
        n = self.header_len
        buf = bytearray(n + payload_len)
        if self.v6:
            IPV6_HEADER.pack_into(buf, 0, 6 << 28, payload_len, self.proto, DEFAULT_TTL,
                                  self.src, self.dst)
        else:
            IPV4_HEADER.pack_into(buf, 0, 0x45, 0, n + payload_len, 0, _DF, DEFAULT_TTL,
                                  self.proto, 0, self.src, self.dst)
            struct.pack_into("!H", buf, 10, checksum(memoryview(buf)[:n]))
        return buf

    def transport_checksum(self, segment: Buffer) -> int:
        """The checksum of a TCP/UDP/ICMPv6 ``segment`` on this path (its checksum
        field zero), pseudo-header included."""
        return checksum(segment, start=self._pseudo + len(segment))

    def reverse(self) -> Path:
        return Path(self.dst, self.src, self.proto)


def verify_transport(src: bytes, dst: bytes, proto: int, segment: Buffer) -> bool:
    """Whether a received TCP/UDP/ICMPv6 ``segment`` carries a correct checksum."""
    return checksum(segment, start=int.from_bytes(src + dst, "big") + proto + len(segment)) == 0


def text(address: bytes) -> str:
    """The usual text form of a packed address."""
    return str(ipaddress.ip_address(address))


def pack(address: str) -> bytes:
    """A text address, packed.  :raises ValueError: not an IP address."""
    return ipaddress.ip_address(address.split("%", 1)[0]).packed
