"""Splitting TUN super-segments and coalescing them back (io/offload.py)."""

from __future__ import annotations

import ipaddress
import os
import struct

import pytest

from wgpy.io import offload
from wgpy.io.offload import VNET_HDR


def _csum_ok(data: bytes | bytearray) -> bool:
    """RFC 1071: the sum over a packet including its checksum field folds to 0xFFFF."""
    if len(data) % 2:
        data += b"\0"
    s: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s == 0xFFFF


def _pseudo(src: bytes | bytearray, dst: bytes | bytearray, proto: int, length: int) -> bytes:
    if len(src) == 4:
        return bytes(src + dst) + struct.pack("!BBH", 0, proto, length)
    return bytes(src + dst) + struct.pack("!IxxxB", length, proto)


def _tcp_super(v6: bool, payload: bytes, mss: int, flags: int = 0x18) -> bytes:
    opts = b"\x01\x01\x08\x0a" + os.urandom(8)  # NOP NOP timestamps
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, 0xFFFFFF00, 7, (20 + len(opts)) << 2,
                      flags, 500, 0, 0) + opts
    if v6:
        src, dst = ipaddress.ip_address("fd00::1").packed, ipaddress.ip_address("fd00::2").packed
        ip = struct.pack("!IHBB", 0x60000000, len(tcp) + len(payload), 6, 64) + src + dst
        gso = offload.GSO_TCPV6
    else:
        src, dst = bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2])
        ip = struct.pack("!BBHHHBBH", 0x45, 0, 20 + len(tcp) + len(payload), 77, 0x4000, 64, 6,
                         0) + src + dst
        gso = offload.GSO_TCPV4
    l4 = len(ip)
    # NEEDS_CSUM: the field holds the pseudo-header sum only, as the kernel leaves it.
    partial = offload.sum16(_pseudo(src, dst, 6, len(tcp) + len(payload))) % 0xFFFF
    tcp = tcp[:16] + struct.pack("!H", partial) + tcp[18:]
    hdr = VNET_HDR.pack(offload.F_NEEDS_CSUM, gso, l4 + len(tcp), mss, l4, 16)
    return hdr + ip + tcp + payload


@pytest.mark.parametrize("v6", [False, True])
@pytest.mark.parametrize("size", [1, 1368, 1369, 5000, 64000])
def test_split_tcp_checksums_and_coalesce_roundtrip(v6: bool, size: int) -> None:
    payload = os.urandom(size)
    frame = _tcp_super(v6, payload, 1368)
    segs: list[bytearray] = []
    offload.split(frame, segs)
    assert len(segs) == (size + 1367) // 1368
    l4 = 40 if v6 else 20
    got = b""
    for i, seg in enumerate(segs):
        seg = bytearray(seg)
        if not v6:
            assert _csum_ok(seg[:20])
            assert struct.unpack_from("!H", seg, 2)[0] == len(seg)
            assert struct.unpack_from("!H", seg, 4)[0] == 77 + i
            src, dst = seg[12:16], seg[16:20]
        else:
            assert struct.unpack_from("!H", seg, 4)[0] == len(seg) - 40
            src, dst = seg[8:24], seg[24:40]
        tcp = seg[l4:]
        assert _csum_ok(_pseudo(src, dst, 6, len(tcp)) + tcp)
        assert struct.unpack_from("!I", tcp, 4)[0] == (0xFFFFFF00 + i * 1368) & 0xFFFFFFFF
        last = i == len(segs) - 1
        assert bool(tcp[13] & 0x08) == last  # PSH only on the last
        got += tcp[32:]
    assert got == payload
    writes = offload.coalesce(segs)
    assert len(writes) == 1
    parts = writes[0]
    flags, gso, hlen, gso_size, cstart, coff = VNET_HDR.unpack(bytes(parts[0]))
    body = b"".join(bytes(p) for p in parts[1:])
    if len(segs) == 1:
        assert flags == offload.F_DATA_VALID and gso == offload.GSO_NONE
        return
    assert flags == offload.F_NEEDS_CSUM
    assert gso == (offload.GSO_TCPV6 if v6 else offload.GSO_TCPV4)
    assert (hlen, gso_size, cstart, coff) == (l4 + 32, 1368, l4, 16)
    assert body[hlen:] == payload
    assert body[l4 + 13] & 0x08
    if not v6:
        assert _csum_ok(body[:20]) and struct.unpack_from("!H", body, 2)[0] == len(body)


def test_coalesce_keeps_flows_and_order_apart() -> None:
    a = _split(_tcp_super(False, os.urandom(4 * 1368), 1368))
    b = _split(_tcp_super(True, os.urandom(3 * 1368), 1368))
    mixed = [a[0], b[0], a[1], b[1], a[2], b[2], a[3]]
    writes = offload.coalesce(mixed)
    assert len(writes) == 2
    # Out of order: each segment that does not follow the open run starts a new one.
    writes = offload.coalesce([a[0], a[2], a[1], a[3]])
    assert len(writes) == 4


def test_split_completes_a_single_partial_checksum() -> None:
    frame = bytearray(_tcp_super(False, os.urandom(100), 1368))
    struct.pack_into("<BB", frame, 0, offload.F_NEEDS_CSUM, offload.GSO_NONE)
    segs = _split(bytes(frame))
    assert len(segs) == 1
    seg = bytes(segs[0])
    assert _csum_ok(_pseudo(seg[12:16], seg[16:20], 6, len(seg) - 20) + seg[20:])


def test_non_tcp_is_written_alone_with_data_valid() -> None:
    udp = bytes([0x45]) + bytes(8) + bytes([17]) + bytes(30)
    writes = offload.coalesce([udp, udp])
    assert [w[0] for w in writes] == [offload.DATA_VALID_HDR] * 2


def _split(frame: bytes) -> list[bytearray]:
    out: list[bytearray] = []
    offload.split(frame, out)
    return out
