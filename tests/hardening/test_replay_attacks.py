"""Replays at the device level: every captured message, replayed at any time, is rejected.

The unit tests port the kernel's counter.c table against ``ReplayWindow``
alone; here the same kind of table runs through ``Device.decapsulate``, where
the window check happens before decryption and the window moves only after
authentication, and captured handshake messages are replayed as a network
attacker would: at once, later, reordered, and beyond the window.
"""

from __future__ import annotations

import random

import pytest

from wgpy.protocol import DropReason, SendDatagram
from wgpy.protocol import messages as m
from wgpy.protocol.constants import REJECT_AFTER_MESSAGES, REJECT_AFTER_TIME
from wgpy.protocol.replay import WINDOW_SIZE
from wgpy.testing.attacks import snapshot, transport
from wgpy.testing.memnet import (
    A_EP,
    A_IP4,
    B_EP,
    B_IP4,
    MemNet,
    Node,
    established,
    ipv4_packet,
    pair,
    wires,
)


def _replay(net: MemNet, dst: Node, src: Node, data: bytes) -> list[object]:
    return list(net.inject(src.endpoint, dst.endpoint, data))


@pytest.mark.parametrize("when", [0.0, 30.0, 200.0, 1000.0])
def test_replayed_initiation_is_rejected_and_answered_by_nothing(when: float) -> None:
    net, a, b = established()
    init = wires(net, a, m.MESSAGE_INITIATION)[0].data
    net.advance(when)
    before = snapshot(b.device)
    drops = b.device.stats.drops[DropReason.REPLAYED_TIMESTAMP]
    acts = _replay(net, b, a, init)
    assert not [x for x in acts if isinstance(x, SendDatagram)]
    assert b.device.stats.drops[DropReason.REPLAYED_TIMESTAMP] == drops + 1
    assert snapshot(b.device) == before
    # From another source address too (an attacker elsewhere): still no answer,
    # and the peer's endpoint does not move to the attacker.
    acts = list(b.device.decapsulate(init, ("10.66.0.9", 4444), net.now, net.wall))
    assert not [x for x in acts if isinstance(x, SendDatagram)]
    assert b.device.peers[a.public].endpoint == A_EP


def test_replayed_initiation_reordered_with_a_newer_one() -> None:
    """Two initiations captured in order; the older replayed after the newer: rejected."""
    net, a, b = established()
    net.advance(REJECT_AFTER_TIME)  # a rekeys: a second initiation goes out
    net.send(a, ipv4_packet(A_IP4, B_IP4, b"again"))
    net.deliver()
    inits = [w.data for w in wires(net, a, m.MESSAGE_INITIATION)]
    assert len(inits) >= 2
    before = snapshot(b.device)
    for old in inits[:-1]:
        acts = _replay(net, b, a, old)
        assert not [x for x in acts if isinstance(x, SendDatagram)]
    assert snapshot(b.device) == before


@pytest.mark.parametrize("when", [0.0, 30.0, 1000.0])
def test_replayed_response_is_rejected(when: float) -> None:
    net, a, b = established()
    resp = wires(net, b, m.MESSAGE_RESPONSE)[0].data
    net.advance(when)
    before = snapshot(a.device)
    acts = _replay(net, a, b, resp)
    assert not [x for x in acts if isinstance(x, SendDatagram)]
    assert snapshot(a.device) == before


def test_replayed_response_while_a_new_handshake_is_pending() -> None:
    """The old response names the old index, not the pending one: rejected."""
    net, a, b = established()
    resp = wires(net, b, m.MESSAGE_RESPONSE)[0].data
    net.filter = lambda w: False  # a's new initiation is lost
    a.device.peers[b.public].expire_current_keypairs()
    net.send(a, ipv4_packet(A_IP4, B_IP4, b"x"))
    net.deliver()
    net.filter = lambda w: True
    before = snapshot(a.device)
    assert not [x for x in _replay(net, a, b, resp) if isinstance(x, SendDatagram)]
    assert snapshot(a.device) == before
    assert a.device.stats.drops[DropReason.UNKNOWN_INDEX] >= 1


