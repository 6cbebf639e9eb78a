"""TUN offloads: split the kernel's super-segments, coalesce what we write back.

Theory of operation.  With ``IFF_VNET_HDR`` and ``TUNSETOFFLOAD`` the kernel
hands the TUN reader TCP (and UDP) super-segments of up to 64 KB, each
behind a 10-byte ``virtio_net_hdr`` (``GSO_TCPV4``, ``gso_size`` = MSS, and
``NEEDS_CSUM``: the checksum field holds only the pseudo-header sum).
WireGuard encrypts IP packets, so ``split`` cuts each super-segment into
MTU-sized packets with their own IP and TCP/UDP headers and *full*
checksums: the peer may be wireguard-go, whose TUN has no offloads and whose
kernel verifies every checksum.

On the way in, ``coalesce`` merges consecutive in-order segments of one TCP
flow (same addresses, ports, ACK, window and options; the last may be
short; PSH closes the run) into one super-segment written with
``GSO_TCPV4``/``GSO_TCPV6`` and ``NEEDS_CSUM``, as the GRO of a NIC would:
the kernel's TCP stack then handles 64 KB at a time.  Anything else is
written alone with ``DATA_VALID`` (the AEAD has already authenticated it, as
the kernel's WireGuard marks decrypted packets ``CHECKSUM_UNNECESSARY``).

Checksums are the Internet ones' complement sum.  The payload sums of all
segments of a super-segment are taken in one vectorised numpy call when
numpy is installed (several times faster), else with ``int.from_bytes``
modulo 0xFFFF; the sum is byte-order independent (RFC 1071), so numpy sums
native 16-bit words and the folded result is byte-swapped.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Sequence
from typing import Final

try:
    import numpy as _np
except ImportError:  # pragma: no cover - numpy is optional
    _np = None  # type: ignore[assignment]

VNET_HDR: Final = struct.Struct("<BBHHHH")
VNET_HDR_LEN: Final = VNET_HDR.size  # 10
F_NEEDS_CSUM: Final = 1
F_DATA_VALID: Final = 2
GSO_NONE: Final = 0
GSO_TCPV4: Final = 1
GSO_TCPV6: Final = 4
GSO_UDP_L4: Final = 5
GSO_ECN: Final = 0x80

PROTO_TCP: Final = 6
PROTO_UDP: Final = 17
_TCP_FIN: Final = 0x01
_TCP_SYN: Final = 0x02
_TCP_RST: Final = 0x04
_TCP_PSH: Final = 0x08
_TCP_ACK: Final = 0x10
_TCP_URG: Final = 0x20
_TCP_CWR: Final = 0x80
_NOT_MERGEABLE: Final = _TCP_SYN | _TCP_FIN | _TCP_RST | _TCP_URG
_U16: Final = struct.Struct("!H")
_U32: Final = struct.Struct("!I")
_IP_LEN_ID: Final = struct.Struct("!HH")
# IPv4 + TCP without IP options, the fields coalesce() looks at: version/IHL,
# TOS, flags/fragment (2 bytes), TTL, protocol; TCP seq, ack, data offset,
# flags, window.
_V4_TCP: Final = struct.Struct("!BB4xBBBB14xIIBBH")
_LITTLE: Final = sys.byteorder == "little"
MAX_COALESCED: Final = 65535 - 80  # room for headers in a 64 KB IP packet
DATA_VALID_HDR: Final = VNET_HDR.pack(F_DATA_VALID, GSO_NONE, 0, 0, 0, 0)
Buffer = bytes | bytearray | memoryview


class OffloadError(ValueError):
    """A frame from the TUN that cannot be split (never expected from the kernel)."""


def sum16(data: Buffer) -> int:
    """Ones' complement sum of big-endian 16-bit words, folded (0..0xFFFE)."""
    v = int.from_bytes(data, "big")
    if len(data) & 1:
        v <<= 8
    return v % 0xFFFF


def finish(total: int) -> int:
    """The checksum field for a sum: its complement (0xFFFF stands for zero)."""
    return ~(total % 0xFFFF) & 0xFFFF


