"""Just enough of IPv4/IPv6 for a WireGuard device: the version, addresses and
length that routing needs, and the ICMP destination-unreachable error it
answers a packet no peer takes with."""

from __future__ import annotations

import struct
from typing import Final

IPV4_HEADER_MIN: Final = 20
IPV6_HEADER_LEN: Final = 40


def version(packet: bytes | bytearray | memoryview) -> int:
    return packet[0] >> 4 if packet else 0


# -- ICMP destination unreachable ------------------------------------------------
# What the kernel's WireGuard answers a packet no peer takes with (device.c,
# wg_xmit): ICMP host unreachable, ICMPv6 address unreachable.
ICMP_DEST_UNREACH: Final = 3
ICMP_HOST_UNREACH: Final = 1
ICMPV6_DEST_UNREACH: Final = 1
ICMPV6_ADDR_UNREACH: Final = 3
_PROTO_ICMP: Final = 1
_PROTO_ICMPV6: Final = 58
# How much of the offending packet an error quotes: RFC 1812 4.3.2.3 (the
# reply fits 576 bytes) and RFC 4443 2.4 (the reply fits the IPv6 minimum MTU).
_ICMP_MAX: Final = 576
_ICMPV6_MAX: Final = 1280
# ICMP types that are errors themselves: never answered with an error.
_ICMP_ERRORS: Final = frozenset({3, 4, 5, 11, 12})


def checksum(*chunks: bytes | bytearray | memoryview, start: int = 0) -> int:
    """The Internet checksum (RFC 1071) of the chunks laid end to end (every
    chunk but the last of even length: a pseudo-header, then a segment).

    Summed as one big integer: the ones' complement sum of 16-bit words is the
    number modulo 0xFFFF (2**16 = 1 mod 0xFFFF), which ``int.from_bytes`` and
    ``%`` compute in C, not a Python loop per word.  A packet that carries its
    checksum sums to 0 (``checksum(pseudo, segment) == 0`` verifies it).
    ``start`` is a partial sum carried in (e.g. ``int.from_bytes`` of a
    pseudo-header's addresses plus its protocol and length)."""
    total = start
    for chunk in chunks:
        n = int.from_bytes(chunk, "big")
        total += n << 8 if len(chunk) & 1 else n
    folded = total % 0xFFFF
    if folded:
        return 0xFFFF - folded
    # 0 and 0xFFFF are both zero in ones' complement: only all-zero data sums to 0.
    return 0 if total else 0xFFFF


def _answerable_v4(packet: bytes) -> bool:
    ihl = (packet[0] & 0x0F) * 4
    if ihl < IPV4_HEADER_MIN or len(packet) < ihl:
        return False
    if int.from_bytes(packet[6:8], "big") & 0x1FFF:
        return False  # not the first fragment
    src = packet[12:16]
    if src == bytes(4) or src[0] >= 224 or src == b"\xff" * 4:
        return False  # unspecified, multicast or broadcast source
    if packet[16] >= 224:
        return False  # a multicast or broadcast destination gets no error
    return not (packet[9] == _PROTO_ICMP and len(packet) > ihl and packet[ihl] in _ICMP_ERRORS)


def _answerable_v6(packet: bytes) -> bool:
    src = packet[8:24]
    if src == bytes(16) or src[0] == 0xFF or packet[24] == 0xFF:
        return False  # unspecified or multicast source; multicast destination
    # An ICMPv6 error (type < 128) is never answered; extension headers before
    # an ICMPv6 header are not followed (such a packet is answered).
    return not (packet[6] == _PROTO_ICMPV6 and len(packet) > IPV6_HEADER_LEN
                and packet[IPV6_HEADER_LEN] < 128)


def unreachable(packet: bytes) -> bytes | None:
    """The ICMP (IPv4) or ICMPv6 destination-unreachable packet answering
    ``packet``, to be written to the TUN; None when the rules of RFC 1122
    3.2.2 and RFC 4443 2.4(e) forbid an error (it answers an error, a
    non-first fragment, a multicast or unspecified address) or ``packet`` is
    not IP.

    It comes from the unreachable address itself, not from one of the
    interface's: the kernel takes a packet arriving on an interface from one
    of its own addresses for a martian and drops it (``accept_local`` is off),
    where the kernel's WireGuard hands its error to the stack directly."""
    v = version(packet)
    if v == 4 and len(packet) >= IPV4_HEADER_MIN:
        if not _answerable_v4(packet):
            return None
        source = packet[16:20]
        quoted = packet[: _ICMP_MAX - IPV4_HEADER_MIN - 8]
        icmp = bytearray(struct.pack("!BBHI", ICMP_DEST_UNREACH, ICMP_HOST_UNREACH, 0, 0))
        icmp += quoted
        struct.pack_into("!H", icmp, 2, checksum(bytes(icmp)))
        header = bytearray(struct.pack(
            "!BBHHHBBH4s4s", 0x45, 0xC0, IPV4_HEADER_MIN + len(icmp), 0, 0, 64, _PROTO_ICMP, 0,
            source, packet[12:16],
        ))
        struct.pack_into("!H", header, 10, checksum(bytes(header)))
        return bytes(header) + bytes(icmp)
    if v == 6 and len(packet) >= IPV6_HEADER_LEN:
        if not _answerable_v6(packet):
            return None
        source = packet[24:40]
        quoted = packet[: _ICMPV6_MAX - IPV6_HEADER_LEN - 8]
        dst = packet[8:24]
        icmp = bytearray(struct.pack("!BBHI", ICMPV6_DEST_UNREACH, ICMPV6_ADDR_UNREACH, 0, 0))
        icmp += quoted
        pseudo = source + dst + struct.pack("!I3xB", len(icmp), _PROTO_ICMPV6)
        struct.pack_into("!H", icmp, 2, checksum(pseudo + bytes(icmp)))
        ip6 = struct.pack("!IHBB16s16s", 6 << 28, len(icmp), _PROTO_ICMPV6, 64, source, dst)
        return ip6 + bytes(icmp)
    return None
