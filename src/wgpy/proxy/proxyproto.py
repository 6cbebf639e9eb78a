"""HAProxy PROXY protocol v1 and v2 headers (pure encode/decode).

The proxy sends one header to the origin ahead of the client's bytes so the
origin learns the real client address and the address it dialled.  v1 is a
text line (TCP only); v2 is binary and also carries UDP, where wgpy puts a
header in front of every datagram because a datagram has no "start".

Reference: haproxy ``doc/proxy-protocol.txt`` sections 2.1 and 2.2.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from wgpy.control.endpoint import Endpoint

V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
_V2_HEAD = struct.Struct("!12sBBH")  # signature, ver_cmd, fam_proto, length
_V2_IPV4 = struct.Struct("!4s4sHH")
_V2_IPV6 = struct.Struct("!16s16sHH")
V2_CMD_PROXY = 0x21  # version 2, command PROXY
V2_CMD_LOCAL = 0x20
_FAM = {(4, "tcp"): 0x11, (4, "udp"): 0x12, (6, "tcp"): 0x21, (6, "udp"): 0x22}
_FAM_REV = {v: k for k, v in _FAM.items()}
V1_MAX = 107  # the spec's bound on a v1 line, CRLF included


class ProxyHeaderError(ValueError):
    """A malformed header (only raised by the decoder)."""


@dataclass(frozen=True)
class ProxyInfo:
    """What a header says: transport, client (source) and original destination."""

    protocol: str  # "tcp" or "udp"
    src: Endpoint
    dst: Endpoint


def _version(host: str) -> int:
    return ipaddress.ip_address(host).version


def encode_v1(src: Endpoint, dst: Endpoint) -> bytes:
    """``PROXY TCP4 1.2.3.4 10.0.0.1 5555 80\\r\\n`` for a TCP connection."""
    v = _version(src[0])
    if v != _version(dst[0]):
        raise ValueError("PROXY v1: source and destination families differ")
    s, d = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
    return f"PROXY TCP{v} {s} {d} {src[1]} {dst[1]}\r\n".encode("ascii")


def encode_v2(src: Endpoint, dst: Endpoint, protocol: str = "tcp") -> bytes:
    """A binary v2 PROXY header for a TCP stream or a UDP datagram."""
    s, d = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
    if s.version != d.version:
        raise ValueError("PROXY v2: source and destination families differ")
    body = (_V2_IPV4 if s.version == 4 else _V2_IPV6).pack(s.packed, d.packed, src[1], dst[1])
    fam = _FAM[(s.version, protocol)]
    return _V2_HEAD.pack(V2_SIGNATURE, V2_CMD_PROXY, fam, len(body)) + body


def encode(version: int, src: Endpoint, dst: Endpoint, protocol: str) -> bytes:
    """Header for ``version`` (1 or 2), or ``b""`` when ``version`` is 0."""
    if version == 0:
        return b""
    if version == 1:
        if protocol != "tcp":
            raise ValueError("PROXY v1 carries TCP only")
        return encode_v1(src, dst)
    return encode_v2(src, dst, protocol)


def decode(data: bytes) -> tuple[ProxyInfo | None, int] | None:
    """Parse a header at the start of ``data``.

    :returns: ``None`` if more bytes are needed, else ``(info, consumed)``;
        ``info`` is ``None`` for a v2 LOCAL command or ``PROXY UNKNOWN``.
    :raises ProxyHeaderError: when ``data`` does not start with a valid header.
    """
    if data[:12] == V2_SIGNATURE[: len(data[:12])] and len(data) < 16:
        return None
    if data.startswith(V2_SIGNATURE):
        return _decode_v2(data)
    if data.startswith(b"PROXY "[: len(data)]) and len(data) < 6:
        return None
    if data.startswith(b"PROXY "):
        return _decode_v1(data)
    raise ProxyHeaderError("no PROXY header")


def _decode_v2(data: bytes) -> tuple[ProxyInfo | None, int] | None:
    _, ver_cmd, fam, length = _V2_HEAD.unpack_from(data)
    if ver_cmd >> 4 != 2:
        raise ProxyHeaderError(f"v2: bad version {ver_cmd >> 4}")
    total = _V2_HEAD.size + length
    if len(data) < total:
        return None
    if ver_cmd == V2_CMD_LOCAL:
        return None, total
    if ver_cmd != V2_CMD_PROXY:
        raise ProxyHeaderError(f"v2: bad command {ver_cmd & 0xF}")
    if fam not in _FAM_REV:
        return None, total  # AF_UNIX/UNSPEC: the receiver must ignore addresses
    version, proto = _FAM_REV[fam]
    st = _V2_IPV4 if version == 4 else _V2_IPV6
    if length < st.size:
        raise ProxyHeaderError("v2: address block too short")
    s, d, sp, dp = st.unpack_from(data, _V2_HEAD.size)
    src = (str(ipaddress.ip_address(s)), sp)
    dst = (str(ipaddress.ip_address(d)), dp)
    return ProxyInfo(proto, src, dst), total


def _decode_v1(data: bytes) -> tuple[ProxyInfo | None, int] | None:
    end = data.find(b"\r\n", 0, V1_MAX)
    if end < 0:
        if len(data) >= V1_MAX:
            raise ProxyHeaderError("v1: no CRLF within 107 bytes")
        return None
    parts = data[:end].decode("ascii", "replace").split(" ")
    if len(parts) >= 2 and parts[1] == "UNKNOWN":
        return None, end + 2
    if len(parts) != 6 or parts[1] not in ("TCP4", "TCP6"):
        raise ProxyHeaderError(f"v1: malformed line {data[:end]!r}")
    try:
        s, d = ipaddress.ip_address(parts[2]), ipaddress.ip_address(parts[3])
        sp, dp = int(parts[4]), int(parts[5])
    except ValueError:
        raise ProxyHeaderError(f"v1: malformed line {data[:end]!r}") from None
    if s.version != int(parts[1][3]) or d.version != s.version:
        raise ProxyHeaderError("v1: address family mismatch")
    if not (0 <= sp <= 65535 and 0 <= dp <= 65535):
        raise ProxyHeaderError("v1: port out of range")
    return ProxyInfo("tcp", (str(s), sp), (str(d), dp)), end + 2
