"""Silence: unauthenticated garbage gets no answer and leaves no state behind.

Each case starts from an established session between a and b and throws one
datagram at b, from a's own address and from an attacker's; b must send
nothing, and ``snapshot`` (indices, rate limiter, cookie secret, every peer's
endpoint, counters, handshake, keypairs, replay windows and timers) must be
unchanged.  Then floods of such packets must not grow any table past its bound.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable

import pytest

from wgpy.protocol import Action, Device, SendDatagram
from wgpy.protocol import messages as m
from wgpy.protocol.constants import RATELIMIT_TABLE_MAX
from wgpy.protocol.crypto import clamp, public_key
from wgpy.testing.attacks import (
    junk_initiation,
    open_cookie_reply,
    snapshot,
    transport,
)
from wgpy.testing.memnet import A_IP4, B_IP4, MemNet, Node, established, ipv4_packet, wires

Case = Callable[[MemNet, Node, Node], bytes]


def _captured(net: MemNet, src: Node, t: int) -> bytes:
    return wires(net, src, t)[0].data


def _b_keypair_index(net: MemNet, a: Node, b: Node) -> int:
    kp = b.device.peers[a.public].keypairs.current
    assert kp is not None
    return kp.local_index


def _unknown_static_initiation(net: MemNet, a: Node, b: Node) -> bytes:
    """A complete, valid initiation from a key b does not know."""
    from wgpy.testing.memnet import seeded_rng

    stranger = Device(seeded_rng(99))
    priv = clamp(os.urandom(32))
    stranger.set_private_key(priv)
    p = stranger.add_peer(b.public)
    p.endpoint = b.endpoint
    acts: list[Action] = []
    p.send_keepalive(net.now, net.wall, acts)
    sends = [x for x in acts if isinstance(x, SendDatagram)]
    assert public_key(priv) not in b.device.peers
    return sends[0].data


def _bad_tag(net: MemNet, a: Node, b: Node) -> bytes:
    kp = a.device.peers[b.public].keypairs.current
    assert kp is not None
    data = bytearray(transport(kp, 1000, ipv4_packet(A_IP4, B_IP4, b"tag")))
    data[20] ^= 0x80
    return bytes(data)


def _with_type(data: bytes, t: int) -> bytes:
    return struct.pack("<I", t) + data[4:]


CASES: dict[str, Case] = {
    "empty": lambda net, a, b: b"",
    "one byte": lambda net, a, b: b"\x01",
    "type only": lambda net, a, b: b"\x04\x00\x00\x00",
    "initiation, random mac1": lambda net, a, b: b"\x01\x00\x00\x00" + os.urandom(144),
    "initiation, mac1 for another key": lambda net, a, b: junk_initiation(a.public),
    "initiation, valid mac1, junk body": lambda net, a, b: junk_initiation(b.public),
    "initiation from an unknown static key": _unknown_static_initiation,
    "initiation truncated": lambda net, a, b: _captured(net, a, 1)[:-1],
    "initiation oversized": lambda net, a, b: _captured(net, a, 1) + b"\x00",
    "initiation, reserved byte set": lambda net, a, b: _with_type(
        _captured(net, a, 1), 0x0100 | 1),
    "initiation as type 0": lambda net, a, b: _with_type(_captured(net, a, 1), 0),
    "initiation as type 5": lambda net, a, b: _with_type(_captured(net, a, 1), 5),
    "initiation as type 255": lambda net, a, b: _with_type(_captured(net, a, 1), 255),
    "response, bad mac1": lambda net, a, b: b"\x02\x00\x00\x00" + os.urandom(88),
    "response truncated": lambda net, a, b: _captured(net, b, 2)[:-1],
    "response oversized": lambda net, a, b: _captured(net, b, 2) + b"\x00",
    "response to a keypair index": lambda net, a, b: _valid_mac1_response(
        b, _b_keypair_index(net, a, b)),
    "response to an unknown index": lambda net, a, b: _valid_mac1_response(b, 0x12345678),
    "cookie reply, unknown index": lambda net, a, b: (
        b"\x03\x00\x00\x00" + struct.pack("<I", 0x12345678) + os.urandom(56)),
    "cookie reply, known index, junk": lambda net, a, b: (
        b"\x03\x00\x00\x00" + struct.pack("<I", _b_keypair_index(net, a, b))
        + os.urandom(56)),
    "cookie reply truncated": lambda net, a, b: b"\x03\x00\x00\x00" + os.urandom(59),
    "transport, unknown index": lambda net, a, b: (
        m.TransportHeader.pack(0x12345678, 0) + os.urandom(48)),
    "transport, bad tag": _bad_tag,
    "transport, header only": lambda net, a, b: m.TransportHeader.pack(
        _b_keypair_index(net, a, b), 7),
    "transport, one byte short": lambda net, a, b: m.TransportHeader.pack(
        _b_keypair_index(net, a, b), 7) + os.urandom(15),
    "transport, 64 KiB junk": lambda net, a, b: m.TransportHeader.pack(
        _b_keypair_index(net, a, b), 9) + os.urandom(65_000),
    "transport, counter 2^64-1": lambda net, a, b: m.TransportHeader.pack(
        _b_keypair_index(net, a, b), (1 << 64) - 1) + os.urandom(32),
}


def _valid_mac1_response(b: Node, receiver: int) -> bytes:
    from wgpy.testing.attacks import with_macs

    body = struct.pack("<III", m.MESSAGE_RESPONSE, 0x1111, receiver) + os.urandom(48)
    return with_macs(body + bytes(32), b.public)


SOURCES = {"from the peer's address": None, "from an attacker": ("10.66.0.9", 4444),
           "from an IPv6 attacker": ("fd00:66::9", 4444)}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("source", list(SOURCES))
def test_garbage_gets_no_answer_and_leaves_no_state(case: str, source: str) -> None:
    net, a, b = established()
    data = CASES[case](net, a, b)
    src = SOURCES[source] or a.endpoint
    before = snapshot(b.device)
    acts = b.device.decapsulate(data, src, net.now, net.wall)
    assert not [x for x in acts if isinstance(x, SendDatagram)], case
    assert snapshot(b.device) == before, case
    # The session is unharmed.
    net.send(a, ipv4_packet(A_IP4, B_IP4, b"after"))
    net.deliver()
    assert b.delivered[-1] == ipv4_packet(A_IP4, B_IP4, b"after")


def test_junk_flood_from_many_sources_grows_nothing() -> None:
    """20,000 valid-mac1 initiations from 20,000 sources, below and above the load
    threshold: no index, no rate-limiter entry, no peer state."""
    net, a, b = established()
    dev = b.device
    before = snapshot(dev)
    for i in range(20_000):
        src = (f"10.{64 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}", 1024 + i % 60000)
        dev.decapsulate(junk_initiation(b.public), src, net.now + i * 1e-4, net.wall)
    after = snapshot(dev)
    assert after["indices"] == before["indices"]
    assert after["limiter"] == 0
    for key in dev.peers:
        assert after[key.hex()] == before[key.hex()]


def test_rate_limiter_table_is_bounded_under_a_cookie_holding_flood() -> None:
    """Even sources that hold valid cookies cannot grow the limiter past its bound."""
    net, a, b = established()
    dev = b.device
    dev.force_under_load = True
    n = RATELIMIT_TABLE_MAX + 2000
    t = net.now
    for i in range(n):
        src = (f"10.{100 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}", 40000)
        first = junk_initiation(b.public)
        reply = [x for x in dev.decapsulate(first, src, t, net.wall)
                 if isinstance(x, SendDatagram)]
        cookie = open_cookie_reply(reply[0].data, b.public, first)
        dev.decapsulate(junk_initiation(b.public, cookie=cookie), src, t, net.wall)
        assert dev.ratelimiter_entries <= RATELIMIT_TABLE_MAX
    assert dev.ratelimiter_entries == RATELIMIT_TABLE_MAX
    # Entries age out: a second later the table empties on the next check.
    dev._limiter.allow(b"\x0a\x00\x00\x01", t + 2.5)
    assert dev.ratelimiter_entries == 1


def test_repeated_valid_handshakes_do_not_grow_the_index_table() -> None:
    net, a, b = established()
    peer_a = a.device.peers[b.public]
    for _ in range(200):
        net.advance(0.05)
        peer_a.expire_current_keypairs()
        net.send(a, ipv4_packet(A_IP4, B_IP4, b"rekey"))
        net.deliver()
        net.advance(6)
    assert b.device.stats.initiations_received >= 150
    assert len(b.device.indices) <= 4, len(b.device.indices)
    assert len(a.device.indices) <= 4, len(a.device.indices)
