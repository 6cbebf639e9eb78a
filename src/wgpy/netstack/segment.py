"""The TCP segment format (RFC 9293 3.1) and the options we speak.

Options: MSS (RFC 9293 3.7.1), window scale (RFC 7323 2), SACK-permitted
and SACK blocks (RFC 2018).  Timestamps are neither sent nor asked for:
without them a peer sends none (RFC 7323 3.2).  Options are parsed only
when the header is longer than 20 bytes, so a plain data segment costs
one ``struct`` unpack.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Final

from wgpy.netstack.ip import Buffer, Malformed, Path

TCP_HEADER: Final = struct.Struct("!HHIIBBHHH")
TCP_HEADER_LEN: Final = TCP_HEADER.size  # 20

FIN: Final = 0x01
SYN: Final = 0x02
RST: Final = 0x04
PSH: Final = 0x08
ACK: Final = 0x10
URG: Final = 0x20

OPT_END: Final = 0
OPT_NOP: Final = 1
OPT_MSS: Final = 2
OPT_WSCALE: Final = 3
OPT_SACK_PERMITTED: Final = 4
OPT_SACK: Final = 5
MAX_WSCALE: Final = 14  # RFC 7323 2.3
MAX_SACK_BLOCKS: Final = 3  # what fits beside nothing else in 40 bytes of options: 4; we send 3
_U16: Final = struct.Struct("!H")
_SACK_EDGE: Final = struct.Struct("!II")


class Segment:
    """A parsed segment.  ``seq``/``ack`` are the 32-bit wire values; the
    connection unwraps them.  The options are None when absent."""

    __slots__ = ("sport", "dport", "seq", "ack", "flags", "window", "payload",
                 "mss", "wscale", "sack_ok", "sack")

    def __init__(self, sport: int, dport: int, seq: int, ack: int, flags: int, window: int,
                 payload: memoryview) -> None:
        self.sport = sport
        self.dport = dport
        self.seq = seq
        self.ack = ack
        self.flags = flags
        self.window = window
        self.payload = payload
        self.mss: int | None = None
        self.wscale: int | None = None
        self.sack_ok = False
        self.sack: list[tuple[int, int]] = []


def parse(data: memoryview) -> Segment:
    """Parse a TCP segment (the IP payload).  :raises Malformed: with the reason."""
    if len(data) < TCP_HEADER_LEN:
        raise Malformed("short TCP header")
    sport, dport, seq, ack, off, flags, window, _, _ = TCP_HEADER.unpack_from(data)
    hlen = (off >> 4) * 4
    if hlen < TCP_HEADER_LEN or hlen > len(data):
        raise Malformed("bad TCP data offset")
    seg = Segment(sport, dport, seq, ack, flags, window, data[hlen:])
    if hlen > TCP_HEADER_LEN:
        _parse_options(seg, data[TCP_HEADER_LEN:hlen])
    return seg


def _parse_options(seg: Segment, opts: memoryview) -> None:
    i = 0
    n = len(opts)
    while i < n:
        kind = opts[i]
        if kind == OPT_END:
            return
        if kind == OPT_NOP:
            i += 1
            continue
        if i + 1 >= n or opts[i + 1] < 2 or i + opts[i + 1] > n:
            raise Malformed("bad TCP option length")
        length = opts[i + 1]
        body = opts[i + 2 : i + length]
        if kind == OPT_MSS and length == 4:
            seg.mss = _U16.unpack(body)[0]
        elif kind == OPT_WSCALE and length == 3:
            seg.wscale = min(body[0], MAX_WSCALE)
        elif kind == OPT_SACK_PERMITTED and length == 2:
            seg.sack_ok = True
        elif kind == OPT_SACK and length >= 10 and (length - 2) % 8 == 0:
            seg.sack = [_SACK_EDGE.unpack_from(body, o) for o in range(0, length - 2, 8)]
        i += length


def syn_options(mss: int, wscale: int | None, sack_ok: bool) -> bytes:
    """The options of a SYN or SYN-ACK (window scale and SACK-permitted only when
    the handshake may use them), padded to a multiple of 4 bytes."""
    out = bytearray(struct.pack("!BBH", OPT_MSS, 4, mss))
    if wscale is not None:
        out += bytes((OPT_NOP, OPT_WSCALE, 3, wscale))
    if sack_ok:
        out += bytes((OPT_NOP, OPT_NOP, OPT_SACK_PERMITTED, 2))
    return bytes(out)


def sack_option(blocks: Sequence[tuple[int, int]]) -> bytes:
    """A SACK option (RFC 2018 3) for up to MAX_SACK_BLOCKS (left, right) edges,
    32-bit wire values, padded with two NOPs."""
    blocks = blocks[:MAX_SACK_BLOCKS]
    out = bytearray((OPT_NOP, OPT_NOP, OPT_SACK, 2 + 8 * len(blocks)))
    for left, right in blocks:
        out += _SACK_EDGE.pack(left, right)
    return bytes(out)


def build(path: Path, sport: int, dport: int, seq: int, ack: int, flags: int, window: int,
          options: bytes = b"", payload: Buffer = b"") -> bytearray:
    """A whole IP packet carrying one TCP segment, checksums filled in.
    ``seq``/``ack`` are 32-bit wire values; ``options`` a multiple of 4 bytes."""
    hlen = TCP_HEADER_LEN + len(options)
    ip_len = path.header_len
    n = len(payload)
    buf = path.packet(hlen + n)
    TCP_HEADER.pack_into(buf, ip_len, sport, dport, seq, ack, (hlen // 4) << 4, flags,
                         window, 0, 0)
    if options:
        buf[ip_len + TCP_HEADER_LEN : ip_len + hlen] = options
    if n:
        buf[ip_len + hlen :] = payload
    mv = memoryview(buf)
    _U16.pack_into(buf, ip_len + 16, path.transport_checksum(mv[ip_len:]))
    return buf
