"""ICMP and ICMPv6: echo (ping) and the destination-unreachable errors.

Echo requests to one of the stack's addresses are answered (RFC 1122
3.2.2.6, RFC 4443 4.2); echo replies go to the identifier that asked.
Errors that quote one of our packets (destination unreachable, time
exceeded) become an errno for the connection or endpoint they quote, as a
kernel maps them (Linux ``icmp_err_convert``, ``icmpv6_err_convert``).  We
send one error ourselves: port unreachable, for UDP to a port nobody bound.
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass
from typing import Final

from wgpy.netstack.ip import (
    IPV4_HEADER_LEN,
    IPV6_HEADER_LEN,
    PROTO_ICMP,
    PROTO_ICMPV6,
    Buffer,
    Malformed,
    Path,
)
from wgpy.protocol.ippacket import checksum

ICMP_HEADER: Final = struct.Struct("!BBHHH")  # type, code, checksum, identifier, sequence
ECHO_REQUEST_V4: Final = 8
ECHO_REPLY_V4: Final = 0
ECHO_REQUEST_V6: Final = 128
ECHO_REPLY_V6: Final = 129
UNREACH_V4: Final = 3
TIME_EXCEEDED_V4: Final = 11
UNREACH_V6: Final = 1
TIME_EXCEEDED_V6: Final = 3
PORT_UNREACH_V4: Final = 3
PORT_UNREACH_V6: Final = 4
# How much of the offending packet an error quotes (RFC 1812 4.3.2.3: fits 576
# bytes; RFC 4443 2.4(c): fits the IPv6 minimum MTU).
_QUOTE_V4: Final = 576 - IPV4_HEADER_LEN - 8
_QUOTE_V6: Final = 1280 - IPV6_HEADER_LEN - 8

_V4_UNREACH_ERRNO: Final = {
    0: errno.ENETUNREACH, 1: errno.EHOSTUNREACH, 2: errno.ENOPROTOOPT, 3: errno.ECONNREFUSED,
    5: errno.EOPNOTSUPP, 6: errno.ENETUNREACH, 7: errno.EHOSTDOWN, 9: errno.ENETUNREACH,
    10: errno.EHOSTUNREACH, 11: errno.ENETUNREACH, 12: errno.EHOSTUNREACH,
    13: errno.EHOSTUNREACH,
}
_V6_UNREACH_ERRNO: Final = {
    0: errno.ENETUNREACH, 1: errno.EACCES, 2: errno.EHOSTUNREACH, 3: errno.EHOSTUNREACH,
    4: errno.ECONNREFUSED, 5: errno.EACCES, 6: errno.EACCES,
}


@dataclass(frozen=True, slots=True)
class Echo:
    """An echo request or reply."""

    request: bool
    ident: int
    seq: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class QuotedError:
    """An ICMP error and the packet of ours it quotes (addresses as we sent them)."""

    error: int  # errno
    proto: int
    src: bytes
    dst: bytes
    sport: int
    dport: int


def parse_message(v6: bool, data: memoryview) -> Echo | QuotedError | None:
    """An ICMP (``v6`` False) or ICMPv6 message: an echo, an error quoting a
    packet, or None for anything else.  :raises Malformed: too short."""
    if len(data) < ICMP_HEADER.size:
        raise Malformed("short ICMP header")
    kind, code, _, ident, seq = ICMP_HEADER.unpack_from(data)
    if v6:
        if kind in (ECHO_REQUEST_V6, ECHO_REPLY_V6):
            return Echo(kind == ECHO_REQUEST_V6, ident, seq, bytes(data[8:]))
        if kind == UNREACH_V6:
            return _quoted(_V6_UNREACH_ERRNO.get(code, errno.EHOSTUNREACH), data[8:])
        if kind == TIME_EXCEEDED_V6:
            return _quoted(errno.EHOSTUNREACH, data[8:])
        return None
    if kind in (ECHO_REQUEST_V4, ECHO_REPLY_V4):
        return Echo(kind == ECHO_REQUEST_V4, ident, seq, bytes(data[8:]))
    if kind == UNREACH_V4 and code != 4:  # 4: fragmentation needed (we set DF and fit the MTU)
        return _quoted(_V4_UNREACH_ERRNO.get(code, errno.EHOSTUNREACH), data[8:])
    if kind == TIME_EXCEEDED_V4:
        return _quoted(errno.EHOSTUNREACH, data[8:])
    return None


def _quoted(error: int, quote: memoryview) -> QuotedError | None:
    # The quote is cut short, so its lengths do not hold: parse the header only.
    if not len(quote):
        return None
    v = quote[0] >> 4
    if v == 4 and len(quote) >= IPV4_HEADER_LEN + 4:
        ihl = (quote[0] & 0x0F) * 4
        if len(quote) < ihl + 4:
            return None
        src, dst, proto, ports = bytes(quote[12:16]), bytes(quote[16:20]), quote[9], quote[ihl:]
    elif v == 6 and len(quote) >= IPV6_HEADER_LEN + 4:
        src, dst, proto, ports = (bytes(quote[8:24]), bytes(quote[24:40]), quote[6],
                                  quote[IPV6_HEADER_LEN:])
    else:
        return None
    sport, dport = struct.unpack_from("!HH", ports)
    return QuotedError(error, proto, src, dst, sport, dport)


def build_echo(path: Path, request: bool, ident: int, seq: int, payload: Buffer) -> bytearray:
    """A whole IP packet: an echo request or reply on ``path`` (ICMP or ICMPv6)."""
    if path.v6:
        kind = ECHO_REQUEST_V6 if request else ECHO_REPLY_V6
    else:
        kind = ECHO_REQUEST_V4 if request else ECHO_REPLY_V4
    return _build(path, kind, 0, (ident << 16) | seq, payload)


def build_port_unreachable(path: Path, offending: Buffer) -> bytearray:
    """An ICMP port unreachable on ``path`` (from us to the sender) quoting
    ``offending``, the packet nobody took."""
    if path.v6:
        return _build(path, UNREACH_V6, PORT_UNREACH_V6, 0, memoryview(offending)[:_QUOTE_V6])
    return _build(path, UNREACH_V4, PORT_UNREACH_V4, 0, memoryview(offending)[:_QUOTE_V4])


def _build(path: Path, kind: int, code: int, rest: int, body: Buffer) -> bytearray:
    hlen = path.header_len
    buf = path.packet(8 + len(body))
    struct.pack_into("!BBHI", buf, hlen, kind, code, 0, rest)
    buf[hlen + 8 :] = body
    mv = memoryview(buf)[hlen:]
    # ICMPv6 sums a pseudo-header (RFC 4443 2.3); ICMP only itself (RFC 792).
    value = path.transport_checksum(mv) if path.v6 else checksum(mv)
    struct.pack_into("!H", buf, hlen + 2, value)
    return buf


def proto_for(v6: bool) -> int:
    return PROTO_ICMPV6 if v6 else PROTO_ICMP