def test_transport_replayed_immediately_and_later_is_rejected() -> None:
    net, a, b = established()
    for i in range(20):
        net.send(a, ipv4_packet(A_IP4, B_IP4, f"p{i}".encode()))
    net.deliver()
    assert len(b.delivered) == 21
    captured = [w.data for w in wires(net, a, m.MESSAGE_TRANSPORT)]
    for when in (0.0, 5.0, 60.0):
        net.advance(when)
        before = len(b.delivered)
        drops = b.device.stats.drops[DropReason.REPLAY]
        for data in captured:
            _replay(net, b, a, data)
        assert len(b.delivered) == before
        assert b.device.stats.drops[DropReason.REPLAY] == drops + len(captured)


def test_transport_reordered_is_accepted_once_each() -> None:
    net, a, b = established()
    net.filter = lambda w: False  # capture only
    for i in range(200):
        net.send(a, ipv4_packet(A_IP4, B_IP4, f"r{i}".encode()))
    net.filter = lambda w: True
    net.in_flight.clear()
    captured = [w.data for w in wires(net, a, m.MESSAGE_TRANSPORT)][-200:]
    order = list(range(200))
    random.Random(3).shuffle(order)
    base = len(b.delivered)
    for i in order:
        _replay(net, b, a, captured[i])
    assert len(b.delivered) == base + 200
    assert sorted(b.delivered[base:]) == sorted(
        ipv4_packet(A_IP4, B_IP4, f"r{i}".encode()) for i in range(200))
    # ... and a second shuffled pass delivers nothing.
    random.Random(4).shuffle(order)
    for i in order:
        _replay(net, b, a, captured[i])
    assert len(b.delivered) == base + 200


def test_transport_beyond_the_window_is_rejected_even_if_never_seen() -> None:
    net, a, b = established()
    kp = a.device.peers[b.public].keypairs.current
    assert kp is not None
    held = transport(kp, 5, ipv4_packet(A_IP4, B_IP4, b"late"))
    base = len(b.delivered)
    _replay(net, b, a, transport(kp, 5 + WINDOW_SIZE + 1, ipv4_packet(A_IP4, B_IP4, b"far")))
    assert len(b.delivered) == base + 1
    _replay(net, b, a, held)  # counter 5 is now more than a window behind
    assert len(b.delivered) == base + 1
    inside = transport(kp, 5 + 2, ipv4_packet(A_IP4, B_IP4, b"edge"))
    _replay(net, b, a, inside)  # exactly a window behind: still inside
    assert len(b.delivered) == base + 2


def test_forged_high_counter_does_not_move_the_window() -> None:
    """A packet with a huge counter and a bad tag must not shift the window
    (the window is updated only after authentication)."""
    net, a, b = established()
    kp = a.device.peers[b.public].keypairs.current
    assert kp is not None
    forged = bytearray(transport(kp, 10_000_000, ipv4_packet(A_IP4, B_IP4, b"forged")))
    forged[-1] ^= 1
    before = snapshot(b.device)
    _replay(net, b, a, bytes(forged))
    assert snapshot(b.device) == before
    base = len(b.delivered)
    _replay(net, b, a, transport(kp, 3, ipv4_packet(A_IP4, B_IP4, b"still fine")))
    assert len(b.delivered) == base + 1


T_LIM = WINDOW_SIZE + 1
R = REJECT_AFTER_MESSAGES
# (counter, accepted) in order, through the whole device: the kernel's
# counter.c sequence, where "accepted" now means "decrypted and delivered".
DEVICE_TABLE: list[tuple[int, bool]] = [
    (0, True), (1, True), (1, False), (9, True), (8, True), (7, True), (7, False),
    (T_LIM, True), (T_LIM - 1, True), (T_LIM - 1, False), (T_LIM - 2, True),
    (2, True), (2, False), (T_LIM + 16, True), (3, False), (T_LIM + 16, False),
    (T_LIM * 4, True), (T_LIM * 4 - (T_LIM - 1), True), (10, False),
    (T_LIM * 4 - T_LIM, False), (T_LIM * 4 - (T_LIM + 1), False),
    (T_LIM * 4 - (T_LIM - 2), True), (T_LIM * 4 + 1 - T_LIM, False), (0, False),
    (R, False), (R - 1, True), (R, False), (R - 1, False), (R - 2, True),
    (R + 1, False), (R + 2, False), (R - 2, False), (R - 3, True), (0, False),
    ((1 << 64) - 1, False),
]