def _payload_sums(payload: memoryview, size: int, count: int) -> list[int]:
    """sum16 of each ``size``-byte chunk of ``payload`` (the last may be shorter)."""
    full = len(payload) // size
    if _np is None or size & 1 or full < 2:
        return [sum16(payload[i * size : (i + 1) * size]) for i in range(count)]
    words = _np.frombuffer(payload[: full * size], dtype=_np.uint16)
    sums = words.reshape(full, size // 2).sum(axis=1, dtype=_np.uint64) % 0xFFFF
    out: list[int] = sums.tolist()
    if _LITTLE:
        out = [((s & 0xFF) << 8) | (s >> 8) for s in out]
    if count > full:
        out.append(sum16(payload[full * size :]))
    return out


def _complete_csum(pkt: bytearray, start: int, offset: int) -> None:
    # NEEDS_CSUM: the field holds the pseudo-header sum; sum from start to the end.
    field = start + offset
    _U16.pack_into(pkt, field, finish(sum16(memoryview(pkt)[start:])))


def split(frame: Buffer, out: list[bytearray]) -> None:
    """Append the IP packets carried by one TUN read (vnet header first) to ``out``."""
    if len(frame) <= VNET_HDR_LEN:
        raise OffloadError("short frame")
    flags, gso_type, _, gso_size, csum_start, csum_offset = VNET_HDR.unpack_from(frame)
    mv = memoryview(frame)[VNET_HDR_LEN:]
    kind = gso_type & ~GSO_ECN
    if kind == GSO_NONE:
        pkt = bytearray(mv)
        if flags & F_NEEDS_CSUM:
            if csum_start + csum_offset + 2 > len(pkt):
                raise OffloadError("checksum offset out of range")
            _complete_csum(pkt, csum_start, csum_offset)
        out.append(pkt)
        return
    if kind not in (GSO_TCPV4, GSO_TCPV6, GSO_UDP_L4) or gso_size == 0:
        raise OffloadError(f"unsupported gso_type {gso_type}")
    version = mv[0] >> 4
    if version == 4:
        l4 = (mv[0] & 0x0F) * 4
    elif version == 6:
        l4 = 40
    else:
        raise OffloadError("not IP")
    if csum_start != l4:
        raise OffloadError("IPv6 extension headers or IPv4 options in a super-segment")
    if kind == GSO_UDP_L4:
        _split_udp(mv, l4, gso_size, version == 6, out)
    else:
        _split_tcp(mv, l4, gso_size, version == 6, out)


def _split_tcp(mv: memoryview, l4: int, mss: int, v6: bool, out: list[bytearray]) -> None:
    # Checksums are updated arithmetically: the sums of the header words that
    # never change are taken once, the changing fields added per segment.
    thl = (mv[l4 + 12] >> 4) * 4
    hlen = l4 + thl
    hdr = bytearray(mv[:hlen])
    payload = mv[hlen:]
    total = len(payload)
    count = (total + mss - 1) // mss
    seq0 = _U32.unpack_from(hdr, l4 + 4)[0]
    flags0 = hdr[l4 + 13]
    mid_flags = flags0 & ~(_TCP_FIN | _TCP_PSH)
    hdr[l4 + 4 : l4 + 8] = bytes(4)
    hdr[l4 + 13] = 0
    hdr[l4 + 16 : l4 + 18] = b"\0\0"
    if v6:
        tcp_base = sum16(hdr[8:40]) + PROTO_TCP + thl + sum16(hdr[l4:])
        ip_base = ipid0 = 0
    else:
        tcp_base = sum16(hdr[12:20]) + PROTO_TCP + thl + sum16(hdr[l4:])
        ipid0 = _U16.unpack_from(hdr, 4)[0]
        hdr[2:6] = bytes(4)
        hdr[10:12] = b"\0\0"
        ip_base = sum16(hdr[:l4])
    sums = _payload_sums(payload, mss, count)
    last = count - 1
    for i in range(count):
        off = i * mss
        n = mss if i < last else total - off
        seq = (seq0 + off) & 0xFFFFFFFF
        fl = flags0 if i == last else mid_flags
        if i:
            fl &= ~_TCP_CWR
        if v6:
            _U16.pack_into(hdr, 4, thl + n)
        else:
            ipid = (ipid0 + i) & 0xFFFF
            _IP_LEN_ID.pack_into(hdr, 2, hlen + n, ipid)
            _U16.pack_into(hdr, 10, ~((ip_base + hlen + n + ipid) % 0xFFFF) & 0xFFFF)
        _U32.pack_into(hdr, l4 + 4, seq)
        hdr[l4 + 13] = fl
        tsum = tcp_base + (seq >> 16) + (seq & 0xFFFF) + fl + n + sums[i]
        _U16.pack_into(hdr, l4 + 16, ~(tsum % 0xFFFF) & 0xFFFF)
        out.append(hdr + payload[off : off + n])


def _split_udp(mv: memoryview, l4: int, size: int, v6: bool, out: list[bytearray]) -> None:
    hlen = l4 + 8
    hdr = bytearray(mv[:hlen])
    payload = mv[hlen:]
    total = len(payload)
    count = (total + size - 1) // size
    addr_sum = sum16(hdr[8:40]) if v6 else sum16(hdr[12:20])
    ipid0 = 0 if v6 else _U16.unpack_from(hdr, 4)[0]
    sums = _payload_sums(payload, size, count)
    for i in range(count):
        off = i * size
        n = min(size, total - off)
        if v6:
            _U16.pack_into(hdr, 4, 8 + n)
        else:
            _U16.pack_into(hdr, 2, hlen + n)
            _U16.pack_into(hdr, 4, (ipid0 + i) & 0xFFFF)
            hdr[10:12] = b"\0\0"
            _U16.pack_into(hdr, 10, finish(sum16(hdr[:l4])))
        _U16.pack_into(hdr, l4 + 4, 8 + n)
        hdr[l4 + 6 : l4 + 8] = b"\0\0"
        # The field is never 0 for UDP: finish() yields 0xFFFF for a zero sum.
        csum = finish(addr_sum + PROTO_UDP + 8 + n + sum16(hdr[l4:]) + sums[i])
        _U16.pack_into(hdr, l4 + 6, csum)
        out.append(hdr + payload[off : off + n])


# -- receive side: coalescing for the TUN write ---------------------------------
class _Run:
    """Consecutive segments of one TCP flow, to be written as one super-segment."""

    __slots__ = (
        "first", "l4", "hlen", "mss", "next_seq", "parts", "size", "closed", "psh", "ident"
    )

    def __init__(self, first: Buffer, l4: int, hlen: int, seq: int, n: int) -> None:
        self.first = first
        self.l4 = l4
        self.hlen = hlen
        self.mss = n
        self.next_seq = (seq + n) & 0xFFFFFFFF
        self.parts: list[Buffer] = []
        self.size = n
        self.closed = False
        self.psh = False
        self.ident: tuple[int, ...] | None = None  # IPv4: (TOS, frag byte, TTL, ack, window)


def _same_headers(a: Buffer, b: Buffer, l4: int, hlen: int) -> bool:
    """Whether b may follow a in one super-segment (ACK, window, options, TTL, TOS)."""
    if l4 == 20:
        if a[1] != b[1] or a[8] != b[8] or a[6] != b[6]:
            return False
    elif a[0:4] != b[0:4] or a[7] != b[7]:
        return False
    return a[l4 + 8 : l4 + 12] == b[l4 + 8 : l4 + 12] and a[l4 + 14 : l4 + 16] == b[
        l4 + 14 : l4 + 16
    ] and a[l4 + 20 : hlen] == b[l4 + 20 : hlen]


def coalesce(packets: Sequence[Buffer]) -> list[list[Buffer]]:
    """Group ``packets`` into TUN writes: each a list of buffers for one ``os.writev``.

    The first buffer of each write is the vnet header.  Order within a flow
    is kept; different flows may be reordered relative to each other.
    """
    if len(packets) == 1:
        return [[DATA_VALID_HDR, packets[0]]]  # what a run of one becomes; a ping's path
    writes: list[list[Buffer] | _Run] = []
    open_runs: dict[bytes, _Run] = {}
    unpack_u32 = _U32.unpack_from
    unpack_v4 = _V4_TCP.unpack_from
    for pkt in packets:
        size = len(pkt)
        if size >= 40 and pkt[0] == 0x45:
            # The common case, IPv4 without options, in one struct call.
            _, tos, frag6, frag7, ttl, proto, seq, ack, doff, flags, win = unpack_v4(pkt)
            if proto != PROTO_TCP or frag6 & 0x3F or frag7:
                writes.append([DATA_VALID_HDR, pkt])
                continue
            key = bytes(pkt[12:24])
            hlen = 20 + (doff >> 4) * 4
            n = size - hlen
            if n <= 0 or flags & _NOT_MERGEABLE:
                open_runs.pop(key, None)
                writes.append([DATA_VALID_HDR, pkt])
                continue
            ident = (tos, frag6, ttl, ack, win)
            run = open_runs.get(key)
            if (
                run is not None
                and seq == run.next_seq
                and not run.closed
                and hlen == run.hlen
                and n <= run.mss
                and run.size + n <= MAX_COALESCED - hlen
                and ident == run.ident
                and (hlen == 40 or run.first[40:hlen] == pkt[40:hlen])
            ):
                run.parts.append(memoryview(pkt)[hlen:])
                run.size += n
                run.next_seq = (seq + n) & 0xFFFFFFFF
                if n < run.mss or flags & _TCP_PSH:
                    run.closed = True
                    run.psh = bool(flags & _TCP_PSH)
                continue
            run = open_runs[key] = _Run(pkt, 20, hlen, seq, n)
            run.ident = ident
            if flags & _TCP_PSH:
                run.closed = True
            writes.append(run)
            continue
        b0 = pkt[0] if size >= 40 else 0
        # Plain TCP only: IPv6 without extensions (IPv4 is handled above).
        if b0 >> 4 == 6 and size >= 60 and pkt[6] == PROTO_TCP:
            l4 = 40
            key = bytes(pkt[8:44])
        else:
            writes.append([DATA_VALID_HDR, pkt])
            continue
        hlen = l4 + (pkt[l4 + 12] >> 4) * 4
        n = size - hlen
        flags = pkt[l4 + 13]
        if n <= 0 or flags & _NOT_MERGEABLE:
            open_runs.pop(key, None)
            writes.append([DATA_VALID_HDR, pkt])
            continue
        seq = unpack_u32(pkt, l4 + 4)[0]
        run = open_runs.get(key)
        if (
            run is not None
            and seq == run.next_seq
            and not run.closed
            and hlen == run.hlen
            and n <= run.mss
            and run.size + n <= MAX_COALESCED - hlen
            and _same_headers(run.first, pkt, l4, hlen)
        ):
            run.parts.append(memoryview(pkt)[hlen:])
            run.size += n
            run.next_seq = (seq + n) & 0xFFFFFFFF
            if n < run.mss or flags & _TCP_PSH:
                run.closed = True
                run.psh = bool(flags & _TCP_PSH)
            continue
        run = open_runs[key] = _Run(pkt, l4, hlen, seq, n)
        if flags & _TCP_PSH:
            run.closed = True
        writes.append(run)
    return [w if isinstance(w, list) else _emit(w) for w in writes]


def _emit(run: _Run) -> list[Buffer]:
    if not run.parts:
        return [DATA_VALID_HDR, run.first]
    l4, hlen = run.l4, run.hlen
    hdr = bytearray(memoryview(run.first)[:hlen])
    tcp_len = hlen - l4 + run.size
    if l4 == 20:
        _U16.pack_into(hdr, 2, hlen + run.size)
        hdr[10:12] = b"\0\0"
        _U16.pack_into(hdr, 10, finish(sum16(hdr[:20])))
        pseudo = sum16(hdr[12:20]) + PROTO_TCP + tcp_len
        gso = GSO_TCPV4
    else:
        _U16.pack_into(hdr, 4, tcp_len)
        pseudo = sum16(hdr[8:40]) + PROTO_TCP + tcp_len
        gso = GSO_TCPV6
    if run.psh:
        hdr[l4 + 13] |= _TCP_PSH
    # CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum, not complemented.
    _U16.pack_into(hdr, l4 + 16, pseudo % 0xFFFF)
    vnet = VNET_HDR.pack(F_NEEDS_CSUM, gso, hlen, run.mss, l4, 16)
    return [vnet, hdr, memoryview(run.first)[hlen:], *run.parts]
