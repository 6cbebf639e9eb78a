"""ICMP destination unreachable for packets no peer takes: the builder and the core."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wgpy.protocol import Device, WriteTun, ippacket
from wgpy.protocol.constants import ICMP_ERROR_BURST, ICMP_ERROR_RATE
from wgpy.protocol.errors import DropReason
from wgpy.testing.memnet import A_IP4, A_IP6, B_IP4, B_IP6, ipv4_packet, ipv6_packet, pair

THERE4 = ipaddress.IPv4Address("10.9.9.9").packed
THERE6 = ipaddress.IPv6Address("fd00:9::9").packed


def test_icmpv4_host_unreachable_quotes_the_packet_and_checksums() -> None:
    original = ipv4_packet("10.5.0.1", "10.9.9.9", b"p" * 40)
    reply = ippacket.unreachable(original)
    assert reply is not None
    assert ippacket.checksum(reply[:20]) == 0  # IP header checksum verifies
    assert reply[9] == 1 and reply[12:16] == THERE4 and reply[16:20] == original[12:16]
    assert struct.unpack("!H", reply[2:4])[0] == len(reply)
    icmp = reply[20:]
    assert (icmp[0], icmp[1]) == (ippacket.ICMP_DEST_UNREACH, ippacket.ICMP_HOST_UNREACH)
    assert ippacket.checksum(icmp) == 0
    assert icmp[8:] == original


def test_icmpv6_address_unreachable_checksum_covers_the_pseudo_header() -> None:
    original = ipv6_packet("fd00:5::1", "fd00:9::9", b"q" * 30)
    reply = ippacket.unreachable(original)
    assert reply is not None
    src, dst, body = reply[8:24], reply[24:40], reply[40:]
    assert (src, dst) == (THERE6, original[8:24]) and reply[6] == 58
    assert struct.unpack("!H", reply[4:6])[0] == len(body)
    assert (body[0], body[1]) == (ippacket.ICMPV6_DEST_UNREACH, ippacket.ICMPV6_ADDR_UNREACH)
    pseudo = src + dst + struct.pack("!I3xB", len(body), 58)
    assert ippacket.checksum(pseudo + body) == 0
    assert body[8:] == original


@given(st.binary(min_size=0, max_size=3000))
def test_replies_fit_the_minimum_sizes(payload: bytes) -> None:
    r4 = ippacket.unreachable(ipv4_packet("10.5.0.1", "10.9.9.9", payload))
    r6 = ippacket.unreachable(ipv6_packet("fd00:5::1", "fd00:9::9", payload))
    assert r4 is not None and len(r4) <= 576 and ippacket.checksum(r4[20:]) == 0
    assert r6 is not None and len(r6) <= 1280


@pytest.mark.parametrize("packet", [
    ipv4_packet("10.5.0.1", "10.9.9.9", bytes([3, 1]) + bytes(30), proto=1),  # an ICMP error
    ipv4_packet("0.0.0.0", "10.9.9.9"),
    ipv4_packet("10.5.0.1", "224.0.0.5"),
    ipv6_packet("fd00:5::1", "fd00:9::9", bytes([1, 3]) + bytes(30), nh=58),  # ICMPv6 error
    ipv6_packet("::", "fd00:9::9"),
    ipv6_packet("fd00:5::1", "ff02::1"),
    b"",
    b"\x45" + bytes(10),
])
def test_no_error_about_an_error_or_a_group(packet: bytes) -> None:
    assert ippacket.unreachable(packet) is None


def test_no_error_for_a_later_fragment() -> None:
    frag = bytearray(ipv4_packet("10.5.0.1", "10.9.9.9"))
    frag[6:8] = struct.pack("!H", 185)  # offset 185 * 8
    assert ippacket.unreachable(bytes(frag)) is None


def test_an_icmp_echo_is_answered() -> None:
    echo = ipv4_packet("10.5.0.1", "10.9.9.9", bytes([8, 0]) + bytes(30), proto=1)
    assert ippacket.unreachable(echo) is not None


def _unreachables(dev: Device, packet: bytes, now: float) -> list[bytes]:
    """The ICMP errors the device writes back to the TUN for ``packet``."""
    return [p for a in dev.encapsulate(packet, now, 0.0) if isinstance(a, WriteTun)
            for p in a.packets]


def test_core_answers_no_route_and_no_endpoint() -> None:
    net, a, b = pair(endpoints=False)
    nowhere = ipv4_packet(A_IP4, "10.250.0.1")
    assert _unreachables(a.device, nowhere, net.now) == [ippacket.unreachable(nowhere)]
    assert a.device.stats.drops[DropReason.NO_ROUTE] == 1
    # b's address is routed to b, which has no endpoint yet.
    to_b = ipv6_packet(A_IP6, B_IP6)
    assert _unreachables(a.device, to_b, net.now) == [ippacket.unreachable(to_b)]
    assert a.device.stats.drops[DropReason.NO_ENDPOINT] == 1
    assert a.device.stats.unreachable_sent == 2


def test_core_sends_nothing_back_for_a_routed_packet() -> None:
    net, a, _b = pair()
    assert _unreachables(a.device, ipv4_packet(A_IP4, B_IP4), net.now) == []


def test_unreachables_are_rate_limited_like_the_kernels_icmp() -> None:
    net, a, _b = pair(endpoints=False)
    nowhere = ipv4_packet(A_IP4, "10.250.0.1")
    t = net.now
    sent = sum(len(_unreachables(a.device, nowhere, t)) for _ in range(ICMP_ERROR_BURST * 3))
    assert sent == ICMP_ERROR_BURST
    assert a.device.stats.drops[DropReason.NO_ROUTE] == ICMP_ERROR_BURST * 3
    # A tenth of a second later, a tenth of a second's worth again.
    later = sum(len(_unreachables(a.device, nowhere, t + 0.1)) for _ in range(1000))
    assert later == min(ICMP_ERROR_BURST, int(ICMP_ERROR_RATE * 0.1))