def test_counter_table_through_the_device() -> None:
    # A fresh session whose receiver (b) has seen nothing yet: b initiates so
    # that a is the responder and b's keypair is in use from the start.
    net, a, b = pair(11)
    net.send(b, ipv4_packet(B_IP4, A_IP4, b"hello"))
    net.deliver()
    kp = b.device.peers[a.public].keypairs.current
    a_kp = a.device.peers[b.public].keypairs.current
    assert kp is not None and a_kp is not None
    # Counter 0 was used by b's first packet: start the table on a new session
    # object-equivalent by replaying from a keypair whose window is fresh.
    a_kp.replay.reset()
    results = []
    for i, (counter, expected) in enumerate(DEVICE_TABLE):
        before = len(a.delivered)
        data = transport(kp, counter, ipv4_packet(B_IP4, A_IP4, f"t{i}".encode()))
        net.inject(B_EP, A_EP, data)
        got = len(a.delivered) == before + 1
        results.append((i + 1, counter, expected, got))
    wrong = [r for r in results if r[2] != r[3]]
    assert not wrong, wrong


def test_old_keypair_packets_replayed_after_rotation_are_rejected() -> None:
    net, a, b = established()
    for i in range(5):
        net.send(a, ipv4_packet(A_IP4, B_IP4, f"old{i}".encode()))
    net.deliver()
    old = [w.data for w in wires(net, a, m.MESSAGE_TRANSPORT)]
    # Two rekeys: the first session goes to "previous", then is dropped.
    for _ in range(2):
        net.advance(130)
        net.send(a, ipv4_packet(A_IP4, B_IP4, b"new"))
        net.deliver()
        net.send(b, ipv4_packet(B_IP4, A_IP4, b"new"))
        net.deliver()
    base = len(b.delivered)
    for data in old:
        _replay(net, b, a, data)
    assert len(b.delivered) == base


def test_transport_replayed_after_key_expiry_is_rejected() -> None:
    net, a, b = established()
    net.send(a, ipv4_packet(A_IP4, B_IP4, b"expiring"))
    net.deliver()
    data = wires(net, a, m.MESSAGE_TRANSPORT)[-1].data
    kp = a.device.peers[b.public].keypairs.current
    assert kp is not None
    fresh = transport(kp, 999, ipv4_packet(A_IP4, B_IP4, b"never seen"))
    net.filter = lambda w: False  # no new handshake may rescue the session
    net.advance(REJECT_AFTER_TIME + 1)
    base = len(b.delivered)
    _replay(net, b, a, data)
    _replay(net, b, a, fresh)  # unseen counter, but the key is too old
    assert len(b.delivered) == base


def test_replayed_cookie_reply_is_rejected() -> None:
    """As Linux (cookie.c clears have_sent_mac1): one cookie reply is consumed once;
    a replay of it must not refresh the stored cookie's age."""
    net, a, b = pair(5)
    b.device.force_under_load = True
    net.send(a, ipv4_packet(A_IP4, B_IP4, b"x"))
    net.deliver()
    replies = wires(net, b, m.MESSAGE_COOKIE_REPLY)
    assert len(replies) == 1
    cookies = a.device.peers[b.public].cookies
    first_time = cookies._cookie_time
    net.advance(1.0)
    drops = a.device.stats.drops[DropReason.BAD_COOKIE]
    _replay(net, a, b, replies[0].data)
    assert a.device.stats.drops[DropReason.BAD_COOKIE] == drops + 1
    assert cookies._cookie_time == first_time
